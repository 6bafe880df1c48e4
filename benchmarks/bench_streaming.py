"""Live animation against offline: quality and latency of SpeechStream at each look-ahead.

    python benchmarks/bench_streaming.py [--checkpoint demo/models/synthtalk.pth] [--lookaheads 0 100 200 400 1000]
                                         [--chunk_ms 20] [--context_ms 1000] [--conditions all|own]

On SynthTalk's held-out test sentences (every training speaker's sentences 37-40, not trained on),
each clip is streamed in chunks under each training speaker's condition, at each look-ahead and
offline (`generate` over the whole clip). Columns:
  LVE          lip vertex error of the own condition (mean over all frames, as main.py's table; x 1e-5 m),
               and its ratio to offline;
  own best     clips whose own condition gives the lowest LVE of all conditions (with --conditions all);
  first frame  p50 over clips of the time from the first chunk's arrival to the first frame returned;
  delay        p50 / p99 / max over all frames of the end-to-end delay (a frame's speech arriving ->
               the frame returned), on the timeline a real-time source gives (see ptalker/latency.py);
  compute      p99 of the compute time of a push.
Latency is measured with one torch thread on whatever else the machine runs; the load average is printed.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptalker.audio import load_audio  # noqa: E402
from ptalker.datasets import SYNTHTALK_HELDOUT_TEST_SENTENCES  # noqa: E402
from ptalker.latency import percentiles, stream_clip  # noqa: E402
from ptalker.layout import load_vertices  # noqa: E402
from ptalker.metrics import lip_vertex_error  # noqa: E402
from ptalker.streaming import CONTEXT_MS, SpeechStream  # noqa: E402
from synthtalk_quality import load_bundled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "demo" / "models" / "synthtalk.pth"))
    parser.add_argument("--dataset", default=str(ROOT / "SynthTalk"))
    parser.add_argument("--lookaheads", type=float, nargs="+", default=[0, 100, 200, 400, 1000], help="ms")
    parser.add_argument("--chunk_ms", type=float, default=20)
    parser.add_argument("--context_ms", type=float, default=CONTEXT_MS)
    parser.add_argument("--conditions", choices=("all", "own"), default="all",
                        help="stream under every training speaker's condition (for the ranking) or the own one")
    args = parser.parse_args()
    animator, data, lips = load_bundled(args.checkpoint, args.dataset)
    speakers = animator.train_subjects
    clips = [(s, n) for s in speakers for n in SYNTHTALK_HELDOUT_TEST_SENTENCES]
    speech = {c: load_audio(data / "wav" / f"{c[0]}_sentence{c[1]:02d}.wav") for c in clips}
    truth = {c: np.asarray(load_vertices(data / "vertices_npy" / f"{c[0]}_sentence{c[1]:02d}.npy")) for c in clips}

    def lve(pred: np.ndarray, clip) -> np.ndarray:
        """Per-frame lip vertex errors (T,), pooled over all frames like main.py's table."""
        n = min(len(pred), len(truth[clip]))
        return lip_vertex_error(pred[:n], truth[clip][:n], lips)

    rows = []
    for lookahead in [*args.lookaheads, math.inf]:
        errors, firsts, delays, computes = {}, [], [], []
        for clip in clips:
            subject, _ = clip
            template = animator.template(subject)
            for condition in (speakers if args.conditions == "all" else [subject]):
                if lookahead == math.inf:
                    pred = animator.animate([speech[clip]], template, condition)[0]
                else:
                    stream = SpeechStream(animator, template, condition, lookahead_ms=lookahead,
                                          context_ms=args.context_ms)
                    pred, report = stream_clip(stream, speech[clip], args.chunk_ms)
                    if condition == subject:
                        firsts.append(report.first_frame_ms)
                        delays += report.frame_delays_ms
                        computes += report.push_compute_ms
                errors[clip, condition] = lve(pred, clip)
        own = np.concatenate([errors[c, c[0]] for c in clips]).mean()
        best = sum(min(speakers, key=lambda k: errors[c, k].mean()) == c[0] for c in clips) \
            if args.conditions == "all" else None
        rows.append((lookahead, own, best, firsts, delays, computes))
        print(f"  look-ahead {lookahead:g} ms done", file=sys.stderr, flush=True)
    print_table(rows, len(clips), args)


def print_table(rows, clips: int, args) -> None:
    offline = rows[-1][1]
    print(f"{clips} held-out clips; chunks {args.chunk_ms:g} ms, context {args.context_ms:g} ms, one thread; "
          "load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    header = (f"{'look-ahead':>10} {'LVE x1e-5':>9} {'/offline':>8} {'own best':>8} {'first frame':>11} "
              f"{'delay p50/p99/max ms':>22} {'compute p99':>11}")
    print(header)
    print("-" * len(header))
    for lookahead, own, best, firsts, delays, computes in rows:
        name = "offline" if lookahead == math.inf else f"{lookahead:g} ms"
        ranking = "-" if best is None else f"{best}/{clips}"
        if lookahead == math.inf:
            latency = f"{'-':>11} {'-':>22} {'-':>11}"
        else:
            d, c = percentiles(delays), percentiles(computes)
            latency = (f"{np.median(firsts):>9.0f}ms {d['p50']:>8.0f}/{d['p99']:.0f}/{d['max']:.0f}"
                       f"{'':>3} {c['p99']:>9.1f}ms")
        print(f"{name:>10} {own * 1e5:>9.3f} {own / offline:>8.3f} {ranking:>8} {latency}")


if __name__ == "__main__":
    main()
