"""Convert the raw VOCASET download into wav/ and vertices_npy/ (see README.md).

    cd VOCASET && python process_voca_data.py
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ptalker.prepare import prepare_vocaset, run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE,
                        help="folder holding the download; the other defaults are inside it (default: %(default)s)")
    parser.add_argument("--data-verts", type=Path, help="vertex array (default: ROOT/data_verts.npy)")
    parser.add_argument("--raw-audio", type=Path, help="audio pickle (default: ROOT/raw_audio_fixed.pkl)")
    parser.add_argument("--seq-index", type=Path, help="sequence index (default: ROOT/subj_seq_to_idx.pkl)")
    parser.add_argument("--templates", type=Path, help="templates (default: ROOT/templates.pkl)")
    parser.add_argument("--topology", type=Path, help="topology mesh (default: ROOT/templates/FLAME_sample.ply)")
    parser.add_argument("--out", type=Path, help="where wav/ and vertices_npy/ go (default: ROOT)")
    args = parser.parse_args(argv)
    root = args.root
    return run_cli(lambda: prepare_vocaset(
        data_verts=args.data_verts or root / "data_verts.npy",
        raw_audio=args.raw_audio or root / "raw_audio_fixed.pkl",
        seq_index=args.seq_index or root / "subj_seq_to_idx.pkl",
        templates=args.templates or root / "templates.pkl",
        topology=args.topology or root / "templates" / "FLAME_sample.ply",
        out_dir=args.out or root,
    ))


if __name__ == "__main__":
    sys.exit(main())
