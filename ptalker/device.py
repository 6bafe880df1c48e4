"""Which torch device a run uses, and the precision it computes in."""
from __future__ import annotations

import contextlib
import sys

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def pick_device(requested: str | None) -> str:
    """cuda when available (or asked for and present), else cpu."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        print("note: CUDA is not available, running on the CPU", file=sys.stderr)
        return "cpu"
    return requested


def default_amp(capability: tuple[int, int] | None) -> str:
    """What `--amp auto` means on a GPU of compute `capability` (None: no GPU): bf16 from Ampere
    (8.0) on, whose tensor cores run it natively, with fp32's exponent range so no loss scaling;
    fp16 with a gradient scaler on older GPUs (torch would emulate bf16 there, slowly); float32
    without a GPU."""
    if capability is None:
        return "off"
    return "bf16" if capability[0] >= 8 else "fp16"


def resolve_amp(amp: str, device: str) -> str:
    """`amp` with "auto" replaced by the choice for `device` (see default_amp)."""
    if amp != "auto":
        return amp
    cuda = torch.device(device).type == "cuda"
    return default_amp(torch.cuda.get_device_capability(device) if cuda else None)


@contextlib.contextmanager
def tf32_matmuls(device: str, enabled: bool):
    """On CUDA, float32 matmuls and convolutions on TF32 tensor cores (10-bit mantissa, float32
    range: several times faster on Ampere and later; what stays float32 under autocast runs there
    too) when `enabled`, full IEEE float32 otherwise, inside the block; the previous settings after
    it, so that what follows (the test phase) computes as it would in a process of its own. No
    effect on other devices."""
    if torch.device(device).type != "cuda":
        yield
        return
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        for b, precision in zip(backends, saved):
            b.fp32_precision = precision


def autocast(device: str, amp: str):
    """torch.autocast to `amp` (bf16 | fp16) on the device's type; no change with amp "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def batch_to_device(batch: dict, device) -> dict:
    """A collated batch's tensors on `device`, asynchronously from pinned memory, except the
    per-clip lengths and subject indices: the loops, masks and one-hot conditions read those as
    Python numbers, and reading a tensor back from a GPU waits for all the work queued before it."""
    host = ("audio_lengths", "frame_lengths", "subject")
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) and k not in host else v
            for k, v in batch.items()}
