"""Inference speed and memory of full-size PTalker configurations on CPU.

    python benchmarks/bench_inference.py [--quick] [--lengths 5 10 30 60] [--configs vocaset biwi]
                                         [--threads 2] [--naive_max 10] [--fused_max 10]

Configurations, with randomly initialised speech encoders of the real sizes (no download):
  vocaset: wav2vec2-base (768 wide, 12 layers), V=5023, F=64, 30 fps, one audio step per frame
  biwi:    HuBERT-large (1024 wide, 24 layers), V=23370, F=128, 25 fps, two audio steps per frame
both with 6 decoder layers and the spatial GAT on the real template mesh from ../shared/data when it
is there, else on a generated grid mesh with the same vertex count.

Each row runs in a fresh process, so `peak GB` is that process's resident high-water mark (VmHWM):
weights, activations and caches of one generate() call. Columns: speech encoder seconds, the rest
of generate() (the autoregressive decode loop), total, real-time factor (wall s / audio s), CPU
real-time factor (CPU seconds of all threads / audio s: less sensitive to other load on the
machine), decode milliseconds per frame, peak memory, and the decode wall time of the
full-recompute reference path (use_cache=False: every step re-embeds the whole generated prefix
through the GAT and re-runs the encoders and decoder over it, as the public code does; quadratic
in length) divided by the cached one, timed up to --naive_max seconds; then the fused step
(generate(fused=True): the one-frame step compiled by Inductor on the CPU) in decode milliseconds per
frame, `eager/fused` (the cached eager loop's per-frame time over the fused one's, measured in the
same process one after the other) and the seconds the one-off compilation took (less when Inductor's
on-disk cache already holds the step), up to --fused_max seconds. The load average is printed too:
wall times on a shared CPU grow with it.

Rows run with the environment's OMP_WAIT_POLICY, printed above the table. Unset (OpenMP's default:
threads spin a while before they sleep) is what the fused step wants: its second thread works only
between short parallel regions (see models/decoding.py, fused_cpu_threads). With PASSIVE the fused
step runs on one thread. Spinning threads stall on a CPU shared with other busy processes (measured
here: decode loops 30-70x slower, erratically), so time on an idle machine, or set PASSIVE there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("PTALKER_SHARED_DATA", ROOT.parent / "shared" / "data"))

CONFIGS = {
    "vocaset": dict(encoder="wav2vec2-base", mesh="flame/FLAME_sample.ply", vertices=5023, feature_dim=64,
                    period=30, fps=30, ratio=1, subjects=8),
    "biwi": dict(encoder="hubert-large", mesh="biwi/BIWI.ply", vertices=23370, feature_dim=128,
                 period=25, fps=25, ratio=2, subjects=6),
}


def speech_model(name: str):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    if name == "wav2vec2-base":
        return Wav2Vec2Model(Wav2Vec2Config())
    return HubertModel(HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                    intermediate_size=4096, conv_bias=True, feat_extract_norm="layer",
                                    do_stable_layer_norm=True))


def grid_mesh(count: int):
    """A flat triangulated grid with exactly `count` vertices (last row partial), like a face mesh
    in edges per vertex."""
    import numpy as np

    width = int(np.ceil(np.sqrt(count)))
    index = np.arange(count)
    vertices = np.stack([index % width, index // width, np.zeros(count)], 1).astype(np.float32) / width
    faces = []
    for r in range((count + width - 1) // width):
        for c in range(width - 1):
            a, b, d, e = r * width + c, r * width + c + 1, (r + 1) * width + c, (r + 1) * width + c + 1
            if e < count:
                faces += [(a, b, d), (b, e, d)]
    return vertices, np.asarray(faces, dtype=np.int64)


def template_mesh(spec: dict):
    from ptalker.mesh import read_mesh

    path = SHARED / spec["mesh"]
    if path.exists():
        vertices, faces = read_mesh(path)
        if len(vertices) == spec["vertices"]:
            return vertices, faces, path.name
    return (*grid_mesh(spec["vertices"]), "generated grid")


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    raise RuntimeError("VmHWM missing from /proc/self/status")


def run_row(name: str, seconds: float, threads: int, naive: bool, fused: bool) -> dict:
    """One configuration at one length, in this (fresh) process."""
    import torch

    from models import PTalker, PTalkerConfig
    from ptalker.mesh import mesh_edges

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = CONFIGS[name]
    vertices, faces, mesh_name = template_mesh(spec)
    config = PTalkerConfig(vertice_dim=vertices.size, feature_dim=spec["feature_dim"], period=spec["period"],
                           fps=spec["fps"], n_subjects=spec["subjects"], audio_model=spec["encoder"],
                           audio_frames_per_frame=spec["ratio"], decoder_layers=6)
    model = PTalker(config, speech_model(spec["encoder"]), torch.from_numpy(mesh_edges(faces, len(vertices))))
    torch.nn.init.normal_(model.head.weight, std=1e-3)   # non-zero motion, so every frame does real work
    model.eval()
    template = torch.from_numpy(vertices.reshape(1, -1)).float()
    one_hot = torch.eye(spec["subjects"])[:1]

    clocks = (time.perf_counter, time.process_time)   # wall, and CPU seconds of this process
    encoder_time = []

    def start(module, inputs):
        encoder_time.append([-clock() for clock in clocks])

    def stop(module, inputs, output):
        encoder_time[-1] = [t + clock() for t, clock in zip(encoder_time[-1], clocks)]

    model.audio.register_forward_pre_hook(start)
    model.audio.register_forward_hook(stop)

    def timed(audio, use_cache, fused=False):
        """-> (encoder wall, decode wall, encoder CPU, decode CPU) seconds of one generate()."""
        encoder_time.clear()
        begin = [clock() for clock in clocks]
        model.generate(audio, template, one_hot, use_cache=use_cache, fused=fused)
        total = [clock() - b for clock, b in zip(clocks, begin)]
        (enc_wall, enc_cpu), = encoder_time
        return enc_wall, total[0] - enc_wall, enc_cpu, total[1] - enc_cpu

    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        timed(torch.randn(1, 16000, generator=generator), True)     # one-off kernel set-up
        audio = torch.randn(1, int(seconds * 16000), generator=generator)
        encode, decode, encode_cpu, decode_cpu = timed(audio, True)
        peak = peak_rss_gb()
        naive_decode = timed(audio, False)[1] if naive else None
        fused_decode = compile_seconds = None
        if fused:
            started = time.perf_counter()
            timed(audio[:, :16000], True, fused=True)     # compiles the step once for this process
            compile_seconds = time.perf_counter() - started
            fused_decode = timed(audio, True, fused=True)[1]
    frames = round(seconds * spec["fps"])
    return dict(config=name, encoder=spec["encoder"], mesh=mesh_name, seconds=seconds, encode=encode,
                decode=decode, cpu=encode_cpu + decode_cpu, ms_per_frame=1000 * decode / frames, peak_gb=peak,
                naive_ratio=None if naive_decode is None else naive_decode / decode,
                fused_ms_per_frame=None if fused_decode is None else 1000 * fused_decode / frames,
                compile_seconds=compile_seconds)


def print_table(rows: list[dict], threads: int) -> None:
    header = (f"{'config':<8} {'speech encoder':<15} {'mesh':<17} {'audio s':>7} {'enc s':>7} {'decode s':>8} "
              f"{'total s':>8} {'RTF':>6} {'CPU RTF':>7} {'ms/frame':>8} {'peak GB':>7} {'naive/cached':>12} "
              f"{'fused ms/frame':>14} {'eager/fused':>11} {'compile s':>9}")
    print(f"torch threads: {threads}; load average (1, 5, 15 min) at the end: "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(header)
    print("-" * len(header))
    for r in rows:
        total = r["encode"] + r["decode"]
        naive = "-" if r["naive_ratio"] is None else f"{r['naive_ratio']:.1f}x"
        fused = r["fused_ms_per_frame"]
        fused_cols = f"{'-':>14} {'-':>11} {'-':>9}" if fused is None else \
            f"{fused:>14.2f} {r['ms_per_frame'] / fused:>10.1f}x {r['compile_seconds']:>9.0f}"
        print(f"{r['config']:<8} {r['encoder']:<15} {r['mesh']:<17} {r['seconds']:>7.0f} {r['encode']:>7.2f} "
              f"{r['decode']:>8.2f} {total:>8.2f} {total / r['seconds']:>6.3f} {r['cpu'] / r['seconds']:>7.3f} {r['ms_per_frame']:>8.2f} "
              f"{r['peak_gb']:>7.2f} {naive:>12} {fused_cols}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[5, 10, 30, 60], help="audio seconds")
    parser.add_argument("--quick", action="store_true", help="5 and 10 s only")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive_max", type=float, default=10,
                        help="time the full-recompute path up to this length (it is quadratic)")
    parser.add_argument("--fused_max", type=float, default=10,
                        help="also time the fused decode step (compiled once per row, which takes a minute or "
                             "more per configuration) up to this length; 0: never")
    parser.add_argument("--row", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        name, seconds = args.row[0], float(args.row[1])
        print(json.dumps(run_row(name, seconds, args.threads, seconds <= args.naive_max, seconds <= args.fused_max)))
        return
    lengths = [5, 10] if args.quick else args.lengths
    rows = []
    for name in args.configs:
        for seconds in lengths:
            done = subprocess.run([sys.executable, __file__, "--row", name, str(seconds), "--threads",
                                   str(args.threads), "--naive_max", str(args.naive_max),
                                   "--fused_max", str(args.fused_max)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} at {seconds:g} s failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name} {seconds:g} s done", file=sys.stderr, flush=True)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default)')}")
    print_table(rows, args.threads)


if __name__ == "__main__":
    main()
