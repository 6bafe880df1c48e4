"""Speech encoder: any HF speech SSL model (wav2vec2, HuBERT, ...) with frame alignment.

The frozen convolutional feature encoder runs on the raw 16 kHz waveform. With ratio 1 (one audio
step per motion frame, VOCASET at 30 fps) its ~50 Hz features are linearly interpolated to the
frame count; with ratio 2 (two per frame, BIWI at 25 fps) the native 50 Hz steps are kept and cut
to 2T, so a wav longer or shorter than its capture never warps time: the motion is cut to the
speech instead (`speech_frames`). Then the transformer (fine-tuned) contextualises them. Aligning
before the transformer keeps its positional convolution and attention on the motion time grid.

Long speech runs in bounded memory (see SpeechEncoder): the CNN in chunks, the transformer in
overlapping windows. Clips short enough for one chunk and one window take the plain path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000


def load_speech_model(name_or_path: str, config_only: bool = False) -> nn.Module:
    """An HF speech model by hub id or local folder: pretrained weights, or random weights of the
    same architecture when `config_only` (a checkpoint's own weights will be loaded over them)."""
    from transformers import AutoConfig, AutoModel

    if config_only:
        return AutoModel.from_config(AutoConfig.from_pretrained(name_or_path))
    return AutoModel.from_pretrained(name_or_path)


class SpeechEncoder(nn.Module):
    """Raw audio -> aligned, contextualised speech features.

    Memory-bounding settings (plain attributes, change them on an instance):

    conv_chunk_seconds (10): audio longer than this goes through the CNN in chunks of about this
        length, cut on the CNN's stride so each chunk yields exactly its own output steps. The one
        layer that is not local in time, the first layer's GroupNorm of wav2vec2-base-style models
        (statistics over the whole clip), gets its statistics from a first pass over the chunks, so
        chunked features equal unchunked ones up to float rounding. Peak CNN activations then
        stay those of one chunk (about 16 MB per second of audio for 512 channels, unchunked).
    window_seconds (20), context_seconds (4): when the aligned sequence is longer than
        window + 2 * context, the transformer runs on equal spans of at most `window_seconds`,
        each together with up to `context_seconds` of neighbouring steps on either side, and keeps
        only the span. Attention and the positional convolution are exact inside a window; what is
        lost is the influence of speech further away than the context on either side, so outputs
        near span edges differ from one pass over the whole sequence. Shorter sequences take that
        single pass, so training clips and ordinary sentences are unaffected. Cost: at most
        (window + 2 * context) / window times the unwindowed transformer compute, and attention
        memory bounded by the window instead of quadratic in length.
    """

    conv_chunk_seconds: float = 10.0
    window_seconds: float = 20.0
    context_seconds: float = 4.0

    def __init__(self, model: nn.Module, ratio: int):
        super().__init__()
        self.model = model
        self.ratio = ratio
        self.hidden_size = model.config.hidden_size
        # samples one ~50 Hz step reads (400) and between steps (320), for callers that cut audio
        self.field, self.stride, _ = conv_geometry(list(model.config.conv_kernel), list(model.config.conv_stride), 0)
        # The CNN stays frozen, as in the paper. HF's own switch also stops the encoder from marking
        # its output as requiring grad, which would otherwise run the CNN's backward for nothing.
        model.feature_extractor._freeze_parameters()
        # No SpecAugment: this module calls the CNN, projection and transformer itself, so the
        # masking embedding is never used; dropping it keeps checkpoints independent of that setting.
        model.config.mask_time_prob = 0.0
        model.config.mask_feature_prob = 0.0
        if getattr(model, "masked_spec_embed", None) is not None:
            del model.masked_spec_embed

    def forward(self, audio: torch.Tensor, frames: int,
                lengths: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """audio (B, S) raw 16 kHz -> hidden states (B, ratio*frames, hidden).

        `lengths` (samples (B,), frames (B,)) marks zero-padded clips of different lengths: each clip
        is normalised, run through the CNN and aligned on its own samples, then the transformer
        encodes the batch with the padded steps masked out (they come out zero), which gives each
        clip what it would get alone."""
        if lengths is None:
            conv = self._aligned_conv(audio, self.ratio * frames)
            return self.contextualise(self._project(conv), audio.shape[1] / SAMPLE_RATE)
        samples, steps = lengths[0].tolist(), (self.ratio * lengths[1]).tolist()
        clips = [self._aligned_conv(audio[i: i + 1, :s], n)[0] for i, (s, n) in enumerate(zip(samples, steps))]
        conv = audio.new_zeros(len(clips), clips[0].shape[0], self.ratio * frames)
        for i, c in enumerate(clips):
            conv[i, :, : c.shape[1]] = c
        projected = self._project(conv)
        # from the host without waiting: torch.tensor(steps, device=gpu) would wait for the GPU
        valid = torch.arange(conv.shape[2]) < torch.tensor(steps)[:, None]
        valid = valid.to(audio.device, non_blocking=True)
        if all(len(self.windows(n, s / SAMPLE_RATE)) == 1 for s, n in zip(samples, steps)):
            out = self.model.encoder(projected, attention_mask=valid).last_hidden_state
        else:   # a clip long enough for windows: each on its own
            out = torch.stack([F.pad(self.contextualise(projected[i: i + 1, :n], s / SAMPLE_RATE)[0],
                                     (0, 0, 0, conv.shape[2] - n)) for i, (s, n) in enumerate(zip(samples, steps))])
        return out * valid[..., None]

    def native_steps(self, samples: int) -> int:
        """CNN output steps (~50 Hz) of `samples` raw audio samples."""
        config = self.model.config
        return max(0, conv_geometry(list(config.conv_kernel), list(config.conv_stride), samples)[2])

    def speech_frames(self, samples: int) -> int | None:
        """The most motion frames `samples` of speech can drive: with ratio 2 the native steps // 2
        (longer motion is cut to it); None with ratio 1, whose features stretch to any frame count."""
        return self.native_steps(samples) // 2 if self.ratio == 2 else None

    def _aligned_conv(self, audio: torch.Tensor, steps: int) -> torch.Tensor:
        """Raw audio (B, S) -> per-utterance normalised CNN features aligned to (B, C, steps):
        interpolated with ratio 1, the first `steps` native steps with ratio 2."""
        audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-7)
        conv = self.conv_features(audio)
        if self.ratio == 1:
            return F.interpolate(conv, size=steps, mode="linear", align_corners=True)
        if conv.shape[2] < steps:
            raise ValueError(f"the speech gives {conv.shape[2]} feature steps, fewer than the {steps} of "
                             f"{steps // 2} frames: cut the motion to speech_frames() first")
        return conv[:, :, :steps]

    def _project(self, conv: torch.Tensor) -> torch.Tensor:
        """CNN features (B, C, L) -> transformer inputs (B, L, hidden)."""
        projected = self.model.feature_projection(conv.transpose(1, 2))
        if isinstance(projected, tuple):   # wav2vec2 returns (hidden, normed); HuBERT returns hidden
            projected = projected[0]
        return projected

    def conv_features(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised audio (B, S) -> CNN features (B, C, N), chunked beyond `conv_chunk_seconds`."""
        extractor = self.model.feature_extractor
        chunk = int(self.conv_chunk_seconds * SAMPLE_RATE)
        layers = extractor.conv_layers
        # chunking handles a GroupNorm only in the first layer, where HF speech CNNs place it
        if audio.shape[1] <= chunk or any(isinstance(getattr(layer, "layer_norm", None), nn.GroupNorm)
                                          for layer in layers[1:]):
            return extractor(audio)
        field, jump, length = conv_geometry([layer.conv.kernel_size[0] for layer in layers],
                                            [layer.conv.stride[0] for layer in layers], audio.shape[1])
        norm = getattr(layers[0], "layer_norm", None)
        stats = _group_statistics(audio, layers[0].conv, norm, chunk) if isinstance(norm, nn.GroupNorm) else None
        step = max(1, (chunk - field) // jump + 1)                        # output steps per chunk
        parts = []
        for start in range(0, length, step):
            stop = min(length, start + step)
            x = audio[:, None, start * jump: (stop - 1) * jump + field]
            if stats is None:
                x = layers[0](x)
            else:
                x = layers[0].activation(_group_normalise(layers[0].conv(x), norm, *stats))
            for layer in layers[1:]:
                x = layer(x)
            parts.append(x)
        return torch.cat(parts, dim=2)

    def windows(self, steps: int, seconds: float) -> list[tuple[int, int, int, int]]:
        """Transformer windows over `steps` aligned steps spanning `seconds` of audio, as
        (lo, start, stop, hi): steps lo..hi-1 are encoded together and start..stop-1 are kept."""
        rate = steps / seconds
        window = max(1, round(self.window_seconds * rate))
        context = round(self.context_seconds * rate)
        if steps <= window + 2 * context:
            return [(0, 0, steps, steps)]
        n = math.ceil(steps / window)
        bounds = [round(i * steps / n) for i in range(n + 1)]
        return [(max(0, start - context), start, stop, min(steps, stop + context))
                for start, stop in zip(bounds[:-1], bounds[1:])]

    def contextualise(self, projected: torch.Tensor, seconds: float) -> torch.Tensor:
        """Projected features (B, L, hidden) spanning `seconds` of audio -> transformer output (B, L, hidden)."""
        spans = self.windows(projected.shape[1], seconds)
        if len(spans) == 1:
            return self.model.encoder(projected).last_hidden_state
        return torch.cat([self.model.encoder(projected[:, lo:hi]).last_hidden_state[:, start - lo: stop - lo]
                          for lo, start, stop, hi in spans], dim=1)


def conv_geometry(kernels: list[int], strides: list[int], samples: int) -> tuple[int, int, int]:
    """A stack of unpadded 1-D convolutions -> (receptive field and stride of an output step, in
    input samples; number of output steps for `samples` inputs)."""
    field, jump, steps = 1, 1, samples
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * jump
        jump *= stride
        steps = (steps - kernel) // stride + 1
    return field, jump, steps


def _group_statistics(audio: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm,
                      chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/std per (batch, group) of conv(audio) over the whole clip, computed chunk by chunk
    and merged in float64 (pooled variance), so memory stays one chunk's."""
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    length = (audio.shape[1] - kernel) // stride + 1
    step = max(1, (chunk - kernel) // stride + 1)
    counts, means, variances = [], [], []
    for start in range(0, length, step):
        stop = min(length, start + step)
        h = conv(audio[:, None, start * stride: (stop - 1) * stride + kernel])
        var, mean = torch.var_mean(h.reshape(h.shape[0], norm.num_groups, -1), dim=-1, correction=0)
        counts.append(h.shape[1] // norm.num_groups * h.shape[2])
        means.append(mean.double())
        variances.append(var.double())
    total = sum(counts)
    mean = sum(n * m for n, m in zip(counts, means)) / total
    var = sum(n * (v + (m - mean) ** 2) for n, m, v in zip(counts, means, variances)) / total
    return mean.to(audio.dtype), (var + norm.eps).rsqrt().to(audio.dtype)


def _group_normalise(h: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """GroupNorm of h (B, C, T) with given per-(batch, group) statistics, then its affine."""
    B, C, T = h.shape
    h = ((h.view(B, norm.num_groups, -1) - mean[..., None]) * rstd[..., None]).view(B, C, T)
    if norm.affine:
        h = h * norm.weight[:, None] + norm.bias[:, None]
    return h
