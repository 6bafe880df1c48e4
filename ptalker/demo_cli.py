"""demo.py's work: its flags -> the checkpoint, the audio files, the style and the face to animate;
then the library (`ptalker.inference`) animates the clips and writes their outputs while this module
prints what was loaded, written and how long it took."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .device import pick_device
from .errors import UserError
from .inference import Animator, ClipOutputs, length_groups, load_animator, load_speech, write_clip

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac")


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


def check_flags(animator: Animator, vertice_dim: int | None = None, feature_dim: int | None = None,
                period: int | None = None, fps: int | None = None,
                train_subjects: list[str] | None = None) -> None:
    """Flags are optional (the checkpoint carries the config); given ones must agree with it."""
    config = animator.model.config
    for flag, given in (("vertice_dim", vertice_dim), ("feature_dim", feature_dim), ("period", period),
                        ("fps", fps)):
        if given is not None and given != getattr(config, flag):
            raise UserError(f"--{flag} {given} does not match checkpoint {animator.path} "
                            f"({flag} {getattr(config, flag)})")
    # conditions are looked up by name, so only the set of subjects has to agree
    if train_subjects is not None and set(train_subjects) != set(animator.train_subjects):
        raise UserError(f"--train_subjects {' '.join(train_subjects)} do not match checkpoint {animator.path}, "
                        f"trained on {' '.join(animator.train_subjects)}")


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


def run_demo(args, bundled_model: Path, bundled_wav: Path, arkit_rig=None) -> list[ClipOutputs]:
    """demo.py's work: flags -> checkpoint, style, template, audio -> outputs, with timings printed.

    Every audio file is decoded before the model loads: a bad file in a folder stops the run before
    anything is written. Outputs of one clip appear together or not at all. `arkit_rig`: what builds
    `--export arkit`'s rig for a face (see ptalker.export.ExportOptions)."""
    _require_bundled_files(args, bundled_model, bundled_wav)
    checkpoint = find_checkpoint(args.checkpoint, args.dataset, args.model_name, bundled_model)
    files = audio_inputs(args.wav_path or bundled_wav)
    clips = [load_speech(p) for p in files]

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    animator = load_animator(checkpoint, pick_device(args.device))
    load_seconds = time.perf_counter() - started
    check_flags(animator, args.vertice_dim, args.feature_dim, args.period, args.fps,
                None if args.train_subjects is None else args.train_subjects.split())
    condition = parse_condition(args.condition, args.unseen, args.reference_motion, animator.train_subjects)
    animator.condition_vector(condition)   # validates the name before any work
    reference = None if args.reference_motion is None else animator.reference_motion(args.reference_motion)
    subject, template = _face(args, animator, condition)
    if args.reference_subject is not None:
        if reference is None:
            raise UserError("--reference_subject names whose face --reference_motion was recorded on: give both")
        reference = animator.retarget(reference, animator.template(args.reference_subject), template)
    rig, export_options = _export_setup(args, animator, template, arkit_rig)
    render = not args.no_render
    if render:
        from .gl_context import select_backend

        select_backend()   # a missing OpenGL fails now, not after the inference

    style = f"speaker {condition}" if condition else "unseen speaker (from the audio)"
    if reference is not None:
        style = f"reference motion {args.reference_motion}" + (f" + {style}" if condition else "")
    print(f"checkpoint {checkpoint} loaded in {load_seconds:.2f} s on {animator.device} "
          f"({animator.fps} fps); style: {style}; face: {subject}")
    return _animate_clips(args, animator, files, clips, template, condition, reference, render,
                          (rig, export_options))


def _stream_clips(args, animator: Animator, files: list[Path], clips: list[np.ndarray], template: np.ndarray,
                  condition: str | None, reference) -> list[np.ndarray]:
    """--stream: each clip through a SpeechStream chunk by chunk; writes <result_path>/<stem>_latency.json
    and prints the figures as one line."""
    from .fileio import save_json
    from .latency import stream_clip
    from .streaming import SpeechStream, StreamError

    if not args.chunk_ms > 0:
        raise UserError(f"--chunk_ms must be > 0, got {args.chunk_ms:g}")
    try:
        stream = SpeechStream(animator, template, condition, reference, args.lookahead_ms, args.context_ms)
    except StreamError as exc:
        raise UserError(f"--lookahead_ms / --context_ms: {exc}") from None
    out = []
    for path, pcm in zip(files, clips):
        vertices, report = stream_clip(stream, pcm, args.chunk_ms, args.realtime)
        save_json(Path(args.result_path) / f"{path.stem}_latency.json", report.to_dict())
        print(f"{path.name}: {report.line()}")
        out.append(vertices)
    return out


def _export_setup(args, animator: Animator, template: np.ndarray, arkit_rig=None):
    """--rig / --export arkit / --export_tolerance_mm -> (the rig or None, ExportOptions), checked before
    any clip is animated: a bad rig fails the run at once."""
    from .export import ExportOptions, load_export_rig
    from .rig import check_vertices

    options = ExportOptions(rig=getattr(args, "rig", None),
                            tolerance_mm=getattr(args, "export_tolerance_mm", 0.1),
                            smoothing=getattr(args, "rig_smoothing", 0.0), arkit_rig=arkit_rig)
    options.check()
    rig = load_export_rig(list(args.export or []), options, template, animator.faces)
    if rig is not None:
        check_vertices(rig, animator.num_vertices)
    return rig, options


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
                   condition: str | None, reference, render: bool, exporting=(None, None)) -> list[ClipOutputs]:
    """Animate the clips in batches of similar length and write each one's outputs, printing timings."""
    written: list[ClipOutputs] = []
    totals = dict(audio=0.0, inference=0.0, render=0.0)
    for group in length_groups([len(c) for c in clips], args.batch_size):
        started = time.perf_counter()
        predictions = _stream_clips(args, animator, [files[i] for i in group], [clips[i] for i in group],
                                    template, condition, reference) if args.stream else \
            animator.animate([clips[i] for i in group], template, condition, reference, len(group), args.fused)
        inference = (time.perf_counter() - started) / len(group)   # a batch's time, shared by its clips
        for i, vertices in zip(group, predictions):
            out = write_clip(files[i].stem, vertices, animator.faces, animator.fps, args.result_path,
                             args.output_path, files[i], render, args.export, template, args.resolution,
                             export_options=exporting[1], rig=exporting[0])
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
    for path in out.exports:
        print(f"  wrote {path}")
    for note in out.notes:
        print(f"  {note}")
