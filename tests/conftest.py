"""Shared fixtures: the real test data beside the project, and tiny offline speech encoders."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Spinning OpenMP threads stall when other processes share the CPU; waiting passively does not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptalker.scratch_speech import save_scratch_speech_model  # noqa: E402

SHARED_DATA = Path(os.environ.get("PTALKER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    # the same filter models/layers.py sets at import, which pytest's per-test warning capture resets
    config.addinivalue_line("filterwarnings", "ignore:Sparse CSR tensor support is in beta")


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
    from models.ptalker import single_thread

    with single_thread():
        yield
