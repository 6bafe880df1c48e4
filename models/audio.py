"""Speech encoder: any HF speech SSL model (wav2vec2, HuBERT, ...) with frame alignment.

The frozen convolutional feature encoder runs on the raw 16 kHz waveform; its ~50 Hz features are
linearly interpolated to `ratio * frames` steps (ratio 1: one audio step per motion frame, as for
VOCASET at 30 fps; ratio 2: two per frame, as for BIWI at 25 fps), then the transformer (fine-tuned)
contextualises them. Aligning before the transformer keeps its positional convolution and attention
on the motion time grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def load_speech_model(name_or_path: str, config_only: bool = False) -> nn.Module:
    """An HF speech model by hub id or local folder: pretrained weights, or random weights of the
    same architecture when `config_only` (a checkpoint's own weights will be loaded over them)."""
    from transformers import AutoConfig, AutoModel

    if config_only:
        return AutoModel.from_config(AutoConfig.from_pretrained(name_or_path))
    return AutoModel.from_pretrained(name_or_path)


class SpeechEncoder(nn.Module):
    def __init__(self, model: nn.Module, ratio: int):
        super().__init__()
        self.model = model
        self.ratio = ratio
        self.hidden_size = model.config.hidden_size
        for p in model.feature_extractor.parameters():   # the CNN stays frozen, as in the paper
            p.requires_grad = False
        # No SpecAugment: this module calls the CNN, projection and transformer itself, so the
        # masking embedding is never used; dropping it keeps checkpoints independent of that setting.
        model.config.mask_time_prob = 0.0
        model.config.mask_feature_prob = 0.0
        if getattr(model, "masked_spec_embed", None) is not None:
            del model.masked_spec_embed

    def forward(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """audio (B, S) raw 16 kHz -> hidden states (B, ratio*frames, hidden)."""
        audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-7)
        conv = self.model.feature_extractor(audio)                       # (B, C, ~50 Hz)
        conv = F.interpolate(conv, size=self.ratio * frames, mode="linear", align_corners=True)
        projected = self.model.feature_projection(conv.transpose(1, 2))
        if isinstance(projected, tuple):   # wav2vec2 returns (hidden, normed); HuBERT returns hidden
            projected = projected[0]
        return self.model.encoder(projected).last_hidden_state
