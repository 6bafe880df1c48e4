"""The spatial GAT against `--ablation no_spatial` on the real FLAME topology: held-out LVE of each,
and of the static template, after the same short training.

    python benchmarks/spatial_ablation.py [--epochs 20] [--seeds 7 8] [--shared ../shared/data]

Data: 3 speakers x 6 clips of 1 s on FLAME in metres whose lips open by up to 3 mm with the
loudness of the speech, each speaker with its own amplitude (tests/synthetic.py); sentences 1-5
train, 5 validates, 6 is the test (own condition). Model: F 32, 1 decoder layer, 1+1 motion-encoder
layers, default loss weights, lr 3e-3, a random 2-layer 32-wide wav2vec2.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ptalker.layout import load_vertices, split_result_stem, subject_of  # noqa: E402
from ptalker.mesh import load_templates, read_mesh  # noqa: E402
from ptalker.metrics import _read_ids_text, lip_vertex_error  # noqa: E402
from ptalker.scratch_speech import save_scratch_speech_model  # noqa: E402
from synthetic import write_dataset  # noqa: E402

SUBJECTS = "S1 S2 S3"


def train_and_score(root: Path, speech: Path, out: Path, epochs: int, seed: int, ablation: list[str]) -> float:
    """Train with main.py -> the test clips' LVE (mean over frames)."""
    command = [sys.executable, str(ROOT / "main.py"), "--dataset", str(root), "--train_subjects", SUBJECTS,
               "--val_subjects", SUBJECTS, "--test_subjects", SUBJECTS, "--train_sentences", "1-5",
               "--val_sentences", "5-5", "--test_sentences", "6-6", "--audio_model", str(speech),
               "--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1", "--style_dim", "16",
               "--feature_dim", "32", "--lr", "3e-3", "--max_epoch", str(epochs), "--seed", str(seed),
               "--save_path", str(out / "save"), "--result_path", str(out / "result")]
    if ablation:
        command += ["--ablation", *ablation]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return float(np.mean(np.concatenate(lve_per_frame(root, sorted((out / "result").glob("*.npy"))))))


def lve_per_frame(root: Path, predictions: list[Path], static: bool = False) -> list[np.ndarray]:
    lips = _read_ids_text(root / "regions" / "lve.txt")
    templates = load_templates(root / "templates.pkl")
    errors = []
    for path in predictions:
        name, _ = split_result_stem(path.stem)
        gt = load_vertices(root / "vertices_npy" / f"{name}.npy")
        pred = np.repeat(templates[subject_of(name)][None], len(gt), 0) if static else load_vertices(path)
        errors.append(lip_vertex_error(pred, gt, lips))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    vertices, faces = read_mesh(args.shared / "flame" / "FLAME_sample.ply")
    lips = _read_ids_text(args.shared / "flame" / "ptalker_vocaset_lve.txt")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = write_dataset(tmp / "flame", SUBJECTS.split(), range(1, 7), fps=30, seconds=1.0,
                             mesh=(vertices, faces, lips), amplitude=0.003)
        speech = save_scratch_speech_model(tmp / "speech")
        print("| model | seed | test LVE (x1e-6 m^2) |\n|---|---|---|")
        for name, ablation in (("full (GAT)", []), ("no_spatial", ["no_spatial"])):
            for seed in args.seeds:
                lve = train_and_score(root, speech, tmp / f"{name}{seed}", args.epochs, seed, ablation)
                print(f"| {name} | {seed} | {lve * 1e6:.3f} |", flush=True)
        static = lve_per_frame(root, sorted((tmp / f"full (GAT){args.seeds[0]}" / "result").glob("*.npy")), True)
        print(f"| static template | - | {np.mean(np.concatenate(static)) * 1e6:.3f} |")


if __name__ == "__main__":
    main()
