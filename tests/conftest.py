"""Shared fixtures: the real test data beside the project, and tiny offline speech encoders."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("PTALKER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file from ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"test data not available: {path}")
    return path


def _tiny_speech_encoder(folder: Path, kind: str) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4)
    if kind == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**common))
    else:
        model = HubertModel(HubertConfig(**common))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide wav2vec2 saved to disk (random weights), loadable offline."""
    return _tiny_speech_encoder(tmp_path_factory.mktemp("wav2vec2"), "wav2vec2")


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide HuBERT saved to disk (random weights), loadable offline."""
    return _tiny_speech_encoder(tmp_path_factory.mktemp("hubert"), "hubert")
