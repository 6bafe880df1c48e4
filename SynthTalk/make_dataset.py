"""Generate the SynthTalk corpus: synthetic speakers, espeak-ng speech and face motion in the standard
dataset layout. Example: python SynthTalk/make_dataset.py --workers 2"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ptalker.errors import UserError, print_user_error  # noqa: E402
from SynthTalk.corpus import SENTENCES, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="dataset folder (default: SynthTalk/)")
    parser.add_argument("--speakers", type=int, default=8, help="number of speakers synth01.. (default 8)")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES),
                        help=f"sentences per speaker, 1..{len(SENTENCES)} (default {len(SENTENCES)})")
    parser.add_argument("--seed", type=int, default=0, help="seed for faces, styles and motion (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.speakers, args.sentences, args.seed, args.workers)
    except UserError as exc:
        return print_user_error(exc)
    print(f"{summary.written} sequences written, {summary.skipped} already there, "
          f"{summary.audio_seconds:.0f} s of speech in {summary.seconds:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
