"""Quality figures of a SynthTalk-trained model beyond main.py's test table:

1. reference-motion style: animate held-out sentences of speaker A with a reference clip of every
   training speaker B; report how the lip-motion amplitude of the output follows B's amplitude;
2. real speech: animate human recordings and correlate audio loudness with mouth opening.

    python benchmarks/synthtalk_quality.py [--checkpoint demo/models/synthtalk.pth] [--speech FILE ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptalker.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ptalker.datasets import SYNTHTALK_HELDOUT_TEST_SENTENCES as HELDOUT_TEST_SENTENCES  # noqa: E402
from ptalker.inference import load_animator  # noqa: E402
from ptalker.layout import load_vertices  # noqa: E402


def load_bundled(checkpoint: str, dataset: str):
    """One torch thread, the model, the SynthTalk folder and its LVE lip region (vertex ids)."""
    torch.set_num_threads(1)
    data = Path(dataset)
    lips = np.array([int(i) for i in (data / "regions" / "lve.txt").read_text().replace(",", " ").split()])
    return load_animator(checkpoint), data, lips


def lip_amplitude(vertices: np.ndarray, template: np.ndarray, lips: np.ndarray) -> float:
    """RMS lip-vertex displacement from the neutral face: vertices (T, V*3), template (V, 3)."""
    offsets = vertices.reshape(len(vertices), -1, 3)[:, lips] - template[lips]
    return float(np.sqrt((offsets ** 2).sum(-1).mean()))


def mouth_opening(vertices: np.ndarray, template: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """Per-frame vertical spread of the lip region minus the neutral one: (T, V*3) -> (T,)."""
    y = vertices.reshape(len(vertices), -1, 3)[:, lips, 1]
    return (y.max(1) - y.min(1)) - (template[lips, 1].max() - template[lips, 1].min())


def loudness(speech: np.ndarray, frames: int) -> np.ndarray:
    """RMS energy of the speech in each motion frame's window -> (frames,)."""
    edges = np.linspace(0, len(speech), frames + 1).astype(int)
    return np.array([np.sqrt(np.mean(speech[a:b] ** 2)) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "demo" / "models" / "synthtalk.pth"))
    parser.add_argument("--dataset", default=str(ROOT / "SynthTalk"))
    parser.add_argument("--speech", nargs="*", default=[str(ROOT.parent / "shared" / "data" / "speech" / n)
                                                         for n in ("arctic_a0007.wav", "obama_weekly_address.wav")])
    args = parser.parse_args()
    animator, data, lips = load_bundled(args.checkpoint, args.dataset)
    speakers = animator.train_subjects

    print("1. reference-motion style: lip amplitude (mm RMS) of outputs for speaker A's held-out sentences,")
    print("   animated unseen (no one-hot) with a reference clip (sentence 01) of speaker B")
    gt_amp = {s: np.mean([lip_amplitude(load_vertices(data / "vertices_npy" / f"{s}_sentence{n:02d}.npy"),
                                        animator.templates[s], lips) for n in HELDOUT_TEST_SENTENCES]) for s in speakers}
    rows, follows = [], 0
    for a in speakers:
        template = animator.template(a)
        clips = [load_audio(data / "wav" / f"{a}_sentence{n:02d}.wav") for n in HELDOUT_TEST_SENTENCES]
        amps = []
        for b in speakers:
            reference = animator.retarget(load_vertices(data / "vertices_npy" / f"{b}_sentence01.npy"),
                                          animator.templates[b], template)   # B's motion on A's face
            outs = animator.animate(clips, template, condition=None, reference=reference)
            amps.append(np.mean([lip_amplitude(o, template, lips) for o in outs]))
        corr = float(np.corrcoef(amps, [gt_amp[b] for b in speakers])[0, 1])
        follows += corr > 0
        rows.append((a, amps, corr))
    print("   A \\ B   " + " ".join(f"{b:>8}" for b in speakers) + "   corr with B's own amplitude")
    print("   B's own " + " ".join(f"{1000 * gt_amp[b]:8.2f}" for b in speakers))
    for a, amps, corr in rows:
        print(f"   {a}  " + " ".join(f"{1000 * x:8.2f}" for x in amps) + f"   {corr:+.2f}")
    print(f"   output amplitude rises with the reference speaker's amplitude for {follows} of {len(rows)} speakers")

    print("2. real speech: Pearson correlation of per-frame loudness and mouth opening")
    for path in args.speech:
        if not Path(path).is_file():
            print(f"   {path}: not found, skipped")
            continue
        speech = load_audio(path)
        for condition in (speakers[0], None):
            out = animator.animate([speech], animator.template(speakers[0]), condition=condition)[0]
            opening = mouth_opening(out, animator.template(speakers[0]), lips)
            loud = loudness(speech, len(out))
            r = float(np.corrcoef(loud, opening)[0, 1])
            print(f"   {Path(path).name} ({len(speech) / SAMPLE_RATE:.1f} s, condition {condition or 'unseen'}): "
                  f"r = {r:+.2f}, mouth opening range {1000 * (opening.max() - opening.min()):.1f} mm")


if __name__ == "__main__":
    main()
