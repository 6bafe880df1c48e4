"""Speaking style and the full per-frame control curves of an utterance: articulation plus blinks,
brow raises on stressed words, a constant expression and small head motion."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .speech import Utterance
from .visemes import Coarticulation, articulate, is_vowel


@dataclass(frozen=True)
class SpeakingStyle:
    jaw: float = 1.0              # gain on jaw opening
    rounding: float = 1.0         # gain on lip rounding
    spread: float = 1.0           # gain on lip spreading
    smile: float = 0.1            # resting smile
    asymmetry: float = 0.0        # lips drift sideways as the mouth opens (-1..1)
    emphasis: float = 0.25        # extra jaw opening on stressed words
    brow: float = 0.5             # chance and size of a brow raise on a stressed word
    blink_interval: float = 3.5   # s, mean time between blinks
    head_motion: float = 0.7      # scale of head rotation
    anticipation: float = 0.045   # s, see visemes.Coarticulation
    carryover: float = 0.03
    lead: float = 0.03

    @classmethod
    def random(cls, rng: np.random.Generator) -> "SpeakingStyle":
        return cls(jaw=rng.uniform(0.75, 1.25), rounding=rng.uniform(0.6, 1.3), spread=rng.uniform(0.6, 1.3),
                   smile=rng.uniform(0.0, 0.35), asymmetry=rng.uniform(-0.6, 0.6), emphasis=rng.uniform(0.0, 0.5),
                   brow=rng.uniform(0.1, 1.0), blink_interval=rng.uniform(2.5, 6.0),
                   head_motion=rng.uniform(0.3, 1.2), anticipation=rng.uniform(0.03, 0.06),
                   carryover=rng.uniform(0.02, 0.04), lead=rng.uniform(0.0, 0.06))

    def as_dict(self) -> dict[str, float]:
        return {f.name: round(float(getattr(self, f.name)), 4) for f in fields(self)}


def frame_count(utterance: Utterance, fps: int) -> int:
    return int(round(utterance.duration * fps))


def word_stress(utterance: Utterance) -> np.ndarray:
    """Per word, its longest vowel relative to the sentence's median vowel: espeak-ng lengthens stressed
    vowels, so values well above 1 mark stressed words."""
    vowel = {}
    for p in utterance.phones:
        if p.word >= 0 and is_vowel(p.symbol):
            vowel[p.word] = max(vowel.get(p.word, 0.0), p.end - p.start)
    lengths = [d for d in vowel.values() if d > 0]
    median = float(np.median(lengths)) if lengths else 1.0
    return np.array([vowel.get(i, 0.0) / median for i in range(len(utterance.words))])


def _bump(t, start, rise, hold, fall):
    """0 -> 1 -> 0 with smooth ramps: rise seconds up from `start`, hold, then fall seconds down."""
    up = np.clip((t - start) / rise, 0.0, 1.0)
    down = np.clip((t - start - rise - hold) / fall, 0.0, 1.0)
    return (up * up * (3 - 2 * up)) * (1.0 - down * down * (3 - 2 * down))


def animate(utterance: Utterance, style: SpeakingStyle, rng: np.random.Generator, fps: int = 30):
    """Face controls for every frame of the utterance -> {control: (frames,)}; frame i is at i / fps."""
    frames = frame_count(utterance, fps)
    t = np.arange(frames) / fps
    stress = word_stress(utterance)
    emphasis = np.array([1.0 + style.emphasis * float(np.clip(stress[p.word] - 1.0, 0.0, 1.0)) if p.word >= 0
                         else 1.0 for p in utterance.phones])
    gains = {"jaw_open": style.jaw * emphasis,
             "lip_round": np.full(len(utterance.phones), style.rounding),
             "lip_spread": np.full(len(utterance.phones), style.spread)}
    co = Coarticulation(anticipation=style.anticipation, carryover=style.carryover, lead=style.lead)
    controls = articulate(utterance.phones, t, co, gains)
    controls["jaw_open"] = np.clip(controls["jaw_open"], 0.0, 1.2)

    controls["smile"] = np.clip(style.smile + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.15) * t
                                                            + rng.uniform(0, 2 * np.pi)), 0.0, 1.0)
    controls["mouth_left"] = style.asymmetry * (0.15 + 0.6 * controls["jaw_open"])

    brow = np.zeros(frames)
    nod = np.zeros(frames)
    for word, s in zip(utterance.words, stress):
        if s > 1.2 and rng.random() < style.brow:
            brow = np.maximum(brow, rng.uniform(0.4, 1.0) * _bump(t, word.start - 0.1, 0.12, word.end - word.start,
                                                                     0.3))
        if s > 1.2:
            nod += 0.012 * style.head_motion * _bump(t, word.start - 0.08, 0.12, 0.0, 0.25)
    controls["brow_raise"] = np.clip(brow, 0.0, 1.0)

    blink = np.zeros(frames)
    moment = rng.uniform(0.2, style.blink_interval)
    while moment < utterance.duration:
        # Lids close fast and open more slowly.
        blink = np.maximum(blink, _bump(t, moment, 0.07, 0.03, 0.15))
        moment += max(0.8, rng.exponential(style.blink_interval))
    controls["blink"] = blink

    # Only nods locked to stressed words: free head sway cannot be predicted from speech, and the
    # captured corpora remove rigid head motion too.
    controls["head_pitch"] = nod
    controls["head_yaw"] = np.zeros(frames)
    controls["head_roll"] = np.zeros(frames)
    return controls
