"""The encoders around the decoder: identity style, audio style, spatial (GAT) motion embedding,
and the motion content / motion style encoders."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import CausalConvBlock, GraphAttention, MeshGraph, PeriodicPositionalEncoding, TransformerBlock, causal_mean


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
    """Speech features -> a style code per frame (B, T, F) from the running mean of the features so
    far (causal: a frame's style never depends on later speech), plus a per-step style projection
    (B, S, style_dim) used by the disentanglement losses."""

    def __init__(self, hidden: int, style_dim: int, dim: int, dropout: float):
        super().__init__()
        self.code = nn.Sequential(nn.Linear(hidden, 256), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(256, style_dim), nn.Tanh())
        self.frames = nn.Linear(hidden, style_dim)
        self.to_decoder = nn.Linear(style_dim, dim)

    def forward(self, features: torch.Tensor, ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, ratio*T, hidden) -> (decoder style (B, T, F), frame styles (B, ratio*T, style_dim))."""
        pooled = causal_mean(features)[:, ratio - 1::ratio]             # mean up to each frame's last audio step
        return self.to_decoder(self.code(pooled)), self.frames(features)


class SpatialEncoder(nn.Module):
    """Per-frame vertex offsets -> motion embedding (B, T, F), through a GAT over the mesh graph.

    Each vertex carries (offset, template position); two GAT layers refine the offset with its
    neighbourhood (residual, last layer zero-initialised so training starts from the plain linear
    embedding), then Linear(V*3 -> F). Frames are processed in chunks; checkpointed, a chunk's
    activations are recomputed in the backward pass, so their memory is bounded by the chunk size,
    not by batch x sequence length."""

    def __init__(self, num_vertices: int, dim: int, edges: torch.Tensor | None, gat_dim: int,
                 gat_heads: int, chunk: int, checkpointed: bool = True):
        super().__init__()
        self.num_vertices, self.chunk, self.checkpointed = num_vertices, chunk, checkpointed
        self.embed = nn.Linear(num_vertices * 3, dim)
        self.gat = None
        if edges is not None:
            self.graph = MeshGraph(edges, num_vertices)
            self.gat = nn.ModuleList([GraphAttention(6, gat_dim, gat_heads),
                                      GraphAttention(gat_dim * gat_heads, 3, 1, concat=False)])
            nn.init.zeros_(self.gat[1].lin.weight)

    def _refine(self, offsets: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """offsets (N, V, 3), template (N, V, 3) -> refined offsets (N, V, 3)."""
        x = torch.cat([offsets, template], dim=-1)
        x = F.elu(self.gat[0](x, self.graph))
        return offsets + self.gat[1](x, self.graph)

    def forward(self, offsets: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """offsets (B, T, V*3), template (B, V*3) -> (B, T, F)."""
        if self.gat is not None and offsets.shape[1] > 0:
            B, T, _ = offsets.shape
            flat = offsets.reshape(B * T, self.num_vertices, 3)
            templates = template.view(B, 1, self.num_vertices, 3).expand(B, T, -1, -1)
            templates = templates.reshape(B * T, self.num_vertices, 3)
            parts = []
            for piece, tmpl in zip(flat.split(self.chunk), templates.split(self.chunk)):
                if self.checkpointed and torch.is_grad_enabled():
                    parts.append(checkpoint(self._refine, piece, tmpl, use_reentrant=False))
                else:
                    parts.append(self._refine(piece, tmpl))
            offsets = torch.cat(parts).reshape(B, T, -1)
        return self.embed(offsets)


class MotionEncoder(nn.Module):
    """Motion embedding -> per-frame features (B, T, F): causal conv stack -> Linear(F -> 2F) ->
    periodic encoding -> causal transformer (2F wide, ff 3F) -> Linear(2F -> F).

    Content and style encoders share this shape; the content one normalises without affine."""

    def __init__(self, dim: int, conv_layers: int, layers: int, heads: int, period: int,
                 dropout: float, affine: bool):
        super().__init__()
        self.convs = nn.ModuleList([CausalConvBlock(dim, affine) for _ in range(conv_layers)])
        self.up = nn.Linear(dim, 2 * dim)
        self.ppe = PeriodicPositionalEncoding(2 * dim, period, dropout)
        self.blocks = nn.ModuleList([TransformerBlock(2 * dim, heads, 3 * dim, period, dropout)
                                     for _ in range(layers)])
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, t0: int = 0, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, F) -> (B, T, F); with `cache`, continues from the frames seen before."""
        caches = cache.setdefault("layers", [{} for _ in range(len(self.convs) + len(self.blocks))]) \
            if cache is not None else [None] * (len(self.convs) + len(self.blocks))
        for conv, c in zip(self.convs, caches):
            x = conv(x, c)
        x = self.ppe(self.up(x), t0)
        for block, c in zip(self.blocks, caches[len(self.convs):]):
            x = block(x, t0, c)
        return self.down(x)
