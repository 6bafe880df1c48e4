"""Tiny datasets in the standard layout, written by the tests themselves.

Each subject's clip has a 'mouth' whose opening follows the loudness of its speech, so a model can
learn something real from a few seconds of data."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import soundfile
import trimesh


def tiny_mesh(subdivisions: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere: (V, 3) vertices, (F, 3) faces (42 vertices at one subdivision)."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.1)
    return np.asarray(sphere.vertices, dtype=np.float32), np.asarray(sphere.faces, dtype=np.int64)


def speech_like(seconds: float, rate: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A voiced buzz with a syllable-rate envelope -> (samples, envelope at 100 Hz)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    syllables = np.clip(np.sin(2 * np.pi * (3 + seed % 3) * t + rng.uniform(0, 6)), 0, None) ** 2
    voice = np.sin(2 * np.pi * (110 + 20 * seed) * t) + 0.3 * rng.standard_normal(n)
    return (0.3 * syllables * voice).astype(np.float32), syllables


def write_dataset(root: Path, subjects: list[str], sentences: range, fps: int, capture_stride: int = 1,
                  seconds: float = 1.0, rate: int = 16000, subdivisions: int = 1,
                  mesh: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, amplitude: float = 0.01) -> Path:
    """Write wav/, vertices_npy/, templates.pkl, templates/mesh.ply and regions/ under `root`.

    `mesh` (vertices (V, 3), faces, lip ids) replaces the icosphere, e.g. FLAME with its lip region;
    the lower lip then opens by up to `amplitude` (mesh units) times the speaker's style factor,
    the upper lip by a third of that the other way."""
    if mesh is None:
        vertices, faces = tiny_mesh(subdivisions)
        lips, upper = np.where(vertices[:, 1] < -0.03)[0], np.where(vertices[:, 1] > 0.03)[0]
        direction = -np.ones(len(lips))
    else:
        vertices, faces, lips = np.asarray(mesh[0], dtype=np.float32), mesh[1], np.asarray(mesh[2])
        centre = vertices[lips, 1].mean()
        upper = np.where(vertices[:, 1] > centre + 0.5 * np.ptp(vertices[:, 1]))[0]
        direction = np.where(vertices[lips, 1] < centre, -1.0, 1 / 3)
    for sub in ("wav", "vertices_npy", "templates", "regions"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(vertices, faces, process=False).export(root / "templates" / "mesh.ply")
    (root / "regions" / "lve.txt").write_text(",".join(map(str, lips)))
    (root / "regions" / "fdd.txt").write_text(",".join(map(str, upper)))
    templates = {}
    for k, subject in enumerate(subjects):
        template = vertices * (1.0 + 0.05 * k)
        templates[subject] = template
        for s in sentences:
            name = f"{subject}_sentence{s:02d}"
            audio, envelope = speech_like(seconds, rate, seed=10 * k + s)
            soundfile.write(root / "wav" / f"{name}.wav", audio, rate)
            frames = int(round(seconds * fps * capture_stride))
            loud = np.interp(np.linspace(0, 1, frames), np.linspace(0, 1, len(envelope)), envelope)
            motion = np.zeros((frames,) + template.shape, dtype=np.float32)
            motion[:, lips, 1] = amplitude * (1 + 0.5 * k) * loud[:, None] * direction   # style: opening amplitude
            np.save(root / "vertices_npy" / f"{name}.npy", (template + motion).reshape(frames, -1))
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    return root
