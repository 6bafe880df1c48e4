"""How much VOCASET's FDD depends on uniting or concatenating FLAME's forehead and eye_region ids.

FLAME_masks.pkl's `forehead` (133 ids) and `eye_region` (751 ids) share 57 vertices (the brows).
This project scores FDD on their union (827 vertices); a script that indexes with the two lists
concatenated (884 ids) counts the shared vertices twice. On the FLAME template, with synthetic upper-face
motions and a prediction that moves half as much as the ground truth, this prints FDD both ways.

    python benchmarks/fdd_region_convention.py [--flame ../shared/data/flame]
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptalker.mesh import read_mesh  # noqa: E402
from ptalker.metrics import upper_face_dynamics  # noqa: E402

FPS, FRAMES = 30, 150


def band_motion(vertices: np.ndarray, height: float, width: float, amplitude: float,
                envelope: np.ndarray) -> np.ndarray:
    """A vertical displacement of the vertices near `height` (a Gaussian band), modulated over time:
    vertices (V, 3), envelope (T,) -> motion (T, V, 3)."""
    weight = np.exp(-0.5 * ((vertices[:, 1] - height) / width) ** 2)
    motion = np.zeros((len(envelope),) + vertices.shape)
    motion[:, :, 1] = amplitude * weight[None] * envelope[:, None]
    return motion


def motions(vertices: np.ndarray, brows: np.ndarray, lids: np.ndarray) -> dict[str, np.ndarray]:
    """Synthetic ground-truth upper-face motions (T, V, 3), in metres."""
    t = np.arange(FRAMES) / FPS
    raise_ = band_motion(vertices, vertices[brows, 1].mean(), 0.01, 0.002, 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    blink = band_motion(vertices, vertices[lids, 1].mean(), 0.008, -0.003,
                        (np.sin(2 * np.pi * 0.3 * t) > 0.95).astype(float))
    noise = 0.001 * np.random.default_rng(0).standard_normal((FRAMES,) + vertices.shape)
    return {"brow raise": raise_, "blink": blink, "brow raise + blink": raise_ + blink,
            "independent noise per vertex": noise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flame", type=Path, default=ROOT.parent / "shared" / "data" / "flame",
                        help="folder holding FLAME_masks.pkl and FLAME_sample.ply")
    args = parser.parse_args()
    with open(args.flame / "FLAME_masks.pkl", "rb") as f:
        table = pickle.load(f, encoding="latin1")
    vertices, _ = read_mesh(args.flame / "FLAME_sample.ply")
    forehead, eyes = (np.asarray(table[name], dtype=np.int64).ravel() for name in ("forehead", "eye_region"))
    union, concatenated = np.union1d(forehead, eyes), np.concatenate([forehead, eyes])
    print(f"forehead {forehead.size}, eye_region {eyes.size}, shared {np.intersect1d(forehead, eyes).size}, "
          f"union {union.size}, concatenated {concatenated.size}")
    print(f"{'ground-truth motion':<30} {'FDD union':>12} {'FDD concat':>12} {'concat/union':>13}")
    for name, gt in motions(vertices, np.intersect1d(forehead, eyes), np.setdiff1d(eyes, forehead)).items():
        pred = 0.5 * gt
        fdd = [upper_face_dynamics(gt, ids) - upper_face_dynamics(pred, ids) for ids in (union, concatenated)]
        print(f"{name:<30} {fdd[0]:>12.4g} {fdd[1]:>12.4g} {fdd[1] / fdd[0]:>13.3f}")


if __name__ == "__main__":
    main()
