"""Render predicted vertex sequences of a dataset to mp4 videos with their speech.

    python render.py --dataset vocaset --vertice_dim 15069 --fps 30

renders every `<dataset>/result/*.npy` to `<dataset>/output/<stem>.mp4`, with the audio of
`<dataset>/wav/<name>.wav` (a prediction `<name>_condition_<subject>.npy` takes `<name>.wav`) and
the faces of `<dataset>/templates/*.ply`. `--format glb html` writes glTF animations and pages that
play them instead of (or, with `mp4` too, beside) the videos; see docs/export.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ptalker.cli import parse_resolution
from ptalker.datasets import resolve_dataset
from ptalker.errors import UserError, print_user_error
from ptalker.layout import load_vertices, split_result_stem
from ptalker.mesh import find_template_mesh, read_mesh
from ptalker.render_sequence import render_sequence


def load_frames(path: Path, vertice_dim: int, what: str) -> np.ndarray:
    """A vertex file (see `ptalker.layout.load_vertices`) -> (T, vertice_dim), memory-mapped: the data
    is read when rendered."""
    vertices = load_vertices(path, what)
    if vertices.shape[1] * 3 != vertice_dim:
        raise UserError(f"{what} {path} has {vertices.shape[1]} vertices ({vertices.shape[1] * 3} values per "
                        f"frame): expected {vertice_dim // 3} vertices = {vertice_dim} values (check --vertice_dim)")
    return vertices.reshape(len(vertices), vertice_dim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="vocaset", help="vocaset, BIWI or a dataset folder")
    parser.add_argument("--vertice_dim", type=int, default=None,
                        help="values per frame (3 x vertices); default: the preset's or the template's")
    parser.add_argument("--fps", type=float, default=None, help="video frame rate; default: the preset's")
    parser.add_argument("--result_file", type=Path, default=None, help="render only this .npy")
    parser.add_argument("--output_path", type=Path, default=None, help="default: <dataset>/output")
    parser.add_argument("--wav_path", type=Path, default=None, help="default: <dataset>/wav")
    parser.add_argument("--side_by_side", action="store_true",
                        help="ground truth (<dataset>/vertices_npy/<name>.npy) | prediction")
    parser.add_argument("--heatmap", action="store_true",
                        help="colour the prediction by per-vertex distance to the ground truth")
    parser.add_argument("--heatmap_max", type=float, default=None,
                        help="distance shown as the top colour (mesh units); default: 99th percentile")
    parser.add_argument("--resolution", type=parse_resolution, default=(800, 800), help="N or WxH per panel")
    parser.add_argument("--antialias", action="store_true", help="4x multisampling: smoother edges, slower")
    parser.add_argument("--workers", type=int, default=None,
                        help="render threads, each with its own GL context; default: 2 if 2 cores")
    parser.add_argument("--format", nargs="+", choices=("mp4", "glb", "html"), default=["mp4"],
                        help="mp4: a video; glb: <stem>.glb (glTF morph animation) + <stem>.wav; html: <stem>.html, "
                             "a page that plays it (with the ground truth beside it when "
                             "<dataset>/vertices_npy/<name>.npy exists); several may be given")
    parser.add_argument("--export_tolerance_mm", type=float, default=0.1,
                        help="glb/html: every vertex of every frame within this of the prediction (mm)")
    args = parser.parse_args(argv)
    try:
        render_dataset(args)
    except UserError as exc:
        return print_user_error(exc)
    return 0


def render_dataset(args: argparse.Namespace) -> None:
    preset = resolve_dataset(args.dataset)
    folder = preset.folder
    template_path = find_template_mesh(folder)
    template, faces = read_mesh(template_path)
    vertice_dim = args.vertice_dim or preset.vertice_dim or template.size
    if vertice_dim != template.size:
        raise UserError(f"--vertice_dim {vertice_dim} does not match {template_path} "
                        f"({len(template)} vertices = {template.size} values)")
    fps = args.fps or preset.fps
    output_dir = args.output_path or folder / "output"
    wav_dir = args.wav_path or folder / "wav"
    if args.result_file is not None:
        results = [args.result_file]
    else:
        result_dir = folder / "result"
        if not result_dir.is_dir():
            raise UserError(f"no result folder {result_dir}: run the prediction step first or pass --result_file")
        results = sorted(result_dir.glob("*.npy"))
        if not results:
            raise UserError(f"no .npy predictions in {result_dir}")

    # check every input before the first (slow) render, so a bad file fails the run at once
    jobs = []
    for path in results:
        name, _ = split_result_stem(path.stem)
        prediction = load_frames(path, vertice_dim, "prediction")
        wav = wav_dir / f"{name}.wav"
        if not wav.is_file():
            raise UserError(f"audio for {path.name} not found: {wav} (see --wav_path)")
        truth = None
        truth_path = folder / "vertices_npy" / f"{name}.npy"
        page_truth = "html" in args.format and truth_path.is_file()
        if args.side_by_side or args.heatmap or page_truth:
            truth = load_frames(truth_path, vertice_dim, "ground truth")[::preset.capture_stride]
            if len(truth) != len(prediction):
                frames = min(len(truth), len(prediction))
                print(f"note: {path.name}: {len(prediction)} predicted and {len(truth)} ground-truth "
                      f"frames; rendering the first {frames}", file=sys.stderr)
                prediction, truth = prediction[:frames], truth[:frames]
        jobs.append((path, prediction, truth, wav))

    for path, prediction, truth, wav in jobs:
        if set(args.format) - {"mp4"}:
            export_result(path.stem, prediction, faces, fps, output_dir, wav, truth, args)
        if "mp4" not in args.format:
            continue
        out = render_sequence(prediction, faces, output_dir / f"{path.stem}.mp4", fps, audio_path=wav,
                              gt=truth, heatmap=args.heatmap, heatmap_max=args.heatmap_max,
                              side_by_side=args.side_by_side, resolution=args.resolution,
                              antialias=args.antialias, workers=args.workers)
        print(f"wrote {out}")


def export_result(stem: str, prediction: np.ndarray, faces: np.ndarray, fps: float, output_dir: Path, wav: Path,
                  truth: np.ndarray | None, args: argparse.Namespace) -> None:
    """--format glb / html of one prediction (T, V*3), all files or none."""
    import contextlib

    from ptalker.export import ExportOptions, export_animation

    formats = [f for f in args.format if f != "mp4"]
    with contextlib.ExitStack() as stack:
        done = export_animation(stack, stem, np.asarray(prediction), faces, fps, output_dir, formats,
                                ExportOptions(tolerance_mm=args.export_tolerance_mm), audio_path=wav,
                                truth=truth if "html" in formats else None)
    for path in done.files:
        print(f"wrote {path}")
    for note in done.notes:
        print(f"  {note}")


if __name__ == "__main__":
    sys.exit(main())
