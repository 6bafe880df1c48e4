"""Speech IO: any file soundfile (wav, flac, ogg, mp3) or librosa can decode -> 16 kHz mono float32."""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np

from models.audio import SAMPLE_RATE

from .errors import UserError


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """-> (samples (S, C) float32, rate). soundfile first: it is fast and needs no JIT warm-up."""
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return data, rate
    except Exception as first:  # formats libsndfile lacks: let librosa's audioread backends try
        import warnings

        import librosa

        with warnings.catch_warnings():   # librosa warns before failing; the caller reports one line
            warnings.simplefilter("ignore")
            try:
                data, rate = librosa.load(path, sr=None, mono=False)
            except Exception:
                raise first from None
        return np.atleast_2d(data).T.astype(np.float32), rate


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode, down-mix and resample a speech file -> (S,) float32 at `sample_rate`."""
    from scipy.signal import resample_poly

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"audio file is empty: {path}")
    try:
        data, rate = _decode(path)
    except Exception as exc:  # decoders raise assorted types for undecodable input
        raise UserError(f"cannot decode audio {path}: {exc.__class__.__name__}: {exc}") from exc
    speech = data.mean(axis=1)
    if speech.size == 0:
        raise UserError(f"audio file holds no samples: {path}")
    if rate != sample_rate:
        g = gcd(int(rate), sample_rate)
        speech = resample_poly(speech, sample_rate // g, int(rate) // g)
    if not np.isfinite(speech).all():
        raise UserError(f"audio file holds non-finite samples: {path}")
    return speech.astype(np.float32)
