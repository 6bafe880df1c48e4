"""Teacher-forced passes and losses on collated batches, and the one-hot speaker conditions they use."""
from __future__ import annotations

import torch

from models import PTalker
from models.losses import compute_losses
from models.ptalker import PTalkerOutput


def one_hot(subjects: torch.Tensor, n_subjects: int) -> torch.Tensor:
    """Subject indices (B,) -> (B, n_subjects); -1 (not a training subject) -> all zeros."""
    out = torch.zeros(len(subjects), n_subjects)
    known = subjects >= 0
    out[known, subjects[known]] = 1.0
    return out


def conditions_of(subject: int, n_subjects: int, every: bool = False) -> list[int]:
    """The training conditions a clip is scored under: its speaker's own if seen in training (or
    all, with `every`), all of them for a speaker unseen in training (subject -1)."""
    return list(range(n_subjects)) if subject < 0 or every else [subject]


def _lengths(batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(audio lengths, frame lengths) of a batch whose clips differ in length, else (None, None)."""
    padded = len(set(batch["frame_lengths"].tolist())) > 1 or len(set(batch["audio_lengths"].tolist())) > 1
    return (batch["audio_lengths"], batch["frame_lengths"]) if padded else (None, None)


def teacher_forced(model: PTalker, batch: dict, condition: torch.Tensor | None, fed_back: torch.Tensor | None,
                   motion_style_only: torch.Tensor | None) -> PTalkerOutput:
    """PTalker.forward on a collated batch (see batch_losses for the arguments)."""
    subjects = batch["subject"] if condition is None else condition
    return model(batch["audio"], batch["vertices"] if fed_back is None else fed_back, batch["template"],
                 one_hot(subjects, model.config.n_subjects).to(batch["audio"].device, non_blocking=True), *_lengths(batch),
                 motion_style_only)


def batch_losses(model: PTalker, batch: dict, lip_ids: torch.Tensor | None,
                 condition: torch.Tensor | None = None, fed_back: torch.Tensor | None = None,
                 motion_style_only: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher-forced losses of one padded batch; `condition` (B,) overrides the one-hot subjects,
    `fed_back` (B, T, V*3) the motion the decoder sees as its past (default: the captured motion),
    and `motion_style_only` (B,) bool marks clips decoded without their audio style."""
    out = teacher_forced(model, batch, condition, fed_back, motion_style_only)
    return compute_losses(out, batch["vertices"], model.config, batch["subject"], lip_ids, _lengths(batch)[1],
                          model.contrast_scale)
