"""Which torch device a run uses, and the mixed precision it computes in."""
from __future__ import annotations

import contextlib
import sys

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str | None) -> str:
    """cuda when available (or asked for and present), else cpu."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        print("note: CUDA is not available, running on the CPU", file=sys.stderr)
        return "cpu"
    return requested


def autocast(device: str, amp: str):
    """torch.autocast to `amp` (bf16 | fp16) on the device's type; no change with amp "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])
