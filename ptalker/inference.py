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
from .device import pick_device
from .errors import UserError
from .fileio import atomic_folder, atomic_path
from .layout import load_vertices

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac")
MIN_SAMPLES = 400        # the speech models' convolutional front end spans 25 ms at 16 kHz
EXPORT_FORMATS = ("ply", "obj")


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

    def check_flags(self, vertice_dim: int | None = None, feature_dim: int | None = None,
                    period: int | None = None, fps: int | None = None,
                    train_subjects: list[str] | None = None) -> None:
        """Flags are optional (the checkpoint carries the config); given ones must agree with it."""
        config = self.model.config
        for flag, given in (("vertice_dim", vertice_dim), ("feature_dim", feature_dim), ("period", period),
                            ("fps", fps)):
            if given is not None and given != getattr(config, flag):
                raise UserError(f"--{flag} {given} does not match checkpoint {self.path} "
                                f"({flag} {getattr(config, flag)})")
        # conditions are looked up by name, so only the set of subjects has to agree
        if train_subjects is not None and set(train_subjects) != set(self.train_subjects):
            raise UserError(f"--train_subjects {' '.join(train_subjects)} do not match checkpoint {self.path}, "
                            f"trained on {' '.join(self.train_subjects)}")

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
        from .render import as_frames

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
                reference: np.ndarray | None = None, batch_size: int = 8) -> list[np.ndarray]:
        """16 kHz speech clips (S_i,) -> vertices (T_i, V*3) float32 each, T_i = round(S_i / 16000 * fps).

        condition: a training subject (its speaking style) or None (unseen: style from the audio).
        reference: (T, V, 3) absolute vertices whose motion style replaces the estimated one.
        Clips of equal length run as one batch (the speech transformer sees whole clips, so unequal
        ones cannot share a padded batch without changing their features)."""
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
                                           None if ref is None else ref.expand(n, -1, -1))
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


def find_checkpoint(checkpoint: str | None, dataset: str | None, model_name: str | None,
                    bundled: Path | None = None) -> Path:
    """--checkpoint; else `<dataset>/save/<model_name>.pth`, then `<dataset>/<model_name>.pth`
    (dataset default vocaset, model name default the dataset's name); with neither a dataset nor a
    model name, the bundled model."""
    from .datasets import resolve_dataset

    if checkpoint is not None:
        return Path(checkpoint)
    if dataset is None and model_name is None and bundled is not None:
        if not bundled.is_file():
            raise UserError(f"no model named (--checkpoint, --dataset or --model_name) and the bundled model "
                            f"{bundled} is missing")
        return bundled
    preset = resolve_dataset(dataset or "vocaset")
    name = model_name or preset.name.lower()
    candidates = [preset.folder / "save" / f"{name}.pth", preset.folder / f"{name}.pth"]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"no checkpoint {candidates[0]} or {candidates[1]}: train with main.py or give --checkpoint")


# ---------------------------------------------------------------------------------------------- audio

def audio_inputs(path: str | os.PathLike) -> list[Path]:
    """A speech file, or every audio file (by suffix) of a folder, sorted."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"no audio files ({' '.join(AUDIO_SUFFIXES)}) in folder {path}")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:   # both would write <stem>.npy / <stem>.mp4
            raise UserError(f"{stems[p.stem].name} and {p.name} in {path} share the output name {p.stem}")
        stems[p.stem] = p
    return files


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

    if fmt not in EXPORT_FORMATS:
        raise UserError(f"mesh export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
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


def write_clip(stem: str, vertices: np.ndarray, faces: np.ndarray, fps: float, result_dir: str | os.PathLike,
               output_dir: str | os.PathLike, audio_path: str | os.PathLike | None = None, render: bool = True,
               export: str | None = None, template: np.ndarray | None = None,
               resolution: tuple[int, int] = (800, 800)) -> ClipOutputs:
    """Write result_dir/<stem>.npy, output_dir/<stem>.mp4 (with the speech) and output_dir/<stem>/
    frame_*.<export>. Everything is staged in temp files and moved into place only when all of it
    succeeded, so a failed render leaves no prediction behind either."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(len(vertices), -1)
    out = ClipOutputs(npy=Path(result_dir) / f"{stem}.npy")
    with contextlib.ExitStack() as stack:
        with open(stack.enter_context(atomic_path(out.npy)), "wb") as f:
            np.save(f, vertices)
        if export is not None:
            out.meshes = Path(output_dir) / stem
            out.mesh_count = export_meshes(stack.enter_context(atomic_folder(out.meshes)), vertices, faces, export)
        if render:
            from .render import render_sequence

            out.video = Path(output_dir) / f"{stem}.mp4"
            started = time.perf_counter()
            render_sequence(vertices, faces, stack.enter_context(atomic_path(out.video)), fps,
                            audio_path=audio_path, template=template, resolution=resolution,
                            progress=sys.stderr.isatty())
            out.render_seconds = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------------------------------- demo.py

def parse_condition(condition: str | None, unseen: bool, reference: str | None,
                    train_subjects: list[str]) -> str | None:
    """--condition / --unseen / --reference_motion -> a training subject or None (unseen).

    Without any of them: the first training subject; with only a reference clip: unseen, so the
    style comes from the clip alone."""
    if condition is not None and condition.lower() == "none":
        condition = None
        unseen = True
    if unseen and condition is not None:
        raise UserError(f"--unseen and --condition {condition} contradict each other: give one")
    if unseen or (condition is None and reference is not None):
        return None
    return condition if condition is not None else train_subjects[0]


def run_demo(args, bundled_model: Path, bundled_wav: Path) -> list[ClipOutputs]:
    """demo.py's work: flags -> checkpoint, style, template, audio -> outputs, with timings printed.

    Every audio file is decoded before the model loads: a bad file in a folder stops the run before
    anything is written. Outputs of one clip appear together or not at all."""
    _require_bundled_files(args, bundled_model, bundled_wav)
    checkpoint = find_checkpoint(args.checkpoint, args.dataset, args.model_name, bundled_model)
    files = audio_inputs(args.wav_path or bundled_wav)
    clips = [load_speech(p) for p in files]

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    animator = load_animator(checkpoint, pick_device(args.device))
    load_seconds = time.perf_counter() - started
    animator.check_flags(args.vertice_dim, args.feature_dim, args.period, args.fps,
                         None if args.train_subjects is None else args.train_subjects.split())
    condition = parse_condition(args.condition, args.unseen, args.reference_motion, animator.train_subjects)
    animator.condition_vector(condition)   # validates the name before any work
    reference = None if args.reference_motion is None else animator.reference_motion(args.reference_motion)
    subject, template = _face(args, animator, condition)
    if args.reference_subject is not None:
        if reference is None:
            raise UserError("--reference_subject names whose face --reference_motion was recorded on: give both")
        reference = animator.retarget(reference, animator.template(args.reference_subject), template)
    render = not args.no_render
    if render:
        from .render import select_backend

        select_backend()   # a missing OpenGL fails now, not after the inference

    style = f"speaker {condition}" if condition else "unseen speaker (from the audio)"
    if reference is not None:
        style = f"reference motion {args.reference_motion}" + (f" + {style}" if condition else "")
    print(f"checkpoint {checkpoint} loaded in {load_seconds:.2f} s on {animator.device} "
          f"({animator.fps} fps); style: {style}; face: {subject}")
    return _animate_clips(args, animator, files, clips, template, condition, reference, render)


def _require_bundled_files(args, bundled_model: Path, bundled_wav: Path) -> None:
    """The bundled model and sample must exist where the flags leave them to stand in."""
    if args.wav_path is None and args.checkpoint is None and args.dataset is None and args.model_name is None:
        missing = [str(p) for p in (bundled_model, bundled_wav) if not p.is_file()]
        if missing:
            raise UserError(f"without arguments the demo animates {bundled_wav} with {bundled_model}, but "
                            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
                            f"give --wav_path and --checkpoint (or --dataset/--model_name)")
    if args.wav_path is None and not bundled_wav.is_file():
        raise UserError(f"give --wav_path (the bundled sample {bundled_wav} is missing)")


def _face(args, animator: Animator, condition: str | None) -> tuple[str, np.ndarray]:
    """(name, neutral template) of the face to animate: --template's mesh, --subject, the first test
    subject, the condition's speaker, or the checkpoint's first template."""
    if args.template is not None and args.subject is not None:
        raise UserError("--subject and --template both name the face to animate: give one")
    if args.template is not None:
        return Path(args.template).name, animator.template_from_mesh(args.template)
    test_subjects = (args.test_subjects or "").split()
    subject = args.subject or (test_subjects[0] if test_subjects else None) or \
        (condition if condition in animator.templates else next(iter(animator.templates)))
    return subject, animator.template(subject)


def _animate_clips(args, animator: Animator, files: list[Path], clips: list[np.ndarray], template: np.ndarray,
                   condition: str | None, reference, render: bool) -> list[ClipOutputs]:
    """Animate the clips in batches of similar length and write each one's outputs, printing timings."""
    written: list[ClipOutputs] = []
    totals = dict(audio=0.0, inference=0.0, render=0.0)
    for group in length_groups([len(c) for c in clips], args.batch_size):
        started = time.perf_counter()
        predictions = animator.animate([clips[i] for i in group], template, condition, reference, len(group))
        inference = (time.perf_counter() - started) / len(group)   # a batch's time, shared by its clips
        for i, vertices in zip(group, predictions):
            out = write_clip(files[i].stem, vertices, animator.faces, animator.fps, args.result_path,
                             args.output_path, files[i], render, args.export, template, args.resolution)
            seconds = len(clips[i]) / SAMPLE_RATE
            totals["audio"] += seconds
            totals["inference"] += inference
            totals["render"] += out.render_seconds
            _print_clip(files[i].name, out, seconds, len(vertices), inference, len(group))
            written.append(out)
    if len(written) > 1:
        print(f"total: {len(written)} clips, {totals['audio']:.2f} s audio; inference {totals['inference']:.2f} s "
              f"(real-time factor {totals['inference'] / totals['audio']:.3f})"
              + (f"; render {totals['render']:.2f} s" if render else ""))
    return written


def _print_clip(name: str, out: ClipOutputs, seconds: float, frames: int, inference: float, batch: int) -> None:
    print(f"{name}: {seconds:.2f} s audio -> {frames} frames; inference {inference:.2f} s "
          f"(real-time factor {inference / seconds:.3f})"
          + (f"; render {out.render_seconds:.2f} s" if out.video else "")
          + (f" [batch of {batch}]" if batch > 1 else ""))
    for path in (out.npy, out.video):
        if path is not None:
            print(f"  wrote {path}")
    if out.meshes is not None:
        print(f"  wrote {out.mesh_count} meshes to {out.meshes}")
