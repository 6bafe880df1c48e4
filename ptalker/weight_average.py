"""Exponential moving average of a model's weights (--ema)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers, updated after
    every optimiser step. Validation, the best checkpoint and so the test use the average, which
    smooths the step-to-step noise of the raw weights; training goes on from the raw weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay, self.updates = model, decay, 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        # a short horizon at first, so that the random initial weights fade from the average quickly
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = self.model.state_dict()
        torch._foreach_lerp_(list(self.average.values()), [live[k] for k in self.average], 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its raw weights again after it."""
        raw = {k: v.clone() for k, v in self.model.state_dict().items() if k in self.average}
        self.model.load_state_dict(self.average, strict=False)
        try:
            yield
        finally:
            self.model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        for k, v in state["average"].items():
            self.average[k].copy_(v)
