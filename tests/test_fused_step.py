"""The fused one-frame step: compiled on the CPU (captured as a CUDA graph on CUDA), equal to the eager one."""
from __future__ import annotations

import pytest
import torch

from conftest import clip, make_model


@pytest.fixture(scope="module")
def small(tiny_wav2vec2):
    """A model with the fewest layers of each kind, so compiling it stays short; the GAT on."""
    model, template = make_model(tiny_wav2vec2, decoder_layers=1, motion_conv_layers=1)
    audio, motion = clip(12, template=template)
    return model, template, audio, motion


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["seen", "unseen", "reference"])
def test_compiled_step_equals_the_eager_step(small, mode):
    model, template, audio, motion = small
    kwargs = {"seen": dict(one_hot=torch.eye(3)[1:2]), "unseen": {},
              "reference": dict(one_hot=torch.eye(3)[1:2], reference=motion[:, :6])}[mode]
    eager = model.generate(audio, template, **kwargs)
    fused = model.generate(audio, template, fused=True, **kwargs)
    assert (fused - eager).abs().max().item() <= 1e-5
    assert (eager - template.unsqueeze(1)).abs().max() > 1e-3     # the frames move: a real comparison


def test_state_buffers_are_everything_a_step_changes(small):
    """What capturing a CUDA graph relies on: restoring DecodeState.tensors() rewinds a step exactly."""
    model, template, audio, _ = small
    ctx = model.encode_audio(audio, 12)
    state = model.start_decoding(template, torch.eye(3)[:1])
    with torch.no_grad():
        for t in range(3):
            model.feed_frame(state, ctx, t)
            model.decode_step(state)
        saved = [b.clone() for b in state.tensors()]
        model.feed_frame(state, ctx, 3)
        first = model.decode_step(state).clone()
        model.decode_step(state)                 # a warm-up step that advances every cache
        for b, s in zip(state.tensors(), saved):
            b.copy_(s)
        again = model.decode_step(state)
    assert torch.equal(first, again)


@pytest.mark.slow
def test_one_compiled_step_serves_rings_that_grow(small):
    """Past 64 frames the attention rings double; the compiled step reads their length as a symbolic
    size, so it neither recompiles nor departs from the eager frames."""
    model, template, _, _ = small
    audio, _ = clip(70, seed=3, template=template)
    kwargs = dict(one_hot=torch.eye(3)[2:3])
    eager = model.generate(audio, template, **kwargs)
    model.generate(audio[:, : audio.shape[1] // 10], template, fused=True, **kwargs)   # compiled here, if not before
    torch._dynamo.utils.counters.clear()
    fused = model.generate(audio, template, fused=True, **kwargs)
    assert eager.shape[1] == 70
    assert (fused - eager).abs().max().item() <= 1e-5
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0


@pytest.mark.slow
def test_without_the_graph_kernel_the_compiled_step_gathers_the_same_frames(small, monkeypatch):
    """No C compiler (or a kernel that does not load): the compiled step falls back to gathers."""
    from models import graph_kernel

    model, template, audio, _ = small
    monkeypatch.setattr(graph_kernel, "_available", False)
    eager = model.generate(audio, template)
    fused = model.generate(audio, template, fused=True)
    assert (fused - eager).abs().max().item() <= 1e-5
