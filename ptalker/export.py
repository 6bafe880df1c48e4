"""Animation exports of one clip, beside its video: a glTF file with morph targets (`glb`), a page that
plays it (`html`), and blendshape weights for a rig (`--rig RIG.glb`, or `arkit`: an ARKit rig built for the
animated face by `ExportOptions.arkit_rig`, which the caller that knows the face supplies: demo.py
passes SynthTalk's). Every file is staged in the caller's ExitStack (atomic_path), so a clip's outputs
appear together or not at all.

    <stem>.glb + <stem>.wav           glb: the face, a compact morph basis, one keyframe per frame
    <stem>.html                       html: glb and speech embedded
    <stem>_weights.csv, <stem>_rig.glb    rig / arkit: Live Link Face CSV and the rig animated
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_path

ANIMATION_FORMATS = ("glb", "html", "arkit")


@dataclass
class ExportOptions:
    rig: str | os.PathLike | None = None    # --rig RIG.glb
    tolerance_mm: float = 0.1               # --export_tolerance_mm
    smoothing: float = 0.0                  # --rig_smoothing
    # `arkit`: (template (V, 3), faces (F, 3)) -> the glTF (document, binary) of an ARKit-named rig
    arkit_rig: Callable[[np.ndarray, np.ndarray], tuple[dict, bytes]] | None = None

    def check(self) -> None:
        if not self.tolerance_mm > 0:
            raise UserError(f"--export_tolerance_mm must be positive, got {self.tolerance_mm}")
        if not self.smoothing >= 0:
            raise UserError(f"--rig_smoothing must be 0 or more, got {self.smoothing}")


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def speech_wav(audio_path: str | os.PathLike) -> bytes:
    """Any speech file -> the bytes of a 16 kHz mono 16-bit wav (what the page and the glb sit beside)."""
    import io

    import soundfile

    from .audio import SAMPLE_RATE, load_audio

    buffer = io.BytesIO()
    soundfile.write(buffer, load_audio(audio_path), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def animation_glb(stem: str, frames: np.ndarray, faces: np.ndarray, fps: float, base: np.ndarray | None,
                  tolerance_mm: float, audio_name: str | None) -> tuple[bytes, int, float]:
    """frames (T, V, 3) -> (.glb bytes, number of morph targets, max reconstruction error in mm).

    base: the neutral face (V, 3) the targets are offsets from; None: the clip's mean frame."""
    from .glb_animation import animation_document
    from .gltf import glb_bytes
    from .morph_basis import fit_morph_basis

    base = frames.mean(axis=0) if base is None else np.asarray(base, np.float32).reshape(-1, 3)
    basis = fit_morph_basis(frames, base, tolerance_mm / 1000.0)
    extras = {"fps": fps, "frames": len(frames), "tolerance_mm": tolerance_mm}
    if audio_name is not None:
        extras["audio"] = audio_name
    data = glb_bytes(*animation_document(base, faces, basis, fps, stem, extras=extras))
    return data, len(basis.targets), basis.max_error * 1000.0


def load_export_rig(formats: list[str], options: ExportOptions, template: np.ndarray | None, faces: np.ndarray):
    """The rig of `--rig` or of `arkit` (options.arkit_rig's, for the animated face); None without either.
    Loaded once, before any clip is animated, so a bad rig fails the run at once."""
    from .rig import Rig, load_rig

    if options.rig is not None and "arkit" in formats:
        raise UserError("--export arkit uses the bundled SynthTalk ARKit rig and --rig names another: give one")
    if options.rig is not None:
        return load_rig(options.rig)
    if "arkit" not in formats:
        return None
    if template is None:
        raise UserError("--export arkit needs the animated face's neutral template")
    if options.arkit_rig is None:
        raise UserError("--export arkit has no ARKit rig for this face: give a rig of your own with --rig RIG.glb")
    from .glb_animation import read_morph_mesh
    from .gltf import Glb

    glb = Glb(*options.arkit_rig(template, faces), path=Path("ARKit rig"))
    return Rig(read_morph_mesh(glb), glb)


def export_animation(stack: contextlib.ExitStack, stem: str, vertices: np.ndarray, faces: np.ndarray, fps: float,
                     output_dir: str | os.PathLike, formats: list[str], options: ExportOptions,
                     audio_path: str | os.PathLike | None = None, template: np.ndarray | None = None,
                     truth: np.ndarray | None = None, rig=None) -> ExportResult:
    """Stage the animation exports of one clip (vertices (T, V*3)) in `stack`; see the module docstring."""
    options.check()
    if rig is None:
        rig = load_export_rig(formats, options, template, faces)
    output_dir = Path(output_dir)
    frames = np.asarray(vertices, np.float32).reshape(len(vertices), -1, 3)
    result = ExportResult()
    wav = speech_wav(audio_path) if audio_path is not None and {"glb", "html"} & set(formats) else None

    def stage(name: str, data: bytes) -> None:
        path = output_dir / name
        Path(stack.enter_context(atomic_path(path))).write_bytes(data)
        result.files.append(path)

    if {"glb", "html"} & set(formats):
        glb, k, error = animation_glb(stem, frames, faces, fps, template, options.tolerance_mm,
                                      None if wav is None else f"{stem}.wav")
        result.notes.append(f"{k} morph targets reproduce every vertex within {error:.4f} mm")
        if "glb" in formats:
            stage(f"{stem}.glb", glb)
            if wav is not None:
                stage(f"{stem}.wav", wav)
        if "html" in formats:
            stage(f"{stem}.html", _page(stem, frames, faces, fps, template, options, glb, wav, truth).encode("utf-8"))
    if rig is not None:
        _export_rig(stage, result, stem, frames, fps, template, options, rig)
    return result


def _page(stem, frames, faces, fps, template, options, glb, wav, truth) -> str:
    from .web_page import camera_of, error_scale, player_page

    truth_glb, error_max = None, 1.0
    if truth is not None:
        truth = np.asarray(truth, np.float32).reshape(len(truth), -1, 3)
        truth_glb = animation_glb(f"{stem}_truth", truth, faces, fps, template, options.tolerance_mm, None)[0]
        error_max = error_scale(frames, truth)
    return player_page(stem, glb, fps, len(frames), camera_of(frames[0] if template is None else template),
                       audio_wav=wav, truth_glb=truth_glb, error_max=error_max)


def _export_rig(stage, result: ExportResult, stem, frames, fps, template, options, rig) -> None:
    from .gltf import glb_bytes
    from .rig import check_vertices, live_link_csv, rig_animation_document, solve_weights

    check_vertices(rig, frames.shape[1])
    # the predicted offsets: from the animated face's neutral pose when known, else from the rig's own
    neutral = rig.mesh.base if template is None else np.asarray(template, np.float32).reshape(-1, 3)
    fit = solve_weights(rig, frames - neutral[None], options.smoothing)
    stage(f"{stem}_weights.csv", live_link_csv(rig.names, fit.weights, fps).encode("utf-8"))
    stage(f"{stem}_rig.glb", glb_bytes(*rig_animation_document(rig, fit.weights, fps, stem)))
    result.notes.append(fit.summary())
