"""The training step as one module, with its augmentations: identity dropout, audio-style dropout
and self-feeding (the decoder's past partly its own predictions)."""
from __future__ import annotations

import torch
from torch import nn

from models import PTalker

from .batches import batch_losses, teacher_forced


class TrainStep(nn.Module):
    """Forward pass and losses as one module, so that DistributedDataParallel sees every parameter
    the losses use (the top-k contrast's temperature is used outside PTalker.forward)."""

    def __init__(self, model: PTalker, lip_ids: torch.Tensor | None, identity_dropout: float = 0.0,
                 self_feed: float = 0.0, audio_style_dropout: float = 0.0):
        super().__init__()
        self.model, self.identity_dropout, self.self_feed = model, identity_dropout, self_feed
        self.audio_style_dropout = audio_style_dropout
        self.register_buffer("lip_ids", lip_ids, persistent=False)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The loss terms of a collated batch (see ptalker.device.batch_to_device: its subjects and
        lengths may stay on the host, and the drawn conditions are made there too)."""
        condition = fed_back = motion_style_only = None
        subjects, device = batch["subject"], batch["audio"].device
        B = len(subjects)
        if self.training and self.identity_dropout > 0:
            # a dropped one-hot (-1) trains an inference mode without one: half the clips as an unseen
            # speaker (style from speech and past motion), half as the reference-motion mode (style
            # from the captured past motion alone)
            dropped = torch.rand(B) < self.identity_dropout
            condition = subjects.masked_fill(dropped.to(subjects.device), -1)
            motion_style_only = dropped & (torch.rand(B) < 0.5)
        if self.training and self.audio_style_dropout > 0:
            # the speech identifies a seen speaker as well as the one-hot does; decoding some clips
            # from the one-hot without the audio style makes the one-hot carry the style on its own
            kept = ((subjects if condition is None else condition) >= 0).cpu()
            silenced = kept & (torch.rand(B) < self.audio_style_dropout)
            motion_style_only = silenced if motion_style_only is None else motion_style_only | silenced
        if motion_style_only is not None:
            motion_style_only = motion_style_only.to(device, non_blocking=True)
        if self.training and self.self_feed > 0:
            fed_back = self._mix_in_predictions(batch, condition, motion_style_only)
        return batch_losses(self.model, batch, self.lip_ids, condition, fed_back, motion_style_only)

    def may_skip_parameters(self) -> bool:
        """Whether some trainable parameter can go without a gradient in a step, which
        DistributedDataParallel must then look for in every step's graph: the speech model's
        layerdrop skips whole layers at random; without the contrastive terms (weight 0) the clip
        heads, the adversary and the contrast temperature are unused, and without feature alignment
        (the no_feature ablation) the temperature."""
        c = self.model.config
        layerdrop = getattr(self.model.audio.model.config, "layerdrop", 0.0) or 0.0
        return layerdrop > 0 or not c.losses.contrastive or not c.use_feature_alignment

    @torch.no_grad()
    def _mix_in_predictions(self, batch: dict, condition: torch.Tensor | None,
                            motion_style_only: torch.Tensor | None = None) -> torch.Tensor:
        """Captured motion (B, T, V*3) with each frame replaced, with chance `self_feed`, by the
        model's own one-pass prediction of it. Generation feeds back its own frames; training only on
        captured ones lets the decoder lean on a past it will never see (exposure bias) — in
        particular on the speaking style in that past, instead of on the speaker condition.
        A clip trained without its one-hot keeps its captured past: it stands for the reference-motion
        mode, whose style comes from captured motion."""
        captured = batch["vertices"]
        predicted = teacher_forced(self.model, batch, condition, None, motion_style_only).vertices
        swap = torch.rand(captured.shape[:2], device=captured.device) < self.self_feed
        seen = (batch["subject"] if condition is None else condition) >= 0
        swap &= seen.to(captured.device, non_blocking=True)[:, None]
        return torch.where(swap[..., None], predicted, captured)
