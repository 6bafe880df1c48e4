"""Dataset reading (the seed's module; the code lives in `ptalker.data` and `ptalker.layout`) and a check
of a dataset folder:

    python data_loader.py --check --dataset BIWI     # report what a dataset folder holds
"""
from __future__ import annotations

import argparse
import sys

from ptalker.data import (AudioCache, LengthBatchSampler, Sequence, TalkingFaceDataset, collate, length_batches,
                          load_splits, parse_sentences)
from ptalker.datasets import resolve_dataset
from ptalker.errors import UserError, print_user_error
from ptalker.layout import load_vertices, sentence_of, subject_of

__all__ = ["AudioCache", "LengthBatchSampler", "Sequence", "TalkingFaceDataset", "collate", "length_batches",
           "load_splits", "load_vertices", "parse_sentences", "sentence_of", "subject_of", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect a dataset folder in the standard layout.")
    parser.add_argument("--check", action="store_true", help="report what the dataset holds and what is wrong")
    parser.add_argument("--dataset", default="vocaset", help="vocaset, BIWI, or a dataset folder")
    parser.add_argument("--vertice_dim", type=int, default=None)
    parser.add_argument("--wav_path", default="wav")
    parser.add_argument("--vertices_path", default="vertices_npy")
    parser.add_argument("--template_file", default="templates.pkl")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    from ptalker.dataset_check import check_dataset, format_report

    try:
        preset = resolve_dataset(args.dataset)
        report = check_dataset(preset.folder, vertice_dim=args.vertice_dim or preset.vertice_dim,
                               wav_path=args.wav_path, vertices_path=args.vertices_path,
                               template_file=args.template_file, fps=preset.fps,
                               capture_stride=preset.capture_stride)
    except UserError as exc:
        return print_user_error(exc)
    print(format_report(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
