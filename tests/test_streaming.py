"""Live animation: speech pushed in chunks through SpeechStream, with a bounded look-ahead."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import clip, make_model
from ptalker.inference import Animator
from ptalker.latency import stream_clip
from ptalker.streaming import SpeechStream, StreamError

SUBJECTS = ["S1", "S2", "S3"]


@pytest.fixture(scope="module", params=[1, 2], ids=["ratio1", "ratio2"])
def setup(request, tiny_wav2vec2):
    """(animator, template (V, 3), speech (S,), reference motion (12, V, 3)) for each audio ratio."""
    model, template = make_model(tiny_wav2vec2, request.param)
    animator = Animator(model, SUBJECTS, np.zeros((1, 3), np.int64), {}, path=_path("tiny.pth"))
    audio, motion = clip(25, template=template, ratio=request.param)
    return animator, template.numpy().reshape(-1, 3), audio[0].numpy(), motion[0, :12].numpy().reshape(12, -1, 3)


def _path(name):
    from pathlib import Path

    return Path(name)


MODES = {"seen": dict(condition="S2"), "unseen": {}, "reference": dict(condition="S2", reference=True)}


def _options(mode: str, reference: np.ndarray) -> dict:
    options = dict(MODES[mode])
    if options.pop("reference", False):
        options["reference"] = reference
    return options


def _offline(animator, template, speech, options) -> np.ndarray:
    return animator.animate([speech], template, options.get("condition"), options.get("reference"))[0]


def _streamed(stream: SpeechStream, speech: np.ndarray, chunk: int) -> np.ndarray:
    parts = [stream.push(speech[i: i + chunk]) for i in range(0, len(speech), chunk)]
    return np.concatenate(parts + [stream.finish()])


@pytest.mark.parametrize("mode", list(MODES))
def test_full_lookahead_gives_the_offline_frames_at_any_chunk_size(setup, mode):
    animator, template, speech, reference = setup
    options = _options(mode, reference)
    offline = _offline(animator, template, speech, options)
    stream = SpeechStream(animator, template, lookahead_ms=float("inf"), **options)
    for chunk in (1, 320, 5328):   # one sample, 20 ms, 333 ms
        streamed = _streamed(stream, speech, chunk)   # finish() resets: the same stream runs again
        assert streamed.shape == offline.shape
        assert np.abs(streamed - offline).max() <= 1e-4, chunk


def test_a_frame_never_depends_on_speech_beyond_its_lookahead(setup):
    animator, template, speech, _ = setup
    stream = SpeechStream(animator, template, "S1", lookahead_ms=100)
    cut = len(speech) // 2
    changed = speech.copy()
    changed[cut:] = np.random.default_rng(1).normal(size=len(speech) - cut).astype(np.float32)
    a, b = _streamed(stream, speech, 320), _streamed(stream, changed, 320)
    # frames whose speech plus 100 ms ends before the cut are final before it: identical
    before = [t for t in range(len(a)) if stream.frame_end(t) + stream.lookahead <= cut]
    assert len(before) >= 5
    assert np.array_equal(a[before], b[before])
    assert not np.allclose(a[before[-1] + 1:], b[before[-1] + 1:])
    # and they are final as soon as that audio is in: pushed up to the cut, exactly those come back
    assert len(stream.push(speech[:cut])) == len(before)
    stream.reset()


def test_frames_come_out_as_the_lookahead_allows(setup):
    animator, template, speech, _ = setup
    stream = SpeechStream(animator, template, "S1", lookahead_ms=200)
    counts = [len(stream.push(speech[i: i + 320])) for i in range(0, len(speech), 320)]
    rest = len(stream.finish())
    assert sum(counts) + rest == len(_offline(animator, template, speech, {"condition": "S1"}))
    assert counts[: 200 // 20] == [0] * 10      # nothing before the first frame plus 200 ms has arrived
    assert 0 < rest <= 200 / 1000 * animator.fps + 2


def test_bad_chunks_are_refused_and_leave_the_stream_usable(setup):
    animator, template, speech, _ = setup
    clean = SpeechStream(animator, template, "S1", lookahead_ms=100)
    expected = _streamed(clean, speech, 320)
    stream = SpeechStream(animator, template, "S1", lookahead_ms=100)
    half = len(speech) // 2
    parts = [stream.push(speech[:half])]
    bad = {"int16": (speech[:320] * 3e4).astype(np.int16), "NaN": np.full(320, np.nan, np.float32),
           "empty": np.zeros(0, np.float32), "huge": np.zeros(31 * 16000, np.float32),
           "stereo": np.zeros((320, 2), np.float32), "inf": np.array([np.inf], np.float32)}
    for name, chunk in bad.items():
        with pytest.raises(StreamError):
            stream.push(chunk)
    parts += [stream.push(speech[half:]), stream.finish()]
    assert np.array_equal(np.concatenate(parts), expected)
    assert len(stream.push(speech[:, None][:320])) >= 0    # (n, 1) is mono: taken
    with pytest.raises(StreamError):
        SpeechStream(animator, template, "S1", lookahead_ms=-1)


def test_memory_stays_bounded_over_ten_minutes(tiny_wav2vec2):
    # 5 frames a second (3000 frames in all), so that ten minutes stream in seconds
    model, template = make_model(tiny_wav2vec2, decoder_layers=1, fps=5, period=5, attention_window=100)
    animator = Animator(model, SUBJECTS, np.zeros((1, 3), np.int64), {}, path=_path("tiny.pth"))
    stream = SpeechStream(animator, template.numpy().reshape(-1, 3), "S1", lookahead_ms=100, context_ms=200)
    rng = np.random.default_rng(0)
    sizes = {}
    total = 0
    for minute in range(10):
        for _ in range(60):
            total += len(stream.push(rng.normal(size=16000).astype(np.float32)))
        sizes[minute] = (len(stream.audio), sum(t.numel() for t in stream.state.tensors()))
    assert total >= 10 * 60 * 5 - 2
    buffer_limit = (0.2 + 0.1 + 1.0 + 0.2) * 16000    # context + look-ahead + one chunk + a frame
    assert all(n <= buffer_limit for n, _ in sizes.values()), sizes
    assert sizes[1][1] == sizes[9][1]     # the decoder's buffers do not grow either
    assert stream.state.caches["decoder"][0]["ring"].k.shape[2] == model.config.attention_window


def test_latency_report_is_consistent(setup):
    animator, template, speech, _ = setup
    stream = SpeechStream(animator, template, "S1", lookahead_ms=100)
    vertices, report = stream_clip(stream, speech, chunk_ms=20)
    assert vertices.shape == (report.frames, template.size)
    assert report.delay_ms["p50"] <= report.delay_ms["p99"] <= report.delay_ms["max"]
    assert report.compute_ms["p50"] <= report.compute_ms["p99"] <= report.compute_ms["max"]
    # no frame can come back before its speech and the look-ahead after it have arrived
    assert report.first_frame_ms >= 100 + 1000 / animator.fps - 20 - 1
    assert report.delay_ms["p50"] >= 100 - 20
