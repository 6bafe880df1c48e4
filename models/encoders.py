"""The encoders around the decoder: identity style, audio style, spatial (GAT) motion embedding,
and the motion content / motion style encoders."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import CausalConvBlock, GraphAttention, MeshGraph, PeriodicPositionalEncoding, TransformerBlock


class IdentityStyleEncoder(nn.Module):
    """Speaker one-hot -> style (B, F): ReLU(Linear(one-hot) + refined embedding).

    The subject embeddings are refined by one attention layer over the set of all training
    subjects, so each identity is placed relative to the others."""

    def __init__(self, n_subjects: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(n_subjects, dim, bias=False)
        self.embedding = nn.Embedding(n_subjects, dim)
        self.refine = nn.MultiheadAttention(dim, 1, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        """one_hot (B, n_subjects) -> (B, F)."""
        table = self.embedding.weight.unsqueeze(0)                       # (1, S, F)
        refined = self.norm(table + self.refine(table, table, table, need_weights=False)[0])[0]
        return F.relu(self.linear(one_hot) + one_hot @ refined)


class AudioStyleEncoder(nn.Module):
    """Speech features -> a style code per frame (B, T, F) from the running maximum of the features
    so far (the public code max-pools over the clip; a running max keeps a frame's style
    independent of later speech), plus a per-step style projection (B, S, style_dim) used by the
    disentanglement losses."""

    def __init__(self, hidden: int, style_dim: int, dim: int, dropout: float):
        super().__init__()
        self.code = nn.Sequential(nn.Linear(hidden, 256), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(256, style_dim), nn.Tanh())
        self.frames = nn.Linear(hidden, style_dim)
        self.to_decoder = nn.Linear(style_dim, dim)

    def forward(self, features: torch.Tensor, ratio: int, floor: torch.Tensor | None = None):
        """features (B, ratio*T, hidden) -> (decoder style (B, T, F), frame styles (B, ratio*T, style_dim),
        running maximum (B, T, hidden)). `floor` (B, hidden): the maximum of earlier speech, when the
        features continue it (a stream encoded window by window)."""
        pooled = features.cummax(dim=1).values[:, ratio - 1::ratio]    # max up to each frame's last audio step
        if floor is not None:
            pooled = torch.maximum(pooled, floor.unsqueeze(1))
        return self.to_decoder(self.code(pooled)), self.frames(features), pooled


class SpatialEncoder(nn.Module):
    """Per-frame vertex offsets -> motion embedding (B, T, F), through a GAT over the mesh graph.

    The offsets come in the model's motion unit (divided by the data's offset scale), so the
    attention reads the motion itself at the same magnitude on every dataset. Two GAT layers refine
    the offsets with their neighbourhood (residual, last layer zero-initialised so training starts
    from the plain linear embedding), then Linear(V*3 -> F). Frames are processed in chunks;
    checkpointed, a chunk's activations are recomputed in the backward pass, so their memory is
    bounded by the chunk size, not by batch x sequence length."""

    def __init__(self, num_vertices: int, dim: int, edges: torch.Tensor | None, gat_dim: int,
                 gat_heads: int, chunk: int, checkpointed: bool = True):
        super().__init__()
        self.num_vertices, self.chunk, self.checkpointed = num_vertices, chunk, checkpointed
        self.embed = nn.Linear(num_vertices * 3, dim)
        self.gat = None
        if edges is not None:
            self.graph = MeshGraph(edges, num_vertices)
            self.gat = nn.ModuleList([GraphAttention(3, gat_dim, gat_heads),
                                      GraphAttention(gat_dim * gat_heads, 3, 1, concat=False)])
            nn.init.zeros_(self.gat[1].lin.weight)

    def _refine(self, offsets: torch.Tensor) -> torch.Tensor:
        """offsets (N, V, 3) -> refined offsets (N, V, 3)."""
        x = F.elu(self.gat[0](offsets, self.graph))
        return offsets + self.gat[1](x, self.graph)

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """offsets (B, T, V*3) in motion units -> (B, T, F)."""
        if self.gat is not None and offsets.shape[1] > 0:
            B, T, _ = offsets.shape
            parts = []
            for piece in offsets.reshape(B * T, self.num_vertices, 3).split(self.chunk):
                if self.checkpointed and torch.is_grad_enabled():
                    parts.append(checkpoint(self._refine, piece, use_reentrant=False))
                else:
                    parts.append(self._refine(piece))
            offsets = torch.cat(parts).reshape(B, T, -1)
        return self.embed(offsets)


class MotionEncoder(nn.Module):
    """Motion embedding -> per-frame features (B, T, F): causal conv stack -> LayerNorm ->
    Linear(F -> 2F) -> periodic encoding -> causal transformer (2F wide, ff 3F) -> Linear(2F -> F).

    Content and style encoders share this shape; the content one normalises without affine.
    The norm before the widening projection is the public code's feature projection (there an
    InstanceNorm over time for content, which would let later frames change earlier ones)."""

    def __init__(self, dim: int, conv_layers: int, layers: int, heads: int, period: int,
                 dropout: float, affine: bool, window: int):
        super().__init__()
        self.convs = nn.ModuleList([CausalConvBlock(dim, affine) for _ in range(conv_layers)])
        self.norm = nn.LayerNorm(dim, elementwise_affine=affine)
        self.up = nn.Linear(dim, 2 * dim)
        self.ppe = PeriodicPositionalEncoding(2 * dim, period, dropout)
        self.blocks = nn.ModuleList([TransformerBlock(2 * dim, heads, 3 * dim, period, dropout, window)
                                     for _ in range(layers)])
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, t0: int | torch.Tensor = 0, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, F) -> (B, T, F); with `cache`, the one frame t0 after the frames seen before."""
        # the attention blocks share the step's memo of biases; the convolutions need none
        caches = cache.setdefault("layers", [{} for _ in self.convs] + [{"memo": cache.get("memo")} for _ in self.blocks]) \
            if cache is not None else [None] * (len(self.convs) + len(self.blocks))
        for conv, c in zip(self.convs, caches):
            x = conv(x, c)
        x = self.ppe(self.up(self.norm(x)), t0)
        for block, c in zip(self.blocks, caches[len(self.convs):]):
            x = block(x, t0, c)
        return self.down(x)


@dataclass
class ClipSummaries:
    """Clip-level summaries projected to width F for InfoNCE, one row per clip."""
    audio_content: torch.Tensor            # (B, F)
    audio_style: torch.Tensor              # (B, F)
    motion_content: torch.Tensor           # (B, F)
    motion_style: torch.Tensor             # (B, F)
    negatives: torch.Tensor | None = None  # (4, K, F) the queue of earlier clips' summaries, in the order above
    negatives_valid: torch.Tensor | None = None   # (K,) bool: the queue rows filled so far

    def stacked(self) -> torch.Tensor:
        """(4, B, F), in the order of the fields."""
        return torch.stack([self.audio_content, self.audio_style, self.motion_content, self.motion_style])


class ClipHeads(nn.Module):
    """Clip-level content and style summaries projected to one width F for InfoNCE, and a queue of
    recent clips' summaries that gives negatives from other clips when the batch holds one.

    Projecting both sides compares every dimension (audio styles are style_dim wide, content F).
    The queue is a persistent buffer, so a resumed run continues with the same negatives."""

    def __init__(self, dim: int, style_dim: int, queue: int):
        super().__init__()
        self.audio_content = nn.Linear(dim, dim)
        self.audio_style = nn.Linear(style_dim, dim)
        self.motion_content = nn.Linear(dim, dim)
        self.motion_style = nn.Linear(dim, dim)
        self.register_buffer("queue", torch.zeros(4, queue, dim))     # the four summaries of past clips
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))

    def forward(self, audio_content: torch.Tensor, audio_style: torch.Tensor, motion_content: torch.Tensor,
                motion_style: torch.Tensor) -> ClipSummaries:
        """Per-clip means (B, F), (B, style_dim), (B, F), (B, F) -> their projections, with the queue
        before this batch as `negatives` (training only). A training pass with gradients pushes the
        batch into the queue; passes without (self-feeding's prediction of the past) leave it, so a
        clip never meets its own summary among the negatives."""
        out = ClipSummaries(self.audio_content(audio_content), self.audio_style(audio_style),
                            self.motion_content(motion_content), self.motion_style(motion_style))
        if self.training and torch.is_grad_enabled() and self.queue.shape[1]:
            fresh = out.stacked().detach()[:, -self.queue.shape[1]:]                  # (4, B', F)
            # a mask of the filled rows, not a slice of them: reading the count would wait for the GPU
            out.negatives = self.queue.clone()
            out.negatives_valid = torch.arange(self.queue.shape[1], device=self.queue.device) < self.queued
            self.queue.copy_(torch.cat([fresh, self.queue], dim=1)[:, : self.queue.shape[1]])
            self.queued += fresh.shape[1]
        return out
