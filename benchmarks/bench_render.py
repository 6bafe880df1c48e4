"""Rendering throughput: frames/s of a full render to mp4 (render + H.264 encode) at 800x800.

    python benchmarks/bench_render.py [--mesh FLAME.ply BIWI.ply] [--frames 150]

Compares, in one run and on the same synthetic talking motion: render_sequence as configured by
default, with a single render thread and with 4x antialiasing, against the common pattern of building
a pyrender OffscreenRenderer and scene for every frame (same encoder, fewer frames since it is
slow). CPU ms/frame (all processes) shows the cost independently of other load on the machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptalker.mesh import read_mesh  # noqa: E402
from ptalker.gl_context import select_backend  # noqa: E402
from ptalker.render_sequence import default_workers, render_sequence  # noqa: E402
from ptalker.video import open_video  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESOLUTION = (800, 800)
FPS = 30


def talking_motion(template: np.ndarray, frames: int) -> np.ndarray:
    """The template with its lower third opening and closing like a jaw, (T, V, 3)."""
    lo, hi = template.min(0), template.max(0)
    height = hi[1] - lo[1]
    weight = np.clip((lo[1] + height / 3 - template[:, 1]) / (height / 3), 0, 1)[:, None]
    opening = 0.04 * height * np.abs(np.sin(np.arange(frames) / 4))[:, None, None]
    return (template[None] - opening * weight * np.array([0, 1, 0.3], np.float32)).astype(np.float32)


def per_frame_renderer(frames: np.ndarray, faces: np.ndarray, out: Path) -> None:
    """The baseline: a new pyrender OffscreenRenderer, scene and mesh for every frame."""
    import pyrender
    import trimesh

    lo, hi = frames[0].min(0), frames[0].max(0)
    center, size = (lo + hi) / 2, float((hi - lo).max())
    camera_pose = np.eye(4)
    camera_pose[:3, 3] = center + [0, 0, 2.2 * size]
    with open_video(out, *RESOLUTION, FPS, num_frames=len(frames)) as write:
        for vertices in frames:
            renderer = pyrender.OffscreenRenderer(*RESOLUTION)
            scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[0.2] * 3)
            scene.add(pyrender.Mesh.from_trimesh(trimesh.Trimesh(vertices, faces, process=False), smooth=True))
            scene.add(pyrender.PerspectiveCamera(yfov=np.radians(25)), pose=camera_pose)
            scene.add(pyrender.DirectionalLight(intensity=3.0), pose=camera_pose)
            color, _ = renderer.render(scene)
            renderer.delete()
            write(np.ascontiguousarray(color))


def timed(fn, frames: int) -> tuple[float, float]:
    """(frames/s wall-clock, CPU ms/frame of this process and its children, e.g. ffmpeg)."""
    def cpu() -> float:
        return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for field in ("ru_utime", "ru_stime"))

    start_wall, start_cpu = time.perf_counter(), cpu()
    fn()
    return frames / (time.perf_counter() - start_wall), (cpu() - start_cpu) / frames * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mesh", type=Path, nargs="+",
                        default=[SHARED / "flame" / "FLAME_sample.ply", SHARED / "biwi" / "BIWI.ply"])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--baseline_frames", type=int, default=30)
    args = parser.parse_args()
    print(f"backend: {select_backend()}, {RESOLUTION[0]}x{RESOLUTION[1]}, {args.frames} frames, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        for path in args.mesh:
            template, faces = read_mesh(path)
            motion = talking_motion(template, args.frames)
            print(f"{path.name} ({len(template)} vertices, {len(faces)} faces):")
            results = {}
            for name, options in [(f"render_sequence ({default_workers()} threads)", {}),
                                  ("render_sequence, 1 thread", {"workers": 1}),
                                  ("render_sequence, antialias", {"antialias": True})]:
                results[name] = timed(lambda: render_sequence(
                    motion, faces, out, FPS, resolution=RESOLUTION, template=template, progress=False,
                    **options), args.frames)
            frames = motion[:args.baseline_frames]
            results["pyrender renderer per frame"] = timed(lambda: per_frame_renderer(frames, faces, out), len(frames))
            baseline = results["pyrender renderer per frame"][0]
            for name, (fps, cpu_ms) in results.items():
                print(f"  {name:30s} {fps:6.1f} frames/s  {cpu_ms:6.1f} CPU ms/frame  {fps / baseline:5.1f}x")


if __name__ == "__main__":
    main()
