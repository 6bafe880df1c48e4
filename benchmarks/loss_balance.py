"""Each loss term's value and its share of the gradient, on talking-like clips on the real FLAME
(VOCASET: metres, millimetre lip motion) and BIWI (unit surface area) topologies.

    python benchmarks/loss_balance.py [--steps 20] [--scale vocaset biwi] [--shared ../shared/data]

For each scale: a dataset of 4 speakers x 2 clips of 3 s whose lips open with the loudness of the
speech (tests/synthetic.py) on the real template; the published model sizes (F 64 / 128, 6 decoder
layers, 6+6 motion-encoder layers, GAT on) with a randomly initialised 3-layer, 96-wide wav2vec2;
Adam at the public recipe's lr 3e-4 for --steps steps with the default loss weights. Then, on every
clip, the gradient of each weighted term with respect to all trainable parameters: the table shows
the term's value, its weight, the norm of its gradient and its share of the summed norms.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from models import PTalkerConfig  # noqa: E402
from ptalker.augmentation import TrainStep  # noqa: E402
from ptalker.checkpoint import build_model  # noqa: E402
from ptalker.device import batch_to_device  # noqa: E402
from ptalker.data import TalkingFaceDataset, collate, load_splits  # noqa: E402
from ptalker.datasets import resolve_dataset  # noqa: E402
from ptalker.mesh import read_mesh  # noqa: E402
from ptalker.metrics import _read_ids_text  # noqa: E402
from ptalker.scratch_speech import save_scratch_speech_model  # noqa: E402
from synthetic import write_dataset  # noqa: E402

SUBJECTS = ["S1", "S2", "S3", "S4"]
SCALES = {   # mesh, lip region, lip opening (mesh units), fps, audio steps per frame, width F
    "vocaset": ("flame/FLAME_sample.ply", "flame/ptalker_vocaset_lve.txt", 0.003, 30, 1, 64),
    "biwi": ("biwi/BIWI.ply", "biwi/regions/lve.txt", 0.015, 25, 2, 128),
}
RECONSTRUCTION = ("rec", "mouth", "vel")


def weighted_terms(terms: dict, config: PTalkerConfig) -> dict[str, torch.Tensor]:
    """Each term times the weight it enters the total with."""
    weights = asdict(config.losses)
    return {name: value * weights[name] * (1 if name in RECONSTRUCTION else weights["contrastive"])
            for name, value in terms.items() if name in weights}


def measure(scale: str, shared: Path, steps: int, speech: Path, work: Path) -> list[tuple]:
    mesh_file, lip_file, amplitude, fps, ratio, width = SCALES[scale]
    vertices, faces = read_mesh(shared / mesh_file)
    lips = _read_ids_text(shared / lip_file)
    root = write_dataset(work / scale, SUBJECTS, range(1, 3), fps=fps, seconds=3.0,
                         mesh=(vertices, faces, lips), amplitude=amplitude)
    preset = resolve_dataset(root)
    data = load_splits(preset, vertices.size, SUBJECTS, {"train": (SUBJECTS, range(1, 3))})
    dataset = TalkingFaceDataset(data["train"])
    torch.manual_seed(0)
    config = PTalkerConfig(vertice_dim=vertices.size, feature_dim=width, period=fps, fps=fps,
                           n_subjects=len(SUBJECTS), audio_model=str(speech), audio_frames_per_frame=ratio,
                           motion_scale=dataset.offset_rms())
    model = build_model(config, faces)
    dataset.speech_frames = model.speech_frames
    step = TrainStep(model, torch.as_tensor(lips))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-4)
    batches = [collate([dataset[i]]) for i in range(len(dataset))]
    step.train()
    for n in range(steps):
        optimizer.zero_grad()
        step(batch_to_device(batches[n % len(batches)], "cpu"))["total"].backward()
        optimizer.step()
    step.eval()   # no dropout: the same forward pass for every term's gradient
    if hasattr(model, "clip_heads"):
        model.clip_heads.train()   # InfoNCE's negatives come from the queue of clips
    rows: dict[str, list] = {}
    for batch in batches:
        terms = step(batch)
        weighted = weighted_terms(terms, model.config)
        for name, value in weighted.items():
            if not value.requires_grad:   # a term that is zero here (InfoNCE without other clips)
                continue
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
            rows.setdefault(name, []).append((terms[name].item(), norm.item()))
    total = sum(np.mean([n for _, n in v]) for v in rows.values())
    return [(name, np.mean([t for t, _ in v]), np.mean([n for _, n in v]), np.mean([n for _, n in v]) / total)
            for name, v in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="Adam steps before measuring")
    parser.add_argument("--scale", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speech = save_scratch_speech_model(Path(tmp) / "speech", hidden=96, layers=3, heads=4, conv_dim=64)
        for scale in args.scale:
            rows = measure(scale, args.shared, args.steps, speech, Path(tmp))
            aux = sum(share for name, _, _, share in rows if name not in RECONSTRUCTION)
            print(f"\n{scale} after {args.steps} steps: auxiliary share of the gradient {100 * aux:.1f}%")
            print("| term | value | gradient norm (weighted) | share |\n|---|---|---|---|")
            for name, value, norm, share in rows:
                print(f"| {name} | {value:.3g} | {norm:.3g} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
