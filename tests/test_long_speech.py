"""Long speech: chunked CNN, windowed speech transformer, and generation over minutes of audio."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Config, Wav2Vec2Model

from models.audio import SAMPLE_RATE, SpeechEncoder, load_speech_model
from conftest import make_model

# Largest |windowed - unwindowed| allowed in the middle half of each window's kept span, for the
# tiny random encoder whose outputs have unit scale (measured: about 1e-3).
CENTRE_BOUND = 1e-2


def unwindowed(encoder: SpeechEncoder, audio: torch.Tensor, frames: int) -> torch.Tensor:
    """The whole-clip pipeline: CNN, alignment (interpolated with ratio 1, native steps cut with
    ratio 2), projection and transformer in single passes."""
    audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-7)
    conv = encoder.model.feature_extractor(audio)
    conv = F.interpolate(conv, size=frames, mode="linear", align_corners=True) if encoder.ratio == 1 \
        else conv[:, :, : 2 * frames]
    projected = encoder.model.feature_projection(conv.transpose(1, 2))
    projected = projected[0] if isinstance(projected, tuple) else projected
    return encoder.model.encoder(projected).last_hidden_state


def speech(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ratio", [1, 2])
def test_one_window_is_the_unwindowed_encoding(tiny_wav2vec2, ratio):
    encoder = SpeechEncoder(load_speech_model(str(tiny_wav2vec2)), ratio).eval()
    audio, frames = speech(6), 180 if ratio == 1 else 149    # 6 s at 30 fps, or 299 native steps // 2
    with torch.no_grad():
        expected = unwindowed(encoder, audio, frames)
        assert torch.equal(encoder(audio, frames), expected)              # default: far below the window
        encoder.window_seconds, encoder.context_seconds = 5.0, 0.5          # 6 s = one window plus context
        assert encoder.windows(frames * ratio, 6.0) == [(0, 0, frames * ratio, frames * ratio)]
        assert torch.equal(encoder(audio, frames), expected)


@pytest.mark.parametrize("encoder_name", ["tiny_wav2vec2", "tiny_hubert"])
@pytest.mark.parametrize("windowed", [False, True])
def test_padded_batch_encodes_each_clip_as_alone(encoder_name, windowed, request):
    encoder = SpeechEncoder(load_speech_model(str(request.getfixturevalue(encoder_name))), 2).eval()
    if windowed:   # the 5 s clip needs windows: the batch falls back to clip by clip
        encoder.window_seconds, encoder.context_seconds = 2.0, 0.5
    # the frames each clip's native 50 Hz steps drive: (seconds * 50 - 1) // 2
    clips, frames = [speech(3, seed=2), speech(5, seed=3), speech(4, seed=4)], [74, 124, 99]
    audio = torch.zeros(3, clips[1].shape[1])
    for i, c in enumerate(clips):
        audio[i, : c.shape[1]] = c[0]
    lengths = (torch.tensor([c.shape[1] for c in clips]), torch.tensor(frames))
    with torch.no_grad():
        batched = encoder(audio, 124, lengths)
        for i, (c, t) in enumerate(zip(clips, frames)):
            assert (batched[i, : 2 * t] - encoder(c, t)[0]).abs().max().item() < 1e-4
            assert not batched[i, 2 * t:].any()                          # padding comes out zero


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_chunked_cnn_matches_one_pass(norm):
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, conv_dim=(32,) * 7, feat_extract_norm=norm,
                                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))
    encoder = SpeechEncoder(model, 1).eval()
    encoder.conv_chunk_seconds = 3.3                                      # chunks not on a second boundary
    audio = speech(20, seed=1)
    with torch.no_grad():
        full = model.feature_extractor(audio)
        chunked = encoder.conv_features(audio)
    assert chunked.shape == full.shape
    assert (chunked - full).abs().max().item() < 1e-4


def test_long_input_windowed_close_to_unwindowed_in_window_centres(tiny_wav2vec2):
    encoder = SpeechEncoder(load_speech_model(str(tiny_wav2vec2)), 1).eval()
    encoder.conv_chunk_seconds, encoder.window_seconds, encoder.context_seconds = 10.0, 10.0, 2.0
    seconds, frames = 90, 2700
    audio = speech(seconds, seed=2)
    with torch.no_grad():
        windowed = encoder(audio, frames)
        reference = unwindowed(encoder, audio, frames)
    assert windowed.shape == (1, frames, 32) and torch.isfinite(windowed).all()
    spans = encoder.windows(frames, seconds)
    assert len(spans) == 9 and spans[0][:2] == (0, 0) and spans[-1][2:] == (frames, frames)
    assert [s[2] for s in spans[:-1]] == [s[1] for s in spans[1:]]         # kept spans tile the sequence
    difference = (windowed - reference).abs()
    for lo, start, stop, hi in spans:
        quarter = (stop - start) // 4
        assert difference[:, start + quarter: stop - quarter].max().item() < CENTRE_BOUND
    assert 0 < difference.max().item() < 10 * CENTRE_BOUND


@pytest.mark.slow
def test_ten_minutes_of_speech_encode_in_bounded_memory(tiny_wav2vec2):
    encoder = SpeechEncoder(load_speech_model(str(tiny_wav2vec2)), 2).eval()
    with torch.no_grad():
        features = encoder(speech(600, seed=3), 14999)
    assert features.shape == (1, 29998, 32) and torch.isfinite(features).all()


@pytest.mark.slow
def test_three_minutes_generate(tiny_wav2vec2, one_thread):
    # three, not ten, minutes: the decode loop costs ~3 ms a frame here, so ten minutes (18000
    # frames) alone would take about a minute; the speech encoder's ten minutes are tested above
    model, template = make_model(tiny_wav2vec2, decoder_layers=1)
    out = model.generate(speech(180, seed=4), template, torch.eye(3)[:1])
    assert out.shape == (1, 5400, template.shape[1]) and torch.isfinite(out).all()
