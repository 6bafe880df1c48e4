"""Score a folder of predicted vertex sequences (LVE, FDD, MVE) against a dataset's ground truth.

    python evaluate.py --dataset BIWI --result_dir BIWI/result
    python evaluate.py --dataset vocaset --result_dir VOCASET/result --csv VOCASET/metrics.csv
"""
from __future__ import annotations

import argparse
import sys

from ptalker.datasets import resolve_dataset
from ptalker.errors import UserError, print_user_error
from ptalker.metrics import evaluate_preset, report, write_csv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True,
                        help="vocaset, BIWI, or the path of a dataset folder in the standard layout")
    parser.add_argument("--result_dir", default=None,
                        help="folder of <name>[_condition_<subject>].npy predictions "
                             "(default: <dataset>/result)")
    parser.add_argument("--vertices_path", default="vertices_npy",
                        help="ground-truth folder, relative to the dataset folder unless absolute")
    parser.add_argument("--template_file", default="templates.pkl",
                        help="templates pickle, relative to the dataset folder unless absolute")
    parser.add_argument("--lip_mask", default=None,
                        help="lip region (ids file, or FILE.pkl:region[+region]); default: the dataset's")
    parser.add_argument("--upper_face_mask", default=None,
                        help="upper-face region, same forms as --lip_mask; default: the dataset's")
    parser.add_argument("--csv", default=None, help="also write per-sequence values to this CSV file")
    parser.add_argument("--per_sequence", action="store_true", help="print one row per sequence too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preset = resolve_dataset(args.dataset)
        result_dir = args.result_dir if args.result_dir is not None else preset.folder / "result"
        scores = evaluate_preset(preset, result_dir, vertices_dir=args.vertices_path,
                                 templates_file=args.template_file, lip_mask=args.lip_mask,
                                 upper_face_mask=args.upper_face_mask)
        print(report(scores, preset.name, per_sequence=args.per_sequence))
        if args.csv:
            write_csv(scores, args.csv)
    except UserError as exc:
        return print_user_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
