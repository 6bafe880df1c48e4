"""Convert the raw BIWI (B3D(AC)^2) download into wav/, vertices_npy/, templates.pkl and
templates/BIWI.ply (see README.md). Only the emotional sentences e01-e40 are converted.

    cd BIWI && python process_biwi_data.py
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ptalker.prepare import prepare_biwi, run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE,
                        help="folder holding the download; the other defaults are inside it (default: %(default)s)")
    parser.add_argument("--faces", type=Path, help="tracked frames <subject>/eNN/*.vl (default: ROOT/faces)")
    parser.add_argument("--scans", type=Path, help="neutral scans <subject>.obj (default: ROOT/rigid_scans)")
    parser.add_argument("--audio", type=Path,
                        help="folder of <subject>_eNN[_cut].wav (default: ROOT/audio, or ROOT/wav if there is no audio/)")
    parser.add_argument("--out", type=Path, help="where the converted dataset goes (default: ROOT)")
    parser.add_argument("--topology-subject", help="subject whose template becomes the topology mesh (default: first)")
    parser.add_argument("--topology-name", default="BIWI.ply", help="file name in OUT/templates/ (default: %(default)s)")
    args = parser.parse_args(argv)
    root = args.root
    audio = args.audio or (root / "audio" if (root / "audio").is_dir() or not (root / "wav").is_dir()
                           else root / "wav")
    return run_cli(lambda: prepare_biwi(
        faces_dir=args.faces or root / "faces",
        scans_dir=args.scans or root / "rigid_scans",
        audio_dir=audio,
        out_dir=args.out or root,
        topology_subject=args.topology_subject,
        topology_name=args.topology_name,
    ))


if __name__ == "__main__":
    sys.exit(main())
