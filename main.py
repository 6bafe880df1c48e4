"""Train PTalker on a dataset, keep the checkpoint with the best validation loss, then animate the
test split and score it (LVE / FDD / MVE).

    python main.py --dataset vocaset --vertice_dim 15069 --feature_dim 64 --period 30 \
        --train_subjects "..." --val_subjects "..." --test_subjects "..."

Flags may come from a JSON file, which flags on the command line override (python main.py --help lists all):

    python main.py --config configs/synthtalk.json --max_epoch 10 --model_name synthtalk_short

Data-parallel on several GPUs (or CPU processes, gloo), one process each; rank 0 logs, saves and tests:

    torchrun --nproc_per_node 4 main.py --dataset vocaset ... --batch_size 8 --amp bf16
"""
from __future__ import annotations

import argparse
import os
import sys

# Threads that spin while waiting stall badly when the CPU is shared with other busy processes;
# passive waiting costs nothing measurable on an idle machine. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ptalker.cli import Parser, add_flags, parse_with_config
from ptalker.errors import UserError, print_user_error
from ptalker.options import ModelFlags, RunConfig
from ptalker.recipes import RECIPES, recipe_flags
from ptalker.trainer import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of RunConfig, ModelFlags and TrainConfig (one per field), `--config FILE.json` under the
    command line, and the --recipe's values for what neither gives."""
    p = Parser(usage="%(prog)s [--config FILE.json] [--FLAG VALUE ...]",
               description="PTalker: train, validate and test on a dataset. Flags may also come from "
                           "--config FILE.json; the command line overrides it.")
    add_flags(p, RunConfig, "data and run", unset=recipe_flags())
    add_flags(p, ModelFlags, "model", unset=recipe_flags())
    add_flags(p, TrainConfig, "training", unset=recipe_flags())
    return _apply_recipe(parse_with_config(p, argv))


def _apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the recipe's flags left unset; `args.from_recipe` names the ones filled."""
    recipe = RECIPES[args.recipe]
    args.from_recipe = tuple(name for name in recipe_flags() if getattr(args, name) is None)
    for name in args.from_recipe:
        setattr(args, name, getattr(recipe, name))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from ptalker.experiment import run

        run(args)
    except UserError as exc:
        return print_user_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
