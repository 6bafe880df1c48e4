"""A compact linear basis of a vertex animation: the fewest principal components of the offsets from
a base mesh that reproduce every vertex of every frame within a tolerance.

    basis = fit_morph_basis(frames, base, tolerance=1e-4)     # frames (T, V, 3), base (V, 3), metres
    frames ~= base + einsum("tk,kvd->tvd", basis.weights, basis.targets)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MorphBasis:
    targets: np.ndarray     # (K, V, 3) float32: morph target offsets
    weights: np.ndarray     # (T, K) float32: per-frame weights
    max_error: float        # largest vertex distance of the float32 reconstruction to the frames


def reconstruct(base: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """base (V, 3) + weights (T, K) x targets (K, V, 3) -> (T, V, 3), in float32 as a renderer computes it."""
    base = np.asarray(base, np.float32)
    return base[None] + np.einsum("tk,kvd->tvd", np.asarray(weights, np.float32), np.asarray(targets, np.float32))


def max_vertex_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest Euclidean distance between corresponding vertices of (T, V, 3) arrays."""
    if a.size == 0:
        return 0.0
    return float(np.sqrt(((np.asarray(a, np.float64) - b) ** 2).sum(-1)).max())


def fit_morph_basis(frames: np.ndarray, base: np.ndarray, tolerance: float) -> MorphBasis:
    """frames (T, V, 3) and base (V, 3) -> the fewest SVD components of the offsets (T, V*3) whose
    float32 reconstruction keeps every vertex within `tolerance` (mesh units).

    Targets are the right singular vectors scaled by their singular values over sqrt(T), so weights
    stay of order 1 whatever the clip length (a rig's sliders and a validator's eye both like that)."""
    frames = np.asarray(frames, np.float64)
    base = np.asarray(base, np.float64)
    offsets = (frames - base[None]).reshape(len(frames), -1)
    u, s, vt = np.linalg.svd(offsets, full_matrices=False)
    scale = np.sqrt(max(len(frames), 1))
    residual = offsets.copy()
    # Components are added in order of energy; the per-vertex error (not the energy) decides the count.
    for k in range(len(s) + 1):
        if k:
            residual -= np.outer(u[:, k - 1] * s[k - 1], vt[k - 1])
        if _vertex_error(residual) > tolerance and k < len(s):
            continue
        targets = (vt[:k] * (s[:k, None] / scale)).reshape(k, -1, 3).astype(np.float32)
        weights = (u[:, :k] * scale).astype(np.float32)
        exact = max_vertex_error(reconstruct(base, targets, weights), frames)
        if exact <= tolerance or k == len(s):   # float32 rounding may need one more component
            return MorphBasis(targets, weights, exact)
    raise AssertionError("unreachable: the loop returns at k == len(s)")


def _vertex_error(residual: np.ndarray) -> float:
    """Largest vertex distance of a residual (T, V*3)."""
    if residual.size == 0:
        return 0.0
    return float(np.sqrt((residual.reshape(len(residual), -1, 3) ** 2).sum(-1)).max())
