"""Animate speech with a trained checkpoint: load the model once, turn 16 kHz speech into vertex
sequences, and write each clip's outputs (.npy, mp4, mesh sequence) all-or-nothing.

    animator = load_animator("VOCASET/save/vocaset.pth")
    template = animator.template("FaceTalk_170809_00138_TA")
    [vertices] = animator.animate([load_audio("speech.wav")], template, condition="FaceTalk_170913_03279_TA")
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import PTalker

from .audio import SAMPLE_RATE, load_audio
from .errors import UserError
from .fileio import atomic_folder, atomic_path
from .layout import load_vertices

MIN_SAMPLES = 400        # the speech models' convolutional front end spans 25 ms at 16 kHz
MESH_FORMATS = ("ply", "obj")
# mesh sequences, then animations (see ptalker/export.py): glTF, the HTML player, ARKit weights
EXPORT_FORMATS = MESH_FORMATS + ("glb", "html", "arkit")


# ---------------------------------------------------------------------------------------------- model

@dataclass
class Animator:
    """A model loaded from a checkpoint with everything needed to animate: subjects, faces, templates."""
    model: PTalker
    train_subjects: list[str]
    faces: np.ndarray                      # (F, 3) int64
    templates: dict[str, np.ndarray]       # subject -> (V, 3) float32
    path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def fps(self) -> int:
        return self.model.config.fps

    @property
    def num_vertices(self) -> int:
        return self.model.config.num_vertices

    def condition_vector(self, condition: str | None) -> torch.Tensor | None:
        """A training subject's name -> its one-hot (1, n_subjects); None (unseen speaker) -> None."""
        if condition is None:
            return None
        if condition not in self.train_subjects:
            raise UserError(f"unknown condition {condition!r}: choose a training subject of {self.path.name} "
                            f"({', '.join(self.train_subjects)}) or 'none' for an unseen speaker")
        one_hot = torch.zeros(1, self.model.config.n_subjects, device=self.device)
        one_hot[0, self.train_subjects.index(condition)] = 1.0
        return one_hot

    def template(self, subject: str) -> np.ndarray:
        """The neutral face of a subject stored in the checkpoint -> (V, 3) float32."""
        if subject not in self.templates:
            raise UserError(f"unknown subject {subject!r}: checkpoint {self.path.name} holds templates of "
                            f"{', '.join(self.templates)} (or give --template MESH)")
        return self._checked(self.templates[subject], f"template of {subject!r} in {self.path}")

    def template_from_mesh(self, path: str | os.PathLike) -> np.ndarray:
        """A .ply/.obj neutral face with the checkpoint's vertex order -> (V, 3) float32."""
        from .mesh import read_mesh

        vertices, _ = read_mesh(path)
        return self._checked(vertices, f"template mesh {path}")

    def _checked(self, vertices: np.ndarray, what: str) -> np.ndarray:
        vertices = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
        if len(vertices) != self.num_vertices:
            raise UserError(f"{what} has {len(vertices)} vertices, but checkpoint {self.path} animates "
                            f"{self.num_vertices} (vertice_dim {self.model.config.vertice_dim})")
        return vertices

    def reference_motion(self, path: str | os.PathLike) -> np.ndarray:
        """A style clip: .npy of absolute vertices (T, V*3) or (T, V, 3) -> (T, V, 3) float32."""
        from .renderer import as_frames

        if not self.model.config.use_style:
            raise UserError(f"checkpoint {self.path} has no style encoders (trained without them): "
                            f"it cannot take its style from a reference motion")
        motion = np.array(load_vertices(path, "reference motion"))   # read: a writable copy, not the file's map
        return as_frames(motion, self.num_vertices, f"reference motion {path}")

    @staticmethod
    def retarget(motion: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Motion recorded on one face -> the same offsets on another: (T, V, 3) - source (V, 3) + target (V, 3).

        A reference clip's style lives in its offsets from its own speaker's neutral face; given on
        another face unchanged, the difference between the two faces would read as motion."""
        return np.asarray(motion, np.float32) - source + target

    @torch.no_grad()
    def animate(self, clips: list[np.ndarray], template: np.ndarray, condition: str | None = None,
                reference: np.ndarray | None = None, batch_size: int = 8, fused: bool = False) -> list[np.ndarray]:
        """16 kHz speech clips (S_i,) -> vertices (T_i, V*3) float32 each, T_i = round(S_i / 16000 * fps).

        condition: a training subject (its speaking style) or None (unseen: style from the audio).
        reference: (T, V, 3) absolute vertices whose motion style replaces the estimated one.
        Clips of equal length run as one batch (the speech transformer sees whole clips, so unequal
        ones cannot share a padded batch without changing their features).
        fused: run the one-frame step as a CUDA graph (CUDA) or compiled (CPU, tens of seconds once per
        process and model): the same frames, faster per frame (see PTalker.generate)."""
        one_hot = self.condition_vector(condition)
        base = torch.as_tensor(self._checked(template, "template"), device=self.device).reshape(1, -1)
        ref = None if reference is None else torch.as_tensor(
            np.asarray(reference, np.float32).reshape(1, len(reference), -1), device=self.device)
        out: list[np.ndarray | None] = [None] * len(clips)
        for group in length_groups([len(c) for c in clips], batch_size):
            audio = torch.from_numpy(np.stack([clips[i] for i in group])).to(self.device)
            n = len(group)
            vertices = self.model.generate(audio, base.expand(n, -1),
                                           None if one_hot is None else one_hot.expand(n, -1),
                                           None if ref is None else ref.expand(n, -1, -1), fused=fused)
            for i, v in zip(group, vertices):
                out[i] = v.float().cpu().numpy()
        return out


def length_groups(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length, at most batch_size per group, in order of first appearance."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    size = max(1, batch_size)
    return [g[k: k + size] for g in by_length.values() for k in range(0, len(g), size)]


def load_animator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Animator:
    """Rebuild the model of a checkpoint (offline) for inference."""
    from .checkpoint import load_checkpoint

    model, state = load_checkpoint(path, device)
    return Animator(model=model, train_subjects=list(state["train_subjects"]),
                    faces=state["faces"].numpy(),
                    templates={k: v.numpy().reshape(-1, 3) for k, v in state["templates"].items()},
                    path=Path(path), device=torch.device(device))


# ---------------------------------------------------------------------------------------------- audio

def load_speech(path: str | os.PathLike) -> np.ndarray:
    """load_audio, refusing clips too short for the speech model."""
    speech = load_audio(path)
    if len(speech) < MIN_SAMPLES:
        raise UserError(f"audio {path} is {len(speech) / SAMPLE_RATE * 1000:.1f} ms long: "
                        f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms of speech is needed")
    return speech


# ---------------------------------------------------------------------------------------------- outputs

def export_meshes(folder: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, fmt: str = "ply") -> int:
    """A sequence (T, V*3) -> folder/frame_00000.<fmt> ...; returns the number of files."""
    from .mesh import write_mesh

    if fmt not in MESH_FORMATS:
        raise UserError(f"mesh export format must be one of {', '.join(MESH_FORMATS)}, got {fmt!r}")
    frames = np.asarray(vertices).reshape(len(vertices), -1, 3)
    for t, frame in enumerate(frames):
        write_mesh(Path(folder) / f"frame_{t:05d}.{fmt}", frame, faces)
    return len(frames)


@dataclass
class ClipOutputs:
    npy: Path
    video: Path | None = None
    meshes: Path | None = None
    mesh_count: int = 0
    render_seconds: float = 0.0
    exports: list[Path] = field(default_factory=list)   # glb / wav / html / rig weights files
    notes: list[str] = field(default_factory=list)      # what the exports measured (basis size, rig residual)


def write_clip(stem: str, vertices: np.ndarray, faces: np.ndarray, fps: float, result_dir: str | os.PathLike,
               output_dir: str | os.PathLike, audio_path: str | os.PathLike | None = None, render: bool = True,
               export: str | list[str] | None = None, template: np.ndarray | None = None,
               resolution: tuple[int, int] = (800, 800), export_options=None, rig=None) -> ClipOutputs:
    """Write result_dir/<stem>.npy, output_dir/<stem>.mp4 (with the speech), output_dir/<stem>/
    frame_*.<ply|obj> and the animation exports of ptalker/export.py (export: one format or several;
    rig: a preloaded ptalker.rig.Rig; export_options: an ExportOptions). Everything is staged in temp files and moved into place only when all of it
    succeeded, so a failed render leaves no prediction behind either."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(len(vertices), -1)
    out = ClipOutputs(npy=Path(result_dir) / f"{stem}.npy")
    with contextlib.ExitStack() as stack:
        with open(stack.enter_context(atomic_path(out.npy)), "wb") as f:
            np.save(f, vertices)
        formats = [export] if isinstance(export, str) else list(export or [])
        unknown = sorted(set(formats) - set(EXPORT_FORMATS))
        if unknown:
            raise UserError(f"export format must be among {', '.join(EXPORT_FORMATS)}, got {', '.join(unknown)}")
        mesh_formats = [f for f in MESH_FORMATS if f in formats]
        if mesh_formats:
            out.meshes = Path(output_dir) / stem
            folder = stack.enter_context(atomic_folder(out.meshes))
            out.mesh_count = sum(export_meshes(folder, vertices, faces, f) for f in mesh_formats)
        if rig is not None or set(formats) - set(MESH_FORMATS):
            from .export import ExportOptions, export_animation

            done = export_animation(stack, stem, vertices, faces, fps, output_dir, formats,
                                    export_options or ExportOptions(), audio_path, template, rig=rig)
            out.exports, out.notes = done.files, done.notes
        if render:
            from .render_sequence import render_sequence

            out.video = Path(output_dir) / f"{stem}.mp4"
            started = time.perf_counter()
            render_sequence(vertices, faces, stack.enter_context(atomic_path(out.video)), fps,
                            audio_path=audio_path, template=template, resolution=resolution,
                            progress=sys.stderr.isatty())
            out.render_seconds = time.perf_counter() - started
    return out
