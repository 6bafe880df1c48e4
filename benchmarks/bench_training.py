"""Training throughput by batch size: sequences/s and frames/s of ptalker.trainer.train on
equal-length clips, with ratios to batch size 1.

    python benchmarks/bench_training.py [--batch_sizes 1 4 8 16] [--seconds 3] [--sequences 32]
                                        [--threads N] [--ablation no_spatial] [--gat_checkpoint off]
                                        [--device cuda]

Medium configuration, on the CPU by default: F=64, 2 decoder layers, 2 conv + 2 transformer
layers in each motion encoder, a randomly initialised 96-wide 3-layer wav2vec2, a 1.4k-vertex
sphere with the spatial GAT, 3 s clips at 30 fps, vertex files on disk as in a real dataset.
Each batch size trains a copy of the same initial model for two epochs in this process; the
second epoch's time (data loading, steps and their checks, no validation or checkpoint writing)
counts. The batch sizes take turns for --repeats rounds and each keeps its best round, so that
load from other processes on a shared machine distorts the ratios less.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import PTalker, PTalkerConfig  # noqa: E402
from ptalker.data import Sequence, TalkingFaceDataset  # noqa: E402
from ptalker.mesh import mesh_edges  # noqa: E402
from ptalker.trainer import TrainConfig, train  # noqa: E402

FPS = 30
SUBJECTS = ["S1", "S2", "S3", "S4"]


def build(ablations: list[str], gat_checkpoint: bool) -> tuple[PTalker, np.ndarray, np.ndarray]:
    import trimesh
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    sphere = trimesh.creation.uv_sphere(radius=0.1, count=[24, 32])
    vertices, faces = np.asarray(sphere.vertices, dtype=np.float32), np.asarray(sphere.faces)
    torch.manual_seed(0)
    speech = Wav2Vec2Model(Wav2Vec2Config(hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
                                          intermediate_size=192, conv_dim=(64,) * 7, num_conv_pos_embeddings=16,
                                          num_conv_pos_embedding_groups=4))
    config = PTalkerConfig(vertice_dim=vertices.size, feature_dim=64, period=FPS, fps=FPS, n_subjects=len(SUBJECTS),
                           decoder_layers=2, motion_layers=2, motion_conv_layers=2, style_dim=64,
                           gat_dim=8, gat_checkpoint=gat_checkpoint).with_ablations(ablations)
    return PTalker(config, speech, torch.from_numpy(mesh_edges(faces, len(vertices)))), vertices, faces


def write_clips(folder: Path, vertices: np.ndarray, count: int, seconds: float) -> TalkingFaceDataset:
    """Talking-like clips of one length: a random waveform and a lower half that opens and closes."""
    rng = np.random.default_rng(1)
    frames = int(seconds * FPS)
    lower = (vertices[:, 1] < 0).astype(np.float32)
    sequences = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        offsets = np.zeros((frames, len(vertices), 3), np.float32)
        offsets[..., 1] = -0.005 * np.abs(np.sin(np.arange(frames) / 3 + i))[:, None] * lower
        path = folder / f"{subject}_clip{i:03d}.npy"
        np.save(path, (vertices + offsets).reshape(frames, -1))
        audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        sequences.append(Sequence(path.stem, subject, path, audio, vertices.reshape(-1), i % len(SUBJECTS)))
    return TalkingFaceDataset(sequences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    parser.add_argument("--sequences", type=int, default=32, help="clips per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the batch sizes; the best counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--ablation", nargs="*", default=[], help="e.g. no_spatial: without the per-frame GAT")
    parser.add_argument("--gat_checkpoint", choices=("on", "off"), default="on",
                        help="recompute the GAT in the backward pass, as main.py's flag")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vertices, faces = build(args.ablation, args.gat_checkpoint == "on")
    frames = int(args.seconds * FPS)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{len(vertices)} vertices, {args.sequences} clips of {frames} frames, {params / 1e6:.2f} M trained "
          f"parameters, {args.device}, {torch.get_num_threads()} threads, "
          f"ablations: {' '.join(args.ablation) or 'none'}, GAT checkpointing {args.gat_checkpoint}")
    lips = torch.from_numpy(np.where(vertices[:, 1] < -0.05)[0])
    meta = {"train_subjects": SUBJECTS, "faces": faces, "templates": {s: vertices for s in SUBJECTS}}
    best = {b: 0.0 for b in args.batch_sizes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = write_clips(tmp, vertices, args.sequences, args.seconds)
        for _ in range(args.repeats):
            for batch_size in args.batch_sizes:
                settings = TrainConfig(max_epoch=2, lr=1e-5, batch_size=batch_size, device=args.device,
                                         best_path=tmp / "best.pth", last_path=tmp / "last.pth",
                                         log_path=tmp / "log.csv")
                with contextlib.redirect_stderr(io.StringIO()):     # the epoch lines and progress bars
                    train(copy.deepcopy(model), clips, TalkingFaceDataset([]), lips, settings, meta)
                with open(settings.log_path, newline="") as f:
                    seconds = float(list(csv.DictReader(f))[-1]["seconds"])
                best[batch_size] = max(best[batch_size], args.sequences / seconds)
    base = best[args.batch_sizes[0]]
    print(f"{'batch':>5} {'seq/s':>8} {'frames/s':>9} {'x batch ' + str(args.batch_sizes[0]):>10}")
    for batch_size, rate in best.items():
        print(f"{batch_size:>5} {rate:>8.2f} {rate * frames:>9.0f} {rate / base:>10.2f}")


if __name__ == "__main__":
    main()
