"""The per-epoch CSV log of a training run."""
from __future__ import annotations

import csv
from pathlib import Path

from .fileio import atomic_path


class EpochLog:
    """`<model_name>_log.csv`: one row per epoch (epoch, optimiser steps, each loss term, val, lr,
    seconds). A resumed run keeps the rows of the epochs it continues from."""

    def __init__(self, path: Path, keep_until_epoch: int):
        self.path = path
        rows = []
        if keep_until_epoch and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until_epoch]
        self.fields = list(rows[0]) if rows else None
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            if self.fields:
                writer = csv.DictWriter(f, self.fields)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: dict) -> None:
        new = self.fields is None
        self.fields = self.fields or list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)
