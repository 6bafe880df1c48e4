"""Speech IO: any file librosa/soundfile can decode -> 16 kHz mono float32."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError

SAMPLE_RATE = 16000


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode, down-mix and resample a speech file -> (S,) float32 at `sample_rate`."""
    import librosa

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"audio file is empty: {path}")
    try:
        speech, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as exc:  # soundfile/audioread raise assorted types for undecodable input
        raise UserError(f"cannot decode audio {path}: {exc.__class__.__name__}: {exc}") from exc
    if speech.size == 0:
        raise UserError(f"audio file holds no samples: {path}")
    if not np.isfinite(speech).all():
        raise UserError(f"audio file holds non-finite samples: {path}")
    return speech.astype(np.float32)
