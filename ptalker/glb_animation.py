"""A face animation as one glTF 2.0 file: the base mesh (positions, normals, triangles) with morph
targets and a weights animation, and the way back: a glb's morph mesh and its weights keyframes.

Coordinates are written exactly as predicted (glTF's unit is the metre, as in VOCASET and SynthTalk)
with no node transform, so every importer shows the prediction's own numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .gltf import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, Glb, GlbBuilder, weights_animation, write_glb
from .morph_basis import MorphBasis

SKIN = [0.80, 0.62, 0.52, 1.0]   # base colour of the face material (linear RGBA)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) positions, (F, 3) triangles -> (V, 3) unit normals, area-weighted; +z where undefined
    (glTF requires unit length on every NORMAL, isolated vertices included)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])   # length = 2 x area
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, f[:, corner], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), [0.0, 0.0, 1.0])
    return normals.astype(np.float32)


def animation_document(base: np.ndarray, faces: np.ndarray, basis: MorphBasis, fps: float, name: str,
                       target_names: list[str] | None = None, extras: dict | None = None) -> tuple[dict, bytes]:
    """base (V, 3), faces (F, 3), basis targets (K, V, 3) and weights (T, K) -> (glTF JSON, BIN bytes)."""
    b = GlbBuilder()
    base = np.asarray(base, np.float32)
    attributes = {"POSITION": b.accessor(base, "VEC3", ARRAY_BUFFER, bounds=True),
                  "NORMAL": b.accessor(vertex_normals(base, faces), "VEC3", ARRAY_BUFFER)}
    primitive = {"attributes": attributes, "mode": 4, "material": 0,
                 "indices": b.accessor(np.asarray(faces).reshape(-1), "SCALAR", ELEMENT_ARRAY_BUFFER, bounds=True)}
    k = len(basis.targets)
    names = target_names or [f"component_{i:02d}" for i in range(k)]
    mesh = {"name": name, "primitives": [primitive]}
    if k:
        primitive["targets"] = [{"POSITION": b.accessor(t, "VEC3", ARRAY_BUFFER, bounds=True)}
                                for t in basis.targets]
        mesh["weights"] = [0.0] * k
        mesh["extras"] = {"targetNames": names}   # where Blender and three.js read target names
    b.doc.update(scene=0, scenes=[{"nodes": [0]}], nodes=[{"name": name, "mesh": 0}], meshes=[mesh],
                 materials=[{"name": "face", "doubleSided": True,
                             "pbrMetallicRoughness": {"baseColorFactor": SKIN, "metallicFactor": 0.0,
                                                      "roughnessFactor": 0.6}}])
    if k and len(basis.weights):
        weights_animation(b, 0, basis.weights, fps, name)
    if extras:
        b.doc["asset"]["extras"] = extras
    return b.finish()


def write_animation_glb(path: str | os.PathLike, base: np.ndarray, faces: np.ndarray, basis: MorphBasis,
                        fps: float, name: str, extras: dict | None = None) -> None:
    """Write `animation_document` as a .glb, all-or-nothing."""
    write_glb(path, *animation_document(base, faces, basis, fps, name, extras=extras))


# ---------------------------------------------------------------------------------------------- reading

@dataclass
class MorphMesh:
    """The first mesh of a glb that has morph targets, its primitives' vertices concatenated."""
    base: np.ndarray          # (V, 3) float32
    faces: np.ndarray         # (F, 3) int64, into the concatenated vertices
    targets: np.ndarray       # (K, V, 3) float32 position offsets
    names: list[str]          # K target names (extras.targetNames, else target_00 ...)
    mesh: int                 # index in doc["meshes"]
    node: int | None          # the first node showing it


def read_morph_mesh(glb: Glb, require_targets: bool = True) -> MorphMesh:
    """A glb -> its first mesh with morph targets (or its first mesh); one-line UserError otherwise."""
    meshes = glb.doc.get("meshes") or []
    if not meshes:
        raise UserError(f"glb {glb.path} holds no mesh")
    with_targets = [i for i, m in enumerate(meshes) if any(p.get("targets") for p in m.get("primitives", []))]
    if not with_targets and require_targets:
        raise UserError(f"glb {glb.path} has no morph targets: a rig needs named blendshapes (e.g. ARKit's 52)")
    index = with_targets[0] if with_targets else 0
    try:
        return _morph_mesh(glb, index)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(f"glb {glb.path} is corrupt: mesh {index} cannot be read ({exc!r})") from exc


def _morph_mesh(glb: Glb, index: int) -> MorphMesh:
    mesh = glb.doc["meshes"][index]
    primitives = mesh["primitives"]
    counts = {len(p.get("targets", [])) for p in primitives}
    if len(counts) != 1:
        raise UserError(f"glb {glb.path}: the primitives of mesh {index} have different numbers of morph targets")
    k = counts.pop()
    bases, faces, targets, offset = [], [], [], 0
    for p in primitives:
        v = glb.accessor(p["attributes"]["POSITION"]).reshape(-1, 3)
        bases.append(v)
        tri = (glb.accessor(p["indices"]).astype(np.int64) if "indices" in p else np.arange(len(v)))
        faces.append(tri.reshape(-1, 3) + offset)
        targets.append(np.stack([glb.accessor(t["POSITION"]).reshape(-1, 3) if "POSITION" in t
                                 else np.zeros_like(v) for t in p.get("targets", [])]) if k else
                       np.zeros((0, len(v), 3), np.float32))
        offset += len(v)
    names = list((mesh.get("extras") or {}).get("targetNames") or [])
    if len(names) != k:
        names = [f"target_{i:02d}" for i in range(k)]
    node = next((i for i, n in enumerate(glb.doc.get("nodes", [])) if n.get("mesh") == index), None)
    return MorphMesh(np.concatenate(bases), np.concatenate(faces), np.concatenate(targets, axis=1).astype(np.float32),
                     [str(n) for n in names], index, node)


def read_weights_animation(glb: Glb, node: int) -> tuple[np.ndarray, np.ndarray]:
    """The first animation channel driving a node's morph weights -> (times (T,), weights (T, K))."""
    for animation in glb.doc.get("animations", []):
        for channel in animation["channels"]:
            if channel["target"].get("node") == node and channel["target"]["path"] == "weights":
                sampler = animation["samplers"][channel["sampler"]]
                times = glb.accessor(sampler["input"])
                return times, glb.accessor(sampler["output"]).reshape(len(times), -1)
    raise UserError(f"glb {glb.path} has no weights animation on node {node}")
