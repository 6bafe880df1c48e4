"""Mesh IO and mesh graphs, on trimesh (never reorders vertices: always process=False)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .errors import UserError


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a .ply/.obj mesh -> (vertices (V, 3) float32, faces (F, 3) int64), order preserved."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise UserError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(path, process=False, force="mesh", maintain_order=True)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise UserError(f"cannot read mesh {path}: {exc}") from exc
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0:
        raise UserError(f"mesh {path} has no vertices")
    return vertices, faces


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a mesh (.ply or .obj by suffix) atomically: a temp file renamed into place."""
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    tmp = path.with_name(f".{path.name}.tmp")
    mesh.export(tmp, file_type=path.suffix.lstrip(".").lower())
    os.replace(tmp, path)


def find_template_mesh(dataset_dir: str | os.PathLike) -> Path:
    """The topology mesh of a dataset: the single (or first sorted) `templates/*.ply`."""
    folder = Path(dataset_dir) / "templates"
    candidates = sorted(folder.glob("*.ply")) + sorted(folder.glob("*.obj"))
    if not candidates:
        raise UserError(f"no template mesh in {folder}: place the dataset's topology .ply there")
    return candidates[0]


def load_templates(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """templates.pkl -> {subject: (V, 3) float32}. Accepts latin1 pickles of older numpy."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"templates file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise UserError(f"cannot read templates pickle {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must hold a non-empty dict {{subject: (V, 3) array}}")
    out = {}
    for subject, verts in raw.items():
        verts = np.asarray(verts, dtype=np.float32)
        if verts.ndim == 1 and verts.size % 3 == 0:
            verts = verts.reshape(-1, 3)
        if verts.ndim != 2 or verts.shape[1] != 3:
            raise UserError(f"{path}: template of {subject!r} has shape {verts.shape}, expected (V, 3)")
        out[str(subject)] = verts
    return out


def mesh_edges(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Undirected edge list of a triangle mesh as both directions -> (2, E) int64, sorted, unique."""
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise UserError(f"mesh faces index vertices outside 0..{num_vertices - 1}")
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0)
    pairs = np.concatenate([pairs, pairs[:, ::-1]], axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(pairs, axis=0)
    return pairs.T.copy()


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total area of a triangle mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return float(0.5 * np.linalg.norm(cross, axis=1).sum())
