"""A vertex sequence (and its speech) -> an H.264 + AAC mp4, rendered headless.

Render threads, each with its own GL context, draw interleaved frames which are collected in order
and piped to the ffmpeg process, which encodes the previous frames meanwhile (another core).
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import UserError
from .gl_context import select_backend
from .overlays import error_colors, frame_overlays
from .renderer import MeshRenderer, as_frames
from .video import open_video


@dataclass
class _Job:
    """What every frame of a video needs besides its index."""
    faces: np.ndarray
    framing: np.ndarray
    resolution: tuple[int, int]
    frames: np.ndarray
    truth: np.ndarray | None          # drawn in a left panel when not None
    errors: np.ndarray | None         # per-vertex distances colouring the prediction
    heatmap_max: float
    overlays: list
    antialias: bool


def _render_frames(job: _Job, indices: range) -> Iterator[np.ndarray]:
    """Frames `indices` of the job from one renderer (its GL context lives on the calling thread)."""
    panels = 1 if job.truth is None else 2
    with MeshRenderer(job.faces, job.framing, job.resolution, panels, job.antialias) as renderer:
        for t in indices:
            color = None if job.errors is None else error_colors(job.errors[t], job.heatmap_max)
            if job.truth is None:
                image = renderer.render([job.frames[t]], [color])
            else:
                image = renderer.render([job.truth[t], job.frames[t]], [None, color])
            for x, y, patch in job.overlays:
                image[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
            yield image


def default_workers() -> int:
    """Two render threads where two cores are usable: Mesa's software rasteriser does vertex
    processing and triangle setup on the drawing thread, so a second context overlaps that work
    (on a busy 2-core machine: median +25% frames/s for FLAME, +8% for BIWI, ~7% more CPU)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(2, cores)


def _stream(job: _Job, workers: int) -> Iterator[np.ndarray]:
    """The frames of `job` in order; with several workers, thread k renders frames k, k + workers, ...
    on its own context (GL calls release the GIL) and the caller collects them round-robin."""
    if workers <= 1:
        yield from _render_frames(job, range(len(job.frames)))
        return
    stop = threading.Event()
    outboxes = [queue.Queue(maxsize=4) for _ in range(workers)]

    def offer(outbox: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                outbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work(worker: int) -> None:
        frames = _render_frames(job, range(worker, len(job.frames), workers))
        try:
            with contextlib.closing(frames):
                for image in frames:
                    if not offer(outboxes[worker], image):
                        return
        except BaseException as exc:  # handed to the caller, which re-raises it
            offer(outboxes[worker], exc)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for t in range(len(job.frames)):
            item = outboxes[t % workers].get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def render_sequence(vertices: np.ndarray, faces: np.ndarray, out_path: str | os.PathLike, fps: float,
                    audio_path: str | os.PathLike | None = None, gt: np.ndarray | None = None,
                    heatmap: bool = False, heatmap_max: float | None = None, side_by_side: bool = True,
                    resolution: tuple[int, int] = (800, 800), template: np.ndarray | None = None,
                    antialias: bool = False, workers: int | None = None, progress: bool = True) -> Path:
    """Render a vertex sequence to an H.264 mp4 (with the audio track as AAC when given).

    vertices / gt: (T, V*3) or (T, V, 3) of the same length T. With gt, the video shows ground
    truth | prediction side by side (unless side_by_side=False); heatmap=True colours the prediction
    by per-vertex distance to gt, up to heatmap_max (default: 99th percentile of the distances).
    The camera frames `template` ((V, 3), default the first frame) from the front (+z).
    resolution: (width, height) of one panel, rounded up to even. antialias: 4x multisampling
    (about twice the CPU time in software). workers: render threads, each with its own GL context
    (default: default_workers()). The mp4 is written atomically; returns its path.
    """
    faces = np.asarray(faces)
    frames = as_frames(vertices)
    num_vertices = frames.shape[1]
    truth = None if gt is None else as_frames(gt, num_vertices, "ground-truth vertices")
    if truth is not None and len(truth) != len(frames):
        raise UserError(f"ground truth has {len(truth)} frames, the prediction {len(frames)}")
    if heatmap and truth is None:
        raise UserError("the error heat-map needs ground-truth vertices")
    if template is None:
        framing = (truth if truth is not None else frames)[0]
    else:
        framing = as_frames(np.asarray(template)[None], num_vertices, "template vertices")[0]
    errors = None
    if heatmap:
        errors = np.linalg.norm(frames - truth, axis=2)
        if heatmap_max is None:
            heatmap_max = float(np.percentile(errors, 99)) or 1.0
        if heatmap_max <= 0:
            raise UserError(f"heat-map maximum must be positive, got {heatmap_max}")
    panels = 2 if truth is not None and side_by_side else 1
    width, height = (int(x) + int(x) % 2 for x in resolution)
    job = _Job(faces=faces, framing=framing, resolution=(width, height), frames=frames,
               truth=truth if panels == 2 else None, errors=errors, heatmap_max=heatmap_max or 0.0,
               overlays=frame_overlays(width, height, panels, heatmap_max if heatmap else None),
               antialias=antialias)
    workers = max(1, min(default_workers() if workers is None else workers, len(frames)))
    select_backend()  # before the worker threads, which would otherwise each probe

    from tqdm import tqdm

    with open_video(out_path, width * panels, height, fps, audio_path, len(frames)) as write, \
            contextlib.closing(_stream(job, workers)) as images:
        for image in tqdm(images, total=len(frames), desc=Path(out_path).name, unit="frame",
                          disable=not progress, leave=False):
            write(image)
    return Path(out_path)
