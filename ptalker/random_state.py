"""Capture and restore of every random generator a training run draws from (Python, NumPy, torch's
CPU and CUDA generators), so that a resumed run draws what an uninterrupted one would have."""
from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_state(device: str) -> dict:
    """The generators' states, as tensors and plain values that a checkpoint stores."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = {"python": random.getstate(), "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: str) -> None:
    """Set the generators to a state from capture_rng_state (the CUDA one only on a CUDA device)."""
    random.setstate(state["python"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
