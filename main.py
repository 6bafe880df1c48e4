"""Train PTalker on a dataset, keep the checkpoint with the best validation loss, then animate the
test split and score it (LVE / FDD / MVE).

    python main.py --dataset vocaset --vertice_dim 15069 --feature_dim 64 --period 30 \
        --train_subjects "..." --val_subjects "..." --test_subjects "..."

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

from models.config import ABLATIONS
from ptalker.errors import UserError, print_user_error
from ptalker.recipes import RECIPES, recipe_flags


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _fraction(one_allowed: bool):
    """A float in [0, 1], or in [0, 1) without `one_allowed`."""
    def parse(text: str) -> float:
        value = float(text)
        if not (0.0 <= value <= 1.0 if one_allowed else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"must be in [0, 1{']' if one_allowed else ')'}, got {value}")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="PTalker: train, validate and test on a dataset.")
    # flags of the original script, same names and meaning
    p.add_argument("--dataset", default="vocaset", help="vocaset, BIWI, or a dataset folder in the standard layout")
    p.add_argument("--vertice_dim", type=int, default=None, help="vertices*3 (VOCASET 15069, BIWI 70110)")
    p.add_argument("--feature_dim", type=int, default=None, help="model width F (VOCASET 64, BIWI 128)")
    p.add_argument("--period", type=int, default=None, help="period of the positional encoding/bias (fps)")
    p.add_argument("--fps", type=int, default=None, help="motion frame rate (VOCASET 30, BIWI 25)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the recipe's)")
    p.add_argument("--max_epoch", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--gradient_accumulation_steps", type=_at_least(1), default=1,
                   help="batches whose gradients are averaged into one optimiser step")
    p.add_argument("--wav_path", default="wav", help="speech folder, relative to the dataset folder")
    p.add_argument("--vertices_path", default="vertices_npy", help="motion folder, relative to the dataset folder")
    p.add_argument("--template_file", default="templates.pkl", help="templates pickle, relative to the dataset")
    p.add_argument("--save_path", default="save", help="checkpoint folder, relative to the dataset folder")
    p.add_argument("--result_path", default="result", help="prediction folder, relative to the dataset folder")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--train_subjects", default=None, help="space-separated training subjects")
    p.add_argument("--val_subjects", default=None, help="space-separated validation subjects")
    p.add_argument("--test_subjects", default=None, help="space-separated test subjects")
    # additions
    p.add_argument("--recipe", choices=tuple(RECIPES), default="ptalker",
                   help="defaults of --lr, --max_epoch, --amp and --audio_model: "
                        + "; ".join(f"{name} = {recipe.describe()}" for name, recipe in RECIPES.items()))
    p.add_argument("--train_sentences", default=None,
                   help="sentence range of the training split, e.g. 1-40 (several: 1-32,41-72)")
    p.add_argument("--val_sentences", default=None, help="sentence range of the validation split, e.g. 21-40")
    p.add_argument("--test_sentences", default=None, help="sentence range of the test split, e.g. 21-40")
    p.add_argument("--model_name", default=None, help="checkpoint name in --save_path (default: the dataset name)")
    p.add_argument("--audio_model", default=None,
                   help="HF speech SSL model (hub id or local folder): wav2vec2, HuBERT, ... (default: the recipe's)")
    p.add_argument("--ablation", nargs="*", default=[], choices=ABLATIONS,
                   help="switch off components: no_style no_spatial no_temporal no_feature; "
                        "faceformer = the FaceFormer-style baseline")
    p.add_argument("--loss_weight", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override loss weights: rec mouth vel contrastive orth_audio infonce_audio "
                        "infonce_motion orth_motion topk kl adv (e.g. contrastive=1e-5)")
    p.add_argument("--batch_size", type=_at_least(1), default=1,
                   help="clips per batch, per process; clips of similar length are batched together")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run from <model_name>_last.pth")
    p.add_argument("--test_only", action="store_true", help="skip training; test the saved best checkpoint")
    p.add_argument("--test_conditions", choices=("own", "all"), default="own",
                   help="seen test speakers: animate with their own condition only, or with every one")
    p.add_argument("--lip_mask", default=None, help="lip region file (ids, or FILE.pkl:region)")
    p.add_argument("--upper_face_mask", default=None, help="upper-face region file, as --lip_mask")
    p.add_argument("--decoder_layers", type=int, default=6)
    p.add_argument("--motion_layers", type=int, default=6, help="transformer layers of each motion encoder")
    p.add_argument("--motion_conv_layers", type=int, default=6)
    p.add_argument("--style_dim", type=int, default=128)
    p.add_argument("--gat_dim", type=int, default=8)
    p.add_argument("--gat_checkpoint", choices=("on", "off"), default="on",
                   help="recompute the spatial GAT in the backward pass (on: its activation memory stays "
                        "bounded by 16 frames; off: faster steps, memory grows with batch x frames x vertices)")
    # training at scale; multi-GPU: torchrun --nproc_per_node N main.py ...
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default=None,
                   help="mixed precision on CUDA (fp16 with loss scaling); ignored on the CPU (default: the recipe's)")
    p.add_argument("--grad_clip", type=float, default=0.0,
                   help="clip the global gradient norm to this value; 0 (default, as the original recipe) is off")
    p.add_argument("--lr_schedule", choices=("constant", "cosine"), default="constant",
                   help="constant, or cosine decay to zero over --max_epoch (after the warm-up)")
    p.add_argument("--warmup_steps", type=_at_least(0), default=0,
                   help="optimiser steps of linear learning-rate warm-up")
    p.add_argument("--identity_dropout", type=_fraction(one_allowed=True), default=0.0,
                   help="probability of training a clip without its speaker one-hot, so the model also "
                        "learns the unseen and reference-motion modes (0, as the original recipe: never)")
    p.add_argument("--self_feed", type=_fraction(one_allowed=True), default=0.0,
                   help="probability that a fed-back past frame is the model's own prediction instead of the "
                        "captured one, as in generation (0, as the original recipe: always captured)")
    p.add_argument("--audio_style_dropout", type=_fraction(one_allowed=True), default=0.0,
                   help="probability that a clip keeping its one-hot trains without the audio style, so the "
                        "one-hot alone must carry the speaker's style (0, as the original recipe: never)")
    p.add_argument("--val_metric", choices=("loss", "lve"), default="loss",
                   help="what picks the best checkpoint: the teacher-forced validation loss, or the lip "
                        "vertex error of generating the validation clips (slower, closer to the test)")
    p.add_argument("--ema", type=_fraction(one_allowed=False), default=0.0,
                   help="decay of an exponential moving average of the weights (e.g. 0.999), which validation, "
                        "the best checkpoint and the test use (0, as the original recipe: no average)")
    p.add_argument("--num_workers", type=_at_least(0), default=0,
                   help="DataLoader processes reading the training clips")
    return _apply_recipe(p.parse_args(argv))


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
