"""Training recipes: the defaults of main.py's --lr, --max_epoch, --amp and --audio_model.

`ptalker` is the public PTalker code's main.py, except for its precision: the public code trains in
fp16 with a loss scaler, and this recipe's `auto` picks bf16 on GPUs that compute it natively
(Ampere and later: as fast, float32's range, so no overflowing steps to skip) and fp16 with the
scaler on older ones; `--amp fp16` restores the public choice. Off CUDA it trains in float32.
`faceformer` is FaceFormer's script (float32). A flag given on the command line always wins.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Recipe:
    lr: float           # Adam learning rate
    max_epoch: int
    amp: str            # auto | bf16 | fp16 | off; mixed precision needs CUDA
    audio_model: str    # HF hub id or local folder of the speech model

    def describe(self) -> str:
        return f"lr {self.lr:g}, {self.max_epoch} epochs, amp {self.amp}, {self.audio_model}"


RECIPES = {
    "ptalker": Recipe(lr=3e-4, max_epoch=800, amp="auto", audio_model="facebook/hubert-large-ls960-ft"),
    "faceformer": Recipe(lr=1e-4, max_epoch=100, amp="off", audio_model="facebook/wav2vec2-base-960h"),
}


def recipe_flags() -> tuple[str, ...]:
    """The flag names (without dashes) whose defaults a recipe supplies."""
    return tuple(f.name for f in fields(Recipe))
