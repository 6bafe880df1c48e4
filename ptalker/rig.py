"""Blendshape weights for a rig: each predicted frame as the rig's own morph targets, weights in [0, 1]
by bounded least squares, written as a Live Link Face CSV and as the rig's glb with an animation.

    rig = load_rig("arkit_face.glb")                  # a glb mesh with named morph targets
    fit = solve_weights(rig, frames - neutral)        # predicted offsets (T, V, 3) on the rig's vertices
    write_live_link_csv("clip_weights.csv", rig.names, fit.weights, fps=30)
    write_rig_animation("clip_rig.glb", rig_glb, rig, fit.weights, fps=30, name="clip")
"""
from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_path
from .glb_animation import MorphMesh, read_morph_mesh
from .gltf import Glb, GlbBuilder, read_glb, weights_animation, write_glb

# A tiny ridge term makes targets that are exact opposites (mouthLeft / mouthRight) or near copies
# choose the smallest weights instead of an arbitrary split; relative to the targets' mean energy.
RIDGE = 1e-6


@dataclass
class Rig:
    mesh: MorphMesh
    glb: Glb

    @property
    def names(self) -> list[str]:
        return self.mesh.names


@dataclass
class RigFit:
    weights: np.ndarray         # (T, K) float32 in [0, 1]
    residual_mean: np.ndarray   # (T,) mean vertex distance of the rig's pose to the frame (mesh units)
    residual_max: np.ndarray    # (T,) largest vertex distance per frame

    def summary(self, unit_scale: float = 1000.0, unit: str = "mm") -> str:
        """One line: the residual's per-frame mean and max, averaged and worst over the clip."""
        if len(self.weights) == 0:
            return "rig fit: no frames"
        worst = int(np.argmax(self.residual_max))
        mm = unit_scale
        return (f"rig fit residual per frame ({unit}): mean {self.residual_mean.mean() * mm:.3f} "
                f"(up to {self.residual_mean.max() * mm:.3f}), max {self.residual_max.mean() * mm:.3f} "
                f"(up to {self.residual_max[worst] * mm:.3f} at frame {worst})")


def load_rig(path: str | os.PathLike) -> Rig:
    """A .glb with a morph-target mesh -> Rig; one-line UserError for a missing, corrupt or target-less file."""
    glb = read_glb(path)
    unsupported = set(glb.doc.get("extensionsRequired", [])) - {"KHR_materials_unlit", "KHR_texture_transform"}
    if unsupported:
        raise UserError(f"rig {path} requires glTF extensions this reader does not decode: {', '.join(sorted(unsupported))}")
    mesh = read_morph_mesh(glb)
    if mesh.node is None:
        raise UserError(f"rig {path}: no node shows its morph-target mesh, so nothing could be animated")
    return Rig(mesh, glb)


def check_vertices(rig: Rig, num_vertices: int) -> None:
    """The rig must share the animated face's vertices (same count, same order)."""
    if len(rig.mesh.base) != num_vertices:
        raise UserError(f"rig {rig.glb.path} has {len(rig.mesh.base)} vertices, but the animated face has "
                        f"{num_vertices}: a rig must be built on the same mesh (same vertices, same order)")


def solve_weights(rig: Rig, offsets: np.ndarray, smoothing: float = 0.0) -> RigFit:
    """Offsets (T, V, 3) of the animated frames from their neutral face -> weights (T, K) in [0, 1]
    minimising |w . targets - offset|^2 per frame. Offsets, not positions, are fitted, so a rig of
    another identity on the same mesh takes the motion without the difference of the two faces.

    smoothing >= 0 adds smoothing x sum_k |target_k|^2 (w_tk - w_(t-1)k)^2: a causal pull towards the
    previous frame's weights that calms jitter at the cost of some lag."""
    from scipy.optimize import lsq_linear

    offsets = np.asarray(offsets, np.float64).reshape(len(offsets), -1, 3)
    check_vertices(rig, offsets.shape[1])
    targets = rig.mesh.targets.astype(np.float64)
    k = len(targets)
    a = targets.reshape(k, -1).T                            # (3V, K)
    q, r = np.linalg.qr(a)                                  # |Aw - d| = |Rw - Q'd| + a constant
    energy = max(float(np.trace(r.T @ r)) / max(k, 1), 1e-30)
    projected = offsets.reshape(len(offsets), -1) @ q       # (T, K)
    ridge = np.sqrt(RIDGE * energy) * np.eye(k)
    # each weight is pulled by its own target's size: smoothing 1 weighs a change of w as much as the
    # same change of that target's motion
    pull = np.sqrt(max(smoothing, 0.0)) * np.diag(np.linalg.norm(r, axis=0))
    weights = np.zeros((len(offsets), k))
    previous = np.zeros(k)
    for t in range(len(offsets)):
        rows = [r, ridge] + ([pull] if smoothing > 0 and t else [])
        rhs = [projected[t], np.zeros(k)] + ([pull @ previous] if smoothing > 0 and t else [])
        solution = lsq_linear(np.vstack(rows), np.concatenate(rhs), bounds=(0.0, 1.0), method="bvls").x
        weights[t] = np.clip(solution, 0.0, 1.0)   # the solver may overshoot a bound by rounding
        previous = weights[t]
    distance = np.linalg.norm(np.einsum("tk,kvd->tvd", weights, targets) - offsets, axis=-1)   # (T, V)
    return RigFit(weights.astype(np.float32), distance.mean(axis=1), distance.max(axis=1))


def live_link_timecode(frame: int, fps: float) -> str:
    """Frame index -> Live Link Face's HH:MM:SS:FF.fff timecode, starting at 00:00:00:00.000."""
    rate = max(int(round(fps)), 1)
    seconds, ff = divmod(frame, rate)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.000"


def live_link_csv(names: list[str], weights: np.ndarray, fps: float) -> str:
    """Weights (T, K) -> CSV text: `Timecode,BlendShapeCount,<Name>...`, one row per frame.

    Live Link Face spells the ARKit names with a capital first letter (jawOpen -> JawOpen)."""
    out = io.StringIO()
    header = ["Timecode", "BlendShapeCount"] + [n[:1].upper() + n[1:] for n in names]
    out.write(",".join(header) + "\n")
    for t, row in enumerate(np.asarray(weights)):
        out.write(",".join([live_link_timecode(t, fps), str(len(names))] + [f"{w:.6f}" for w in row]) + "\n")
    return out.getvalue()


def write_live_link_csv(path: str | os.PathLike, names: list[str], weights: np.ndarray, fps: float) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(live_link_csv(names, weights, fps))


def rig_animation_document(rig: Rig, weights: np.ndarray, fps: float, name: str,
                           extras: dict | None = None) -> tuple[dict, bytes]:
    """The rig's own glTF (meshes, materials, skins, ... untouched) plus one animation of its targets."""
    doc = copy.deepcopy(rig.glb.doc)
    buffers = doc.get("buffers") or []
    if not buffers or "uri" in buffers[0]:
        raise UserError(f"rig {rig.glb.path}: its first buffer is not embedded in the glb, so an animation "
                        f"cannot be added to it")
    binary = bytearray(rig.glb.binary)
    binary += b"\0" * (-len(binary) % 4)
    builder = GlbBuilder(doc=doc, binary=binary)
    doc.setdefault("bufferViews", [])
    doc.setdefault("accessors", [])
    weights_animation(builder, rig.mesh.node, weights, fps, name)
    if extras:
        doc.setdefault("asset", {"version": "2.0"}).setdefault("extras", {}).update(extras)
    return builder.finish()


def write_rig_animation(path: str | os.PathLike, rig: Rig, weights: np.ndarray, fps: float, name: str,
                        extras: dict | None = None) -> None:
    write_glb(path, *rig_animation_document(rig, weights, fps, name, extras))
