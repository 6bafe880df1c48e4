"""Shared fixtures and builders: the real test data beside the project, tiny offline speech encoders
and tiny PTalker models with random speech and motion."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Spinning OpenMP threads stall when other processes share the CPU; waiting passively does not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import PTalker, PTalkerConfig  # noqa: E402
from models.audio import load_speech_model  # noqa: E402
from ptalker.mesh import mesh_edges  # noqa: E402
from ptalker.scratch_speech import save_scratch_speech_model  # noqa: E402
from synthetic import tiny_mesh  # noqa: E402

SHARED_DATA = Path(os.environ.get("PTALKER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    # the same filter models/layers.py sets at import, which pytest's per-test warning capture resets
    config.addinivalue_line("filterwarnings", "ignore:Sparse CSR tensor support is in beta")
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    config.addinivalue_line("markers", "slow: end-to-end runs of a minute or more (deselect with -m 'not slow')")


def shared_file(relative: str) -> Path:
    """A file from ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"test data not available: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide wav2vec2 saved to disk (random weights), loadable offline."""
    return save_scratch_speech_model(tmp_path_factory.mktemp("wav2vec2"), "wav2vec2")


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide HuBERT saved to disk (random weights), loadable offline."""
    return save_scratch_speech_model(tmp_path_factory.mktemp("hubert"), "hubert")


@pytest.fixture
def one_thread():
    """Tiny models and per-frame decoding run many small ops: one thread is fastest, and a second
    only adds synchronisation on a shared machine. Restores the thread count afterwards."""
    from models.ptalker import at_most_threads

    with at_most_threads(1):
        yield


# ----------------------------------------------------------------------------- tiny models

FPS = 30


def tiny_config(vertices: np.ndarray, encoder, ratio: int = 1, **overrides) -> PTalkerConfig:
    settings = dict(vertice_dim=vertices.size, feature_dim=16, period=FPS, fps=FPS, n_subjects=3,
                    audio_model=str(encoder), audio_frames_per_frame=ratio, decoder_layers=2, decoder_heads=4,
                    motion_conv_layers=2, motion_layers=1, style_dim=16, gat_dim=4, dropout=0.0)
    settings.update(overrides)
    return PTalkerConfig(**settings)


def make_model(encoder, ratio=1, mesh=None, randomize=True, **overrides) -> tuple[PTalker, torch.Tensor]:
    vertices, faces = mesh if mesh is not None else tiny_mesh()
    torch.manual_seed(0)
    model = PTalker(tiny_config(vertices, encoder, ratio, **overrides), load_speech_model(str(encoder)),
                    torch.from_numpy(mesh_edges(faces, len(vertices))))
    if randomize:  # the zero-initialised head would make every prediction the template
        torch.nn.init.normal_(model.head.weight, std=0.05)
        if model.spatial.gat is not None:
            torch.nn.init.normal_(model.spatial.gat[1].lin.weight, std=0.5)
    return model.eval(), torch.from_numpy(vertices.reshape(1, -1))


def clip(frames: int, seed: int = 0, batch: int = 1, template=None, ratio: int = 1):
    """Random speech and motion of `frames` frames; with ratio 2 the speech gives exactly 2 * frames
    native 50 Hz steps (kernel 400, stride 320 samples)."""
    g = torch.Generator().manual_seed(seed)
    samples = int(frames / FPS * 16000) if ratio == 1 else 640 * frames + 80
    audio = torch.randn(batch, samples, generator=g)
    motion = template.unsqueeze(1) + 0.01 * torch.randn(batch, frames, template.shape[1], generator=g)
    return audio, motion
