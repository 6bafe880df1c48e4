"""Peak memory of one training step on 10 s of speech, for the VOCASET and BIWI configurations
(random weights of the real sizes), and of the spatial GAT alone on a 10 s BIWI clip.

    python benchmarks/bench_memory.py [--seconds 10]

Each measurement runs in a fresh process and reads the kernel's resident-set high-water mark
(VmHWM), so figures include everything the step allocates (CPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def mesh_for(name: str, vertices: int):
    """The real topology from ../shared/data when present, else a sphere with that many vertices."""
    import numpy as np
    import trimesh

    from ptalker.mesh import read_mesh

    path = SHARED / ("flame/FLAME_sample.ply" if name == "vocaset" else "biwi/BIWI.ply")
    if path.is_file():
        return read_mesh(path)
    sphere = trimesh.creation.icosphere(subdivisions=6)
    v = np.asarray(sphere.vertices[:vertices], dtype=np.float32)
    faces = np.asarray(sphere.faces)
    return v, faces[(faces < vertices).all(1)]


def measure(name: str, seconds: float, part: str) -> dict:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    sys.path.insert(0, str(ROOT))
    from models import PTalker, PTalkerConfig
    from models.losses import compute_losses
    from ptalker.mesh import mesh_edges

    torch.manual_seed(0)
    torch.set_num_threads(2)
    if name == "vocaset":
        V, F_, period, ratio = 5023, 64, 30, 1
        speech = Wav2Vec2Model(Wav2Vec2Config())
    else:
        V, F_, period, ratio = 23370, 128, 25, 2
        speech = HubertModel(HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                          intermediate_size=4096, conv_bias=True, feat_extract_norm="layer",
                                          do_stable_layer_norm=True))
    vertices, faces = mesh_for(name, V)
    config = PTalkerConfig(vertice_dim=vertices.size, feature_dim=F_, period=period, fps=period,
                           n_subjects=8, audio_frames_per_frame=ratio)
    model = PTalker(config, speech, torch.from_numpy(mesh_edges(faces, len(vertices)))).train()
    frames = int(seconds * period)
    template = torch.from_numpy(vertices.reshape(1, -1))
    audio = torch.randn(1, int(seconds * 16000))
    motion = template.unsqueeze(1) + 0.001 * torch.randn(1, frames, vertices.size)
    base = rss_mb("VmRSS")
    started = time.time()
    if part == "gat":
        offsets = (motion - template.unsqueeze(1)).requires_grad_()
        model.spatial(offsets).sum().backward()
    else:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        out = model(audio, motion, template, torch.eye(8)[:1])
        loss = compute_losses(out, motion, config, torch.tensor([0]), torch.arange(100), None,
                              model.contrast_scale)["total"]
        loss.backward()
        optimizer.step()
    return {"peak_mb": rss_mb("VmHWM"), "before_mb": base, "seconds": time.time() - started, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.seconds, args.worker[1])))
        return
    print(f"{'configuration':<44}{'frames':>7}{'model+data MB':>15}{'peak MB':>10}{'step MB':>10}{'time s':>8}")
    for name, part, label in (("biwi", "gat", "spatial GAT only, BIWI mesh (fwd+bwd)"),
                              ("vocaset", "step", "train step: wav2vec2-base + VOCASET"),
                              ("biwi", "step", "train step: HuBERT-large + BIWI")):
        done = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--worker", name, part],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            print(f"{label:<44} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:<44}{r['frames']:>7}{r['before_mb']:>15.0f}{r['peak_mb']:>10.0f}"
              f"{r['peak_mb'] - r['before_mb']:>10.0f}{r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
