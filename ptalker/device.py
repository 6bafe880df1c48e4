"""Which torch device a run uses."""
from __future__ import annotations

import sys

import torch


def pick_device(requested: str | None) -> str:
    """cuda when available (or asked for and present), else cpu."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        print("note: CUDA is not available, running on the CPU", file=sys.stderr)
        return "cpu"
    return requested
