"""Animate speech while it arrives, with a bounded look-ahead.

    stream = SpeechStream(load_animator("demo/models/synthtalk.pth"), template, lookahead_ms=200)
    for chunk in chunks:                    # any sizes of 16 kHz mono float audio
        frames = stream.push(chunk)         # (n, V*3): the frames that became final
    frames = stream.finish()                # the rest

Frame t (speech [t/fps, (t+1)/fps)) becomes final once the audio reaches its end plus the look-ahead.
Its speech features come from encoding a window that starts `context_ms` of speech before it and
ends exactly that look-ahead after it, so the speech encoder (bidirectional inside the window) never
sees further ahead; the decoder then takes the frame's one step on its fixed-size state. The audio
kept is the context plus what is not final yet, and the decoder keeps its attention window: memory
is bounded for any stream length. With a look-ahead at least as long as the stream nothing is final
before `finish()`, which encodes the whole speech as `generate` does: the frames are the offline ones.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from models.audio import SAMPLE_RATE
from models.ptalker import at_most_threads

from .inference import Animator

MAX_CHUNK_SECONDS = 30.0   # one push longer than this is refused: a stream sends small chunks
LOOKAHEAD_MS = 200.0       # defaults: within 10% of offline quality on SynthTalk's held-out sentences,
CONTEXT_MS = 1000.0        # at a real-time cost on a 2-core CPU (docs/live.md)


class StreamError(ValueError):
    """A chunk the stream cannot take; the stream is left as it was and stays usable."""


class SpeechStream:
    """One speech stream animated frame by frame; see the module's docstring."""

    def __init__(self, animator: Animator, template: np.ndarray, condition: str | None = None,
                 reference: np.ndarray | None = None, lookahead_ms: float = LOOKAHEAD_MS, context_ms: float = CONTEXT_MS):
        if not (lookahead_ms >= 0 and 0 <= context_ms < math.inf):
            raise StreamError(f"look-ahead and context must be >= 0 ms, got {lookahead_ms} and {context_ms}")
        model = self.model = animator.model
        self.device = animator.device
        self.lookahead_ms, self.context_ms = lookahead_ms, context_ms
        self.ratio, self.fps = model.config.audio_frames_per_frame, model.config.fps
        self.lookahead = round(lookahead_ms * SAMPLE_RATE / 1000) if math.isfinite(lookahead_ms) else math.inf
        # windows start on frames whose first sample is a whole sample (30 fps: every third frame)
        self.grid = self.fps // math.gcd(SAMPLE_RATE, self.fps)
        self.context_frames = math.ceil(context_ms / 1000 * self.fps / self.grid) * self.grid
        self.template = torch.as_tensor(animator._checked(template, "template"), device=self.device).reshape(1, -1)
        one_hot = animator.condition_vector(condition)
        fixed = None
        if reference is not None and model.config.use_style:
            ref = torch.as_tensor(np.asarray(reference, np.float32).reshape(1, len(reference), -1), device=self.device)
            with torch.no_grad():
                fixed = model.reference_style(ref, self.template)
        self._start = (one_hot, fixed)
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far: the next push starts a new one."""
        with torch.no_grad():
            self.state = self.model.start_decoding(self.template, *self._start)
        self.audio = np.zeros(0, np.float32)   # samples from absolute sample `self.offset` on
        self.offset = 0
        self.received = 0
        self.done = 0                           # frames returned so far
        self.style_floor = None                 # running max of the speech features of those frames

    # ------------------------------------------------------------------ frame geometry

    def frame_start(self, frame: int) -> int:
        """First sample of a frame (a whole sample for frames on the window grid)."""
        return round(frame * SAMPLE_RATE / self.fps)

    def frame_end(self, frame: int) -> int:
        """Samples the encoder needs to compute a frame: its speech, or with two audio steps per frame
        the receptive field of its second step."""
        if self.ratio == 2:
            return (2 * frame + 1) * self.model.audio.stride + self.model.audio.field
        return math.ceil((frame + 1) * SAMPLE_RATE / self.fps)

    def final_frames(self) -> int:
        """How many frames the audio received so far makes final."""
        if self.lookahead == math.inf:
            return self.done
        n = self.done
        while self.frame_end(n) + self.lookahead <= self.received:
            n += 1
        return n

    # ------------------------------------------------------------------ the stream

    def push(self, pcm) -> np.ndarray:
        """A chunk of 16 kHz mono float audio (n,) -> the frames that became final (k, V*3) float32."""
        chunk = checked_chunk(pcm)
        self.audio = np.concatenate([self.audio, chunk])
        self.received += len(chunk)
        frames = [self._emit(t, self.frame_end(t) + self.lookahead) for t in range(self.done, self.final_frames())]
        return self._frames(frames)

    def finish(self) -> np.ndarray:
        """The remaining frames (k, V*3), as many as `generate` gives the whole speech; then reset."""
        total = self.model.frame_count(self.received)
        if self.received < self.model.audio.field or total <= self.done:
            out = self._frames([])
        else:
            out = self._frames([self._decode_window(self.done, total, self.received, total)])
        self.reset()
        return out

    def _emit(self, frame: int, end: int) -> np.ndarray:
        """Frame `frame` from a window of speech that ends at sample `end` -> (1, V*3)."""
        return self._decode_window(frame, frame + 1, end, None)

    def _decode_window(self, first: int, stop: int, end: int, total: int | None) -> np.ndarray:
        """Encode the speech from the context before `first` up to sample `end`, then decode frames
        first..stop-1 -> (stop - first, V*3). `total`: the stream's frame count when `end` is its end."""
        start_frame = max(0, first - self.context_frames) // self.grid * self.grid
        begin = self.frame_start(start_frame)
        window = self.audio[begin - self.offset: end - self.offset]
        frames = (total - start_frame) if total is not None else self.model.frame_count(len(window))
        # one thread: a frame's work is too small to split, and a second thread's waits cost more
        with torch.no_grad(), at_most_threads(1):
            audio = torch.from_numpy(np.ascontiguousarray(window)).to(self.device).unsqueeze(0)
            ctx = self.model.encode_audio(audio, frames, style_floor=self.style_floor)
            out = []
            for t in range(first, stop):
                self.model.feed_frame(self.state, ctx, t - start_frame, t)
                out.append(self.model.decode_step(self.state) + self.template.unsqueeze(1))
            if ctx.style_max is not None:
                self.style_floor = ctx.style_max[:, stop - 1 - start_frame]
        self.done = stop
        self._trim()
        return torch.cat(out, dim=1)[0].float().cpu().numpy()

    def _trim(self) -> None:
        """Drop the audio no later window will start before."""
        keep = self.frame_start(max(0, self.done - self.context_frames) // self.grid * self.grid)
        if keep > self.offset:
            self.audio = self.audio[keep - self.offset:]
            self.offset = keep

    def _frames(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.template.shape[1]), np.float32)
        return np.concatenate(parts)


def checked_chunk(pcm) -> np.ndarray:
    """A chunk as given -> (n,) float32, or StreamError saying what is wrong with it."""
    array = np.asarray(pcm)
    if array.dtype not in (np.float32, np.float64):
        raise StreamError(f"audio chunks must be float32 or float64 PCM in [-1, 1], got {array.dtype}")
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise StreamError(f"audio chunks must be mono (n,) arrays, got shape {array.shape}")
    if len(array) == 0:
        raise StreamError("empty audio chunk")
    if len(array) > MAX_CHUNK_SECONDS * SAMPLE_RATE:
        raise StreamError(f"audio chunk of {len(array) / SAMPLE_RATE:.1f} s: push at most "
                          f"{MAX_CHUNK_SECONDS:g} s at a time")
    if not np.isfinite(array).all():
        raise StreamError("audio chunk holds NaN or infinite samples")
    return array.astype(np.float32, copy=False)
