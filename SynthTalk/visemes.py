"""Phonemes -> articulator trajectories: viseme targets blended by dominance functions.

Each phone is a segment with a target per articulator and a dominance (how firmly it holds that
articulator). Dominance is flat over the segment and decays exponentially outside it, more slowly
before it (anticipation) than after it (carry-over), in the spirit of Cohen and Massaro's
coarticulation model. An articulator's value at time t is the dominance-weighted mean of the targets,
so weak segments (h, schwa, t) take their shape from strong neighbours (p, w, u:).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .speech import Phone, is_pause

ARTICULATORS = ("jaw_open", "lip_round", "lip_spread", "lip_press", "upper_lip_raise", "lower_lip_tuck")
# Lip closure and tucking are quick, precise gestures; rounding spreads over neighbours for longer.
TIME_SCALE = np.array([1.0, 1.3, 1.0, 0.5, 1.0, 0.6])


@dataclass(frozen=True)
class Viseme:
    target: tuple[float, ...]      # per articulator, in rig units
    dominance: tuple[float, ...]


def _v(jaw=0.0, rnd=0.0, spread=0.0, press=0.0, raise_=0.0, tuck=0.0, dom=(2.0, 0.5, 0.5, 2.0, 0.5, 0.5)):
    return Viseme((jaw, rnd, spread, press, raise_, tuck), dom)


_WEAK = (0.8, 0.2, 0.2, 1.0, 0.2, 0.2)
VISEMES = {
    "rest": _v(dom=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)),
    "AA": _v(jaw=1.00, spread=0.15),
    "AH": _v(jaw=0.70, spread=0.10),
    "EH": _v(jaw=0.55, spread=0.35),
    "EY": _v(jaw=0.42, spread=0.40),
    "ER": _v(jaw=0.35, rnd=0.35, raise_=0.15),
    "SCHWA": _v(jaw=0.32, dom=(1.0, 0.3, 0.3, 1.5, 0.3, 0.3)),
    "IH": _v(jaw=0.26, spread=0.45),
    "IY": _v(jaw=0.20, spread=0.75, dom=(2.0, 0.6, 1.0, 2.0, 0.5, 0.5)),
    "OPEN_O": _v(jaw=0.80, rnd=0.35),
    "OH": _v(jaw=0.50, rnd=0.70, dom=(2.0, 1.2, 0.5, 2.0, 0.5, 0.5)),
    "UH": _v(jaw=0.28, rnd=0.55, dom=(2.0, 1.0, 0.5, 2.0, 0.5, 0.5)),
    "UW": _v(jaw=0.20, rnd=0.95, dom=(2.0, 2.0, 0.8, 2.0, 0.5, 0.5)),
    "PBM": _v(jaw=0.05, press=1.0, dom=(0.8, 0.3, 0.3, 6.0, 0.5, 0.5)),
    "FV": _v(jaw=0.12, tuck=1.0, dom=(1.2, 0.4, 0.4, 1.0, 0.5, 5.0)),
    "TH": _v(jaw=0.15, spread=0.15, dom=(1.0, 0.3, 0.3, 1.0, 0.3, 0.3)),
    "SZ": _v(jaw=0.08, spread=0.35, dom=(1.6, 0.3, 0.5, 1.0, 0.3, 0.3)),
    "SH": _v(jaw=0.10, rnd=0.65, raise_=0.40, dom=(1.4, 2.0, 0.5, 1.0, 1.5, 0.3)),
    "TD": _v(jaw=0.15, spread=0.10, dom=_WEAK),
    "L": _v(jaw=0.22, dom=_WEAK),
    "KG": _v(jaw=0.22, dom=_WEAK),
    "H": _v(dom=(0.1, 0.1, 0.1, 1.0, 0.1, 0.1)),
    "R": _v(jaw=0.15, rnd=0.45, raise_=0.20, dom=(0.8, 1.2, 0.3, 1.0, 0.5, 0.3)),
    "W": _v(jaw=0.10, rnd=1.00, dom=(0.8, 4.0, 1.0, 1.0, 0.5, 0.5)),
    "Y": _v(jaw=0.12, spread=0.45, dom=(0.8, 0.3, 0.8, 1.0, 0.3, 0.3)),
}

# espeak-ng English phoneme mnemonics; diphthongs glide through several visemes.
PHONEME_VISEMES = {
    "a": ("AA",), "a#": ("AH",), "aa": ("AA",), "A:": ("AA",), "A@": ("AA", "ER"),
    "aI": ("AA", "IH"), "aI2": ("AA", "IH"), "aI@": ("AA", "IH", "SCHWA"), "aU": ("AA", "UH"),
    "E": ("EH",), "e": ("EY",), "e@": ("EH", "SCHWA"), "eI": ("EY", "IH"),
    "V": ("AH",), "VR": ("AH", "ER"), "0": ("OPEN_O",), "O2": ("OPEN_O",),
    "O:": ("OH",), "O@": ("OH", "ER"), "OI": ("OH", "IH"), "o": ("OH",), "o@": ("OH", "SCHWA"),
    "oU": ("OH", "UH"),
    "@": ("SCHWA",), "@2": ("SCHWA",), "@5": ("SCHWA",), "@L": ("SCHWA", "L"),
    "3": ("ER",), "3:": ("ER",), "IR": ("IH", "ER"),
    "I": ("IH",), "I#": ("IH",), "I2": ("IH",), "i": ("IY",), "i:": ("IY",),
    "i@": ("IY", "SCHWA"), "i@3": ("IY", "ER"),
    "U": ("UH",), "U@": ("UH", "SCHWA"), "u:": ("UW",), "u@": ("UW", "SCHWA"),
    "p": ("PBM",), "b": ("PBM",), "m": ("PBM",),
    "f": ("FV",), "v": ("FV",), "T": ("TH",), "D": ("TH",),
    "s": ("SZ",), "z": ("SZ",), "S": ("SH",), "Z": ("SH",), "tS": ("SH",), "dZ": ("SH",),
    "t": ("TD",), "d": ("TD",), "n": ("TD",), "t#": ("TD",), "t2": ("TD",), "t[": ("TD",), "d#": ("TD",),
    "l": ("L",), "k": ("KG",), "g": ("KG",), "N": ("KG",), "x": ("KG",), "h": ("H",),
    "r": ("R",), "r-": ("R",), "w": ("W",), "w#": ("W",), "j": ("Y",),
}
_VOWEL_START = set("aAeEiIoOuUV03@")


def visemes_for(symbol: str) -> tuple[str, ...]:
    """The viseme sequence of an espeak-ng phoneme; unlisted symbols fall back by their first letter."""
    if is_pause(symbol):
        return ("rest",)
    if symbol in PHONEME_VISEMES:
        return PHONEME_VISEMES[symbol]
    return ("SCHWA",) if symbol[0] in _VOWEL_START else ("TD",)


def is_vowel(symbol: str) -> bool:
    return not is_pause(symbol) and symbol[0] in _VOWEL_START


@dataclass(frozen=True)
class Coarticulation:
    anticipation: float = 0.045    # s, dominance decay constant before a segment
    carryover: float = 0.03        # s, after it
    lead: float = 0.03             # s, the face moves this much ahead of the sound
    min_width: float = 0.04        # s, short segments are widened so every target is reached at 30 fps


def articulate(phones: tuple[Phone, ...], times: np.ndarray, co: Coarticulation = Coarticulation(),
               gains: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Articulator trajectories sampled at `times` (seconds) -> {articulator: (T,)}.

    `gains` optionally scales each phone's targets ({articulator: (len(phones),)}), for speaker style and
    emphasis; the lip seal of p/b/m is never scaled.
    """
    starts, ends, targets, dominance = [], [], [], []
    for k, phone in enumerate(phones):
        names = visemes_for(phone.symbol)
        edges = np.linspace(phone.start, phone.end, len(names) + 1)
        for name, a, b in zip(names, edges[:-1], edges[1:]):
            target = np.array(VISEMES[name].target)
            if gains is not None:
                target = target * np.array([gains[art][k] if art in gains else 1.0 for art in ARTICULATORS])
            starts.append(a)
            ends.append(b)
            targets.append(target)
            dominance.append(VISEMES[name].dominance)
    first = phones[0].start if phones else 0.0
    last = phones[-1].end if phones else 0.0
    # Silence before the first and after the last phone holds the rest pose.
    starts = np.array([first - 10.0] + starts + [last]) - co.lead
    ends = np.array([first] + ends + [last + 10.0]) - co.lead
    rest = VISEMES["rest"]
    targets = np.array([rest.target] + targets + [rest.target])
    dominance = np.array([rest.dominance] + dominance + [rest.dominance])
    short = (ends - starts) < co.min_width
    mid = 0.5 * (starts + ends)
    starts = np.where(short, mid - 0.5 * co.min_width, starts)
    ends = np.where(short, mid + 0.5 * co.min_width, ends)

    t = np.asarray(times, dtype=np.float64)[:, None]
    before = np.clip(starts[None, :] - t, 0.0, None)
    after = np.clip(t - ends[None, :], 0.0, None)
    decay = before[:, :, None] / co.anticipation + after[:, :, None] / co.carryover
    d = np.exp(-decay / TIME_SCALE) * dominance[None, :, :]                      # (T, S, A)
    values = (d * targets[None]).sum(axis=1) / d.sum(axis=1)
    out = {name: values[:, i] for i, name in enumerate(ARTICULATORS)}
    # Blended press rarely reaches 1 next to open vowels; the lips seal once it is mostly there.
    out["lip_press"] = np.clip(out["lip_press"] / 0.8, 0.0, 1.0)
    return out
