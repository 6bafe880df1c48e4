"""H.264 + AAC mp4 writing through the ffmpeg binary shipped by imageio-ffmpeg.

Raw RGB frames go down a pipe from a background thread, so the caller renders the next frame while
ffmpeg (a separate process, i.e. another core) encodes the previous ones.
"""
from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import UserError
from .fileio import atomic_path


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _rate(fps: float) -> str:
    """fps as an ffmpeg rational (30 -> 30/1, 29.97 -> 2997/100), so no rounding to an integer."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def ffmpeg_command(out_path: str | os.PathLike, width: int, height: int, fps: float,
                   audio_path: str | os.PathLike | None = None, num_frames: int | None = None,
                   crf: int = 18, preset: str = "veryfast") -> list[str]:
    """The ffmpeg call that reads rgb24 frames from stdin and writes an mp4 (audio trimmed/padded
    to exactly num_frames / fps seconds)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _rate(fps),
           "-i", "pipe:0"]
    if audio_path is not None:
        if num_frames is None:
            raise ValueError("num_frames is needed to cut the audio to the video length")
        duration = num_frames / float(Fraction(_rate(fps)))
        cmd += ["-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0",
                # apad then atrim: silence-pads a short track and cuts a long one to the frame count
                "-af", f"apad,atrim=duration={duration:.6f}", "-c:a", "aac", "-b:a", "160k"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(out_path)]
    return cmd


class _PipeFeeder:
    """Writes frames to a pipe from a thread (the write releases the GIL, so rendering continues)."""

    def __init__(self, pipe, depth: int = 4):
        self._pipe = pipe
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._error is None:
                try:
                    self._pipe.write(memoryview(frame).cast("B"))
                except OSError as exc:  # ffmpeg exited (e.g. undecodable audio)
                    self._error = exc  # keep draining so the producer never blocks forever

    def write(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        with contextlib.suppress(OSError):
            self._pipe.close()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def open_video(out_path: str | os.PathLike, width: int, height: int, fps: float,
               audio_path: str | os.PathLike | None = None, num_frames: int | None = None,
               crf: int = 18, preset: str = "veryfast") -> Iterator[Callable[[np.ndarray], None]]:
    """Yield `write(frame)` taking (height, width, 3) uint8 RGB frames. Frames are queued, not
    copied: a frame must not be modified after it was written.

    The mp4 appears at `out_path` only when the block completes and ffmpeg succeeds; on any error
    (or interruption) ffmpeg is killed and the partial file removed.
    """
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs even dimensions, got {width}x{height}")
    if fps <= 0:
        raise UserError(f"fps must be positive, got {fps}")
    if audio_path is not None and not Path(audio_path).is_file():
        raise UserError(f"audio file not found: {audio_path}")
    with atomic_path(out_path) as tmp, tempfile.TemporaryFile() as log:
        cmd = ffmpeg_command(tmp, width, height, fps, audio_path, num_frames, crf, preset)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        feeder = _PipeFeeder(proc.stdin)
        expected = (height, width, 3)

        def failure() -> UserError:
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            return UserError(f"ffmpeg could not write {out_path}: {reason}")

        def write(frame: np.ndarray) -> None:
            if frame.shape != expected or frame.dtype != np.uint8:
                raise ValueError(f"frame must be {expected} uint8, got {frame.shape} {frame.dtype}")
            try:
                feeder.write(np.ascontiguousarray(frame))
            except OSError:
                proc.wait()
                raise failure() from None

        completed = False
        pipe_error = None
        try:
            yield write
            completed = True
        finally:
            if not completed:
                proc.kill()  # also unblocks the feeder thread if it is mid-write
            try:
                feeder.finish()
            except OSError as exc:
                pipe_error = exc
            proc.wait()
        if proc.returncode != 0 or pipe_error is not None:
            raise failure()
