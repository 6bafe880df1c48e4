"""Play a clip into a SpeechStream chunk by chunk, as a live source would, and measure the latency.

A live source delivers chunk k (samples k*c .. (k+1)*c - 1) at (k+1)*c / 16 kHz after it starts.
With `realtime` the chunks are pushed at those times (sleeping in between) and everything is wall
time. Without it they are pushed back to back and the same timeline is computed from each push's
measured compute time: a push starts when its chunk has arrived and the previous push is done, and
ends its compute time later, which is what pacing would give, without waiting for it.

Figures (milliseconds): `first_frame_ms` from the first chunk's arrival to the first frame returned;
per push the compute time; per frame the end-to-end delay from the arrival of the chunk that holds
the end of the frame's speech to the return of the frame (look-ahead, chunking and compute together).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from models.audio import SAMPLE_RATE

from .streaming import SpeechStream


@dataclass
class LatencyReport:
    lookahead_ms: float
    chunk_ms: float
    realtime: bool
    frames: int
    audio_seconds: float
    first_frame_ms: float
    compute_ms: dict       # p50, p99, max over pushes (finish included)
    delay_ms: dict         # p50, p99, max over frames
    frame_delays_ms: list = field(default_factory=list, repr=False)   # each frame's, for pooling clips
    push_compute_ms: list = field(default_factory=list, repr=False)   # each push's

    def to_dict(self) -> dict:
        """The summary figures (the per-frame and per-push lists left out)."""
        return {k: v for k, v in asdict(self).items() if k not in ("frame_delays_ms", "push_compute_ms")}

    def line(self) -> str:
        """One line of the figures, as the demo prints them."""
        return (f"look-ahead {self.lookahead_ms:g} ms, chunks {self.chunk_ms:g} ms"
                f"{' (real time)' if self.realtime else ''}: first frame {self.first_frame_ms:.0f} ms; "
                f"delay p50/p99/max {_triple(self.delay_ms)} ms; compute per chunk p50/p99/max "
                f"{_triple(self.compute_ms)} ms")


def _triple(stats: dict) -> str:
    return "/".join(f"{stats[k]:.1f}" for k in ("p50", "p99", "max"))


def percentiles(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64) if values else np.zeros(1)
    return {"p50": float(np.percentile(array, 50)), "p99": float(np.percentile(array, 99)),
            "max": float(array.max())}


def stream_clip(stream: SpeechStream, pcm: np.ndarray, chunk_ms: float = 20.0,
                realtime: bool = False) -> tuple[np.ndarray, LatencyReport]:
    """pcm (S,) 16 kHz -> (the frames (T, V*3) the stream returned, its LatencyReport)."""
    size = max(1, round(chunk_ms * SAMPLE_RATE / 1000))
    if len(pcm) == 0:
        raise ValueError("no audio to stream")
    starts = range(0, len(pcm), size)
    arrival = [min(s + size, len(pcm)) / SAMPLE_RATE for s in starts]   # seconds after the source starts
    clock_zero = time.perf_counter()
    done_at, compute, parts, returned = 0.0, [], [], []   # returned: (frames so far, return time)
    for k, s in enumerate(starts):
        if realtime:
            time.sleep(max(0.0, clock_zero + arrival[k] - time.perf_counter()))
        began = time.perf_counter()
        frames = stream.push(pcm[s: s + size])
        if k == len(arrival) - 1:
            frames = np.concatenate([frames, stream.finish()])
        seconds = time.perf_counter() - began
        compute.append(seconds)
        done_at = (time.perf_counter() - clock_zero) if realtime else max(arrival[k], done_at) + seconds
        parts.append(frames)
        returned.append((sum(len(p) for p in parts), done_at))
    vertices = np.concatenate(parts)
    delays, first = [], None
    frame_index = 0
    for count, at in returned:
        for t in range(frame_index, count):
            end = min(stream.frame_end(t), len(pcm))   # the sample that completes the frame's speech
            delays.append(at - arrival[(end - 1) // size])
            first = at if first is None else first
        frame_index = count
    report = LatencyReport(lookahead_ms=stream.lookahead_ms, chunk_ms=chunk_ms, realtime=realtime,
                           frames=len(vertices), audio_seconds=len(pcm) / SAMPLE_RATE,
                           first_frame_ms=1000 * ((first if first is not None else done_at) - arrival[0]),
                           compute_ms=percentiles([1000 * c for c in compute]),
                           delay_ms=percentiles([1000 * d for d in delays]),
                           frame_delays_ms=[1000 * d for d in delays], push_compute_ms=[1000 * c for c in compute])
    return vertices, report
