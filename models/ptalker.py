"""PTalker: speech -> per-frame vertex offsets on a template, personalised by style.

Data flow (B batch, T motion frames, r audio steps per frame, F feature_dim, V vertices):

  audio (B, S) ─ SpeechEncoder ─► features (B, rT, H) ─┬─ Linear ─► audio content (B, rT, F) ─► decoder memory
                                                       └─ AudioStyleEncoder ─► audio style (B, T, F)
  previous offsets / motion_scale (B, T, V*3) ─ SpatialEncoder (GAT) ─► motion embedding (B, T, F) (start first)
      ├─ content MotionEncoder ─► motion content (B, T, F)
      └─ style MotionEncoder ─► per-frame style ─ running mean ─► motion style (B, T, F)
  speaker one-hot ─ IdentityStyleEncoder ─► identity style (B, F)
  decoder input = content + identity + audio style + motion style ─► PPE ─► N x [biased causal
  self-attention, aligned cross-attention to audio, feed-forward] ─► Linear (zero init) ─► offsets / motion_scale

The network reads and writes offsets in units of the training data's offset scale (config
`motion_scale`), so it computes the same numbers whether the meshes are in metres (VOCASET), unit
area (BIWI) or millimetres, and so do its losses (see losses.py).

Everything after the speech encoder is causal in time, so teacher-forced training, full
recomputation and cached one-frame-at-a-time generation give the same frames. One frame at a time,
the decoder runs `decode_step` on a DecodeState (decoding.py) of buffers updated in place, eagerly or as
a captured / compiled step.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from .audio import SAMPLE_RATE, SpeechEncoder
from .config import PTalkerConfig
from .decoding import DecodeState, fused_cpu_threads, fused_step
from .encoders import AudioStyleEncoder, ClipHeads, ClipSummaries, IdentityStyleEncoder, MotionEncoder, SpatialEncoder
from .layers import PeriodicPositionalEncoding, TransformerBlock, causal_mean, reverse_gradient


@dataclass
class AudioContext:
    """Everything the decoder needs from the speech, computed once per sequence."""
    content: torch.Tensor               # (B, rT, F)
    frame_styles: torch.Tensor | None   # (B, rT, style_dim)
    style: torch.Tensor | None          # (B, T, F) decoder-side audio style per frame
    memory_kv: list                     # per decoder layer: keys, values (B, H, rT, F/H)
    style_max: torch.Tensor | None = None  # (B, T, hidden) running max of the features the style reads


@dataclass
class PTalkerOutput:
    """A teacher-forced pass: the prediction and the features the losses read (style ones None
    without the style encoders)."""
    vertices: torch.Tensor                          # (B, T, V*3) absolute positions
    audio_content: torch.Tensor                     # (B, rT, F)
    motion_content: torch.Tensor                    # (B, T, F)
    audio_frame_styles: torch.Tensor | None = None  # (B, rT, style_dim)
    motion_style: torch.Tensor | None = None        # (B, T, F) per-frame motion style
    speaker_logits: torch.Tensor | None = None      # (B, n_subjects) adversary on the audio content
    clips: ClipSummaries | None = None              # clip-level summaries for InfoNCE


class PTalker(nn.Module):
    def __init__(self, config: PTalkerConfig, speech_model: nn.Module, edges: torch.Tensor | None = None):
        super().__init__()
        # the speech model decides the width; the caller's config is left as it was
        c = self.config = replace(config, audio_hidden=speech_model.config.hidden_size)
        F_, r = c.feature_dim, c.audio_frames_per_frame
        if c.use_spatial and edges is None:
            raise ValueError("the spatial encoder needs the template mesh's edges")
        self.audio = SpeechEncoder(speech_model, r)
        self.audio_content = nn.Linear(c.audio_hidden, F_)
        self.identity = IdentityStyleEncoder(c.n_subjects, F_)
        self.spatial = SpatialEncoder(c.num_vertices, F_, edges if c.use_spatial else None,
                                      c.gat_dim, c.gat_heads, c.gat_chunk,
                                      c.gat_checkpoint)
        self.start = nn.Parameter(torch.randn(1, 1, F_) * 0.02)
        self.content_encoder = MotionEncoder(F_, c.motion_conv_layers, c.motion_layers, c.motion_heads,
                                             c.period, c.dropout, False, c.attention_window) \
            if c.use_motion_encoder else None
        if c.use_style:
            self.audio_style = AudioStyleEncoder(c.audio_hidden, c.style_dim, F_, c.dropout)
            self.style_encoder = MotionEncoder(F_, c.motion_conv_layers, c.motion_layers, c.motion_heads,
                                               c.period, c.dropout, True, c.attention_window)
            self.speaker_classifier = nn.Linear(F_, c.n_subjects)   # adversary on audio content
            self.clip_heads = ClipHeads(F_, c.style_dim, c.infonce_queue)
        # learnable temperature of the top-k contrast, stored as a log scale (init 1/0.07)
        self.contrast_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.ppe = PeriodicPositionalEncoding(F_, c.period, c.dropout)
        self.decoder = nn.ModuleList([
            TransformerBlock(F_, c.decoder_heads, 2 * F_, c.period, c.dropout, c.attention_window, cross_ratio=r,
                             aligned=c.use_alignment_mask) for _ in range(c.decoder_layers)])
        self.head = Float32Linear(F_, c.vertice_dim)
        nn.init.zeros_(self.head.weight)   # start from the template: zero offsets
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ shared pieces

    def encode_audio(self, audio: torch.Tensor, frames: int,
                     audio_lengths: torch.Tensor | None = None,
                     frame_lengths: torch.Tensor | None = None,
                     style_floor: torch.Tensor | None = None) -> AudioContext:
        """audio (B, S) -> AudioContext for `frames` motion frames. With lengths (B,), each clip is
        encoded as if alone (the speech transformer is bidirectional) and zero-padded.
        `style_floor` (B, hidden): the running maximum of earlier speech the audio continues."""
        r = self.config.audio_frames_per_frame
        features = self.audio(audio, frames, None if audio_lengths is None else (audio_lengths, frame_lengths))
        content = self.audio_content(features)
        style = frame_styles = style_max = None
        if self.config.use_style:
            style, frame_styles, style_max = self.audio_style(features, r, style_floor)
        memory_kv = [block.cross_attn.project_memory(content) for block in self.decoder]
        return AudioContext(content, frame_styles, style, memory_kv, style_max)

    def embed_motion(self, offsets: torch.Tensor) -> torch.Tensor:
        """Vertex offsets from the template (B, T, V*3), in mesh units -> motion embedding (B, T, F)."""
        return self.spatial(offsets / self.config.motion_scale)

    def reference_style(self, reference: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """Motion style of a reference clip: reference (B, Tr, V*3) absolute vertices -> (B, 1, F)."""
        return self.style_encoder(self.embed_motion(reference - template.unsqueeze(1))).mean(dim=1, keepdim=True)

    def speech_frames(self, samples: int) -> int | None:
        """The most motion frames `samples` of 16 kHz speech drive (None: any number); see audio.py."""
        return self.audio.speech_frames(samples)

    def frame_count(self, samples: int) -> int:
        """The motion frames generation gives `samples` of 16 kHz speech: `speech_frames`, or the
        speech's duration at the model's fps when any number can be driven."""
        return self.speech_frames(samples) or max(1, round(samples / SAMPLE_RATE * self.config.fps))

    def audio_frames(self, ctx: AudioContext, start: int, stop: int) -> tuple[list, torch.Tensor | None]:
        """What frames start..stop-1 read of the speech: per decoder layer the keys/values they attend
        (aligned: their own audio frames (B, H, r*T, F/H); unaligned: all) and their audio style (B, T, F)."""
        r = self.config.audio_frames_per_frame
        kv = [(k[:, :, r * start: r * stop], v[:, :, r * start: r * stop]) for k, v in ctx.memory_kv] \
            if self.config.use_alignment_mask else ctx.memory_kv
        return kv, None if ctx.style is None else ctx.style[:, start:stop]

    def _decode(self, motion: torch.Tensor, memory_kv: list, audio_style: torch.Tensor | None,
                identity: torch.Tensor | None, t0: int | torch.Tensor = 0, cache: dict | None = None,
                fixed_style: torch.Tensor | None = None):
        """Motion embeddings of frames t0..t0+T-1 (B, T, F) and what they read of the speech
        (`audio_frames`) -> (offsets (B, T, V*3), content, style frames).

        With `cache` (one frame, t0 a 0-dim long tensor), continues from the frames decoded before."""
        # every attention layer of one frame shares its bias: the layers' caches hold one memo
        memo = None if cache is None else cache.setdefault("memo", {})
        caches = cache.setdefault("decoder", [{"memo": memo} for _ in self.decoder]) if cache is not None \
            else [None] * len(self.decoder)
        content = self.content_encoder(motion, t0, None if cache is None else cache.setdefault("content", {"memo": memo})) \
            if self.content_encoder is not None else motion
        x, style_frames = content, None
        if identity is not None:
            x = x + identity.unsqueeze(1)
        if self.config.use_style:
            if fixed_style is not None:   # a reference clip's style replaces the one heard in the speech
                x = x + fixed_style
            else:
                x = x + audio_style
                style_frames = self.style_encoder(motion, t0, None if cache is None else cache.setdefault("style", {"memo": memo}))
                x = x + causal_mean(style_frames, None if cache is None else cache.setdefault("style_mean", {}))
        x = self.ppe(x, t0)
        for block, kv, c in zip(self.decoder, memory_kv, caches):
            x = block(x, t0, c, kv)
        return self.head(x) * self.config.motion_scale, content, style_frames

    def _identity(self, one_hot: torch.Tensor | None) -> torch.Tensor | None:
        return None if one_hot is None else self.identity(one_hot)

    # ------------------------------------------------------------------ training

    def forward(self, audio: torch.Tensor, vertices: torch.Tensor, template: torch.Tensor,
                one_hot: torch.Tensor | None, audio_lengths: torch.Tensor | None = None,
                frame_lengths: torch.Tensor | None = None,
                motion_style_only: torch.Tensor | None = None) -> PTalkerOutput:
        """Teacher-forced pass. audio (B, S), vertices (B, T, V*3), template (B, V*3),
        one_hot (B, n_subjects) or None -> the prediction and the features the losses use.
        `motion_style_only` (B,) bool: clips decoded without the audio style, their style coming from
        the motion alone (as in generation from a reference clip)."""
        B, T, _ = vertices.shape
        ctx = self.encode_audio(audio, T, audio_lengths, frame_lengths)
        if motion_style_only is not None and self.config.use_style:
            ctx.style = ctx.style.masked_fill(motion_style_only[:, None, None], 0.0)
        offsets = vertices - template.unsqueeze(1)
        motion = torch.cat([self.start.expand(B, 1, -1), self.embed_motion(offsets[:, :-1])], dim=1)
        predicted, content, style_frames = self._decode(motion, ctx.memory_kv, ctx.style, self._identity(one_hot))
        out = PTalkerOutput(predicted + template.unsqueeze(1), ctx.content, content)
        if self.config.use_style:
            lengths = [T] * B if frame_lengths is None else frame_lengths.tolist()
            means = lambda x, r: torch.stack([x[i, : r * t].mean(0) for i, t in enumerate(lengths)])  # noqa: E731
            r = self.config.audio_frames_per_frame
            out.audio_frame_styles, out.motion_style = ctx.frame_styles, style_frames
            out.speaker_logits = self.speaker_classifier(reverse_gradient(means(ctx.content, r)))
            out.clips = self.clip_heads(means(ctx.content, r), means(ctx.frame_styles, r),
                                        means(content, 1), means(style_frames, 1))
        return out

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, template: torch.Tensor, one_hot: torch.Tensor | None = None,
                 reference: torch.Tensor | None = None, frames: int | None = None,
                 use_cache: bool = True, audio_lengths: torch.Tensor | None = None,
                 frame_lengths: torch.Tensor | None = None, fused: bool = False) -> torch.Tensor:
        """Autoregressive animation. audio (B, S) at 16 kHz, template (B, V*3) -> vertices (B, T, V*3).

        Modes by which style sources are given: a seen speaker (`one_hot`), an unseen one (None), and
        style from a reference motion clip (`reference` (B, Tr, V*3), replacing the style the model
        would otherwise estimate from the speech and from its own generated motion).
        `use_cache=False` recomputes every encoder and the decoder over the whole prefix at each
        frame: the slow reference path. `fused` runs the one-frame step captured as a CUDA graph
        (CUDA) or compiled (CPU; the first call compiles for tens of seconds), see decoding.py.
        Clips of different lengths go as a zero-padded batch with audio_lengths and frame_lengths
        (B,): each clip's frames are those it gets alone (decoding is causal), the rest is padding."""
        if frame_lengths is not None:
            frames = int(frame_lengths.max())
        elif frames is None:
            frames = self.frame_count(audio.shape[1])
        ctx = self.encode_audio(audio, frames, audio_lengths, frame_lengths)
        fixed = self.reference_style(reference, template) if reference is not None and self.config.use_style else None
        if not use_cache:
            return self._generate_by_recomputing(ctx, template, self._identity(one_hot), fixed, frames)
        state = self.start_decoding(template, one_hot, fixed)
        offsets = template.new_zeros(audio.shape[0], frames, template.shape[1])     # filled frame by frame
        step = self.decode_step
        # eagerly a frame's ops are too small to split across threads, and their synchronisation costs
        # more (measured: 20% slower with two); a fused CPU step's large parts gain from a second
        with at_most_threads(fused_cpu_threads() if fused else 1):
            for t in range(frames):
                self.feed_frame(state, ctx, t)
                offsets[:, t: t + 1] = step(state)
                if t == 0 and fused:   # the caches exist after one eager step
                    step = fused_step(self.decode_step, state)
        return offsets.add_(template.unsqueeze(1))

    def _generate_by_recomputing(self, ctx: AudioContext, template: torch.Tensor, identity: torch.Tensor | None,
                                 fixed: torch.Tensor | None, frames: int) -> torch.Tensor:
        """Re-embed and re-decode the whole prefix at each frame, as the public code does -> (B, T, V*3)."""
        start = self.start.expand(template.shape[0], 1, -1)
        offsets = template.new_zeros(template.shape[0], frames, template.shape[1])
        for t in range(frames):
            prefix = torch.cat([start, self.embed_motion(offsets[:, :t])], dim=1)
            offsets[:, t: t + 1] = self._decode(prefix, *self.audio_frames(ctx, 0, t + 1), identity,
                                                fixed_style=fixed)[0][:, -1:]
        return offsets.add_(template.unsqueeze(1))

    # ------------------------------------------------------------------ one frame at a time

    def start_decoding(self, template: torch.Tensor, one_hot: torch.Tensor | None = None,
                       fixed_style: torch.Tensor | None = None) -> DecodeState:
        """An empty DecodeState for a batch of template (B, V*3) faces; `fixed_style` (B, 1, F) from
        `reference_style`, or None to estimate the style from the generated motion."""
        return DecodeState(t=torch.zeros((), dtype=torch.long, device=template.device),
                           previous=template.new_zeros(template.shape[0], 1, template.shape[1]),
                           identity=self._identity(one_hot), fixed_style=fixed_style)

    def feed_frame(self, state: DecodeState, ctx: AudioContext, index: int, frame: int | None = None) -> None:
        """Load what the next frame reads of the speech: `ctx`'s frame `index` becomes absolute frame
        `frame` (default `index`; streaming passes windows of the speech). Copies into the state's
        own buffers, so a captured step reads them in place."""
        kv, style = self.audio_frames(ctx, index, index + 1)
        state.load(frame if frame is not None else index, kv, style)

    def decode_step(self, state: DecodeState) -> torch.Tensor:
        """The next frame, state.t -> its offsets (B, 1, V*3); state.previous becomes them.
        Branch-free (the start embedding is selected, not branched to), so it can be captured."""
        embedded = self.embed_motion(state.previous)
        motion = torch.where(state.t == 0, self.start.to(embedded.dtype), embedded)
        out = self._decode(motion, state.memory_kv, state.audio_style, state.identity, state.t, state.caches,
                           state.fixed_style)[0]
        state.previous.copy_(out)
        # the next frame computes its biases anew (and a captured step records that); emptied here, not
        # at the start, so every call begins with the same (empty) memo and a compiled step's guards hold
        state.caches["memo"].clear()
        return out

class Float32Linear(nn.Linear):
    """nn.Linear computed in float32 also under autocast. The vertex head writes every vertex's
    offset (up to 70k values a frame); lip motion of a fraction of the offset scale would lose most
    of its digits to bfloat16's 8-bit mantissa, and the reconstruction losses compare exactly these."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) in any float dtype -> (..., out) float32."""
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


@contextmanager
def at_most_threads(count: int):
    """At most `count` CPU threads inside (the count outside is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(count, threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
