"""Training and generation speed of the full-size configurations on one GPU, as one table.

    python benchmarks/bench_gpu.py [--device cuda] [--batch_sizes 1 4 8 16] [--steps 3]
    python benchmarks/bench_gpu.py --device cpu --quick      # tiny sizes: checks the script itself

Configurations, with randomly initialised models of the real sizes (no download) on a generated
grid mesh of the real vertex count:
  vocaset: wav2vec2-base (768 wide, 12 layers), V=5023, F=64, 30 fps, one audio step per frame
  biwi:    HuBERT-large (1024 wide, 24 layers), V=23370, F=128, 25 fps, two audio steps per frame
and the network's other sizes at main.py's defaults (6 decoder layers, 6+6 motion-encoder layers).

Rows:
  train     sequences/s of the training step (forward, losses, backward, clipping-free fused
            Adam: what ptalker.trainer runs per batch) on padded batches of 4-8 s clips, float32
            (TF32 matmuls) and bf16 autocast; peak GPU memory of those steps, and the operations
            per step that made the host wait for the GPU (torch.cuda's sync debug mode; each
            kind is printed on stderr). The first --warmup steps are not timed.
  generate  real-time factor (wall seconds / speech seconds) of PTalker.generate for one clip,
            and first-frame latency: the wall time of generate() asked for one frame, i.e. the
            speech encoding plus one decoder step. `eager` is the plain frame loop, `captured`
            the model's captured/compiled one-frame step (n/a when the model has none).
  DDP       seconds per VOCASET training step (batch 4 per GPU, bf16) with 1 process and with 2
            under DistributedDataParallel as the trainer sets it up, and the difference: the cost
            of the gradient all-reduce (needs two GPUs; says so otherwise).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import PTalker, PTalkerConfig  # noqa: E402
from ptalker.augmentation import TrainStep  # noqa: E402
from ptalker.batches import one_hot  # noqa: E402
from ptalker.data import collate  # noqa: E402
from ptalker.device import autocast, tf32_matmuls  # noqa: E402
from ptalker.mesh import mesh_edges  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One benchmarked configuration: the speech model and the network's dataset-dependent sizes."""
    name: str
    encoder: str            # wav2vec2 | hubert
    hidden: int
    layers: int
    heads: int
    vertices: int
    feature_dim: int
    fps: int
    ratio: int              # audio steps per motion frame
    subjects: int
    large: bool             # HuBERT-large's layer-norm-first layout
    model_layers: int = 6   # decoder, motion-encoder and motion-convolution layers


FULL = (Setup("vocaset (wav2vec2-base)", "wav2vec2", 768, 12, 12, 5023, 64, 30, 1, 8, False),
        Setup("biwi (HuBERT-large)", "hubert", 1024, 24, 16, 23370, 128, 25, 2, 6, True))
QUICK = (Setup("vocaset (tiny)", "wav2vec2", 32, 2, 2, 200, 16, 30, 1, 8, False, 1),
         Setup("biwi (tiny)", "hubert", 32, 2, 2, 300, 16, 25, 2, 6, True, 1))


def grid_mesh(count: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat triangulated grid with exactly `count` vertices (last row partial) -> (vertices, faces)."""
    cols = math.ceil(math.sqrt(count))
    ids = np.arange(count)
    vertices = np.stack([ids % cols, ids // cols, np.zeros(count)], axis=1).astype(np.float32) / cols
    faces = []
    for v in range(count):
        right, down, diagonal = v + 1, v + cols, v + cols + 1
        if (v + 1) % cols and diagonal < count:
            faces += [(v, right, diagonal), (v, diagonal, down)]
    return vertices, np.asarray(faces, dtype=np.int64)


def build(setup: Setup) -> tuple[PTalker, torch.Tensor]:
    """A randomly initialised PTalker of `setup`'s sizes -> (model, template (1, V*3))."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    kinds = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel)}
    config_class, model_class = kinds[setup.encoder]
    layout = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True) if setup.large else {}
    tiny = dict(conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4) \
        if setup.hidden < 128 else {}
    speech = model_class(config_class(hidden_size=setup.hidden, num_hidden_layers=setup.layers,
                                      num_attention_heads=setup.heads, intermediate_size=4 * setup.hidden,
                                      **layout, **tiny))
    vertices, faces = grid_mesh(setup.vertices)
    n = setup.model_layers
    config = PTalkerConfig(vertice_dim=vertices.size, feature_dim=setup.feature_dim, period=setup.fps,
                           fps=setup.fps, n_subjects=setup.subjects, audio_frames_per_frame=setup.ratio,
                           decoder_layers=n, motion_layers=n, motion_conv_layers=n,
                           style_dim=min(128, 8 * setup.feature_dim))
    model = PTalker(config, speech, torch.from_numpy(mesh_edges(faces, len(vertices))))
    torch.nn.init.normal_(model.head.weight, std=0.01)    # not the all-zero start: real-looking work
    return model, torch.from_numpy(vertices.reshape(1, -1))


def clips(setup: Setup, template: torch.Tensor, batch: int, seconds: tuple[float, float], seed: int) -> dict:
    """A collated batch of `batch` random clips of `seconds` (lo, hi) of speech and motion."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(batch):
        length = seconds[0] + (seconds[1] - seconds[0]) * torch.rand((), generator=g).item()
        frames = int(length * setup.fps)
        samples = int(length * 16000) if setup.ratio == 1 else 640 * frames + 80
        items.append({"name": f"clip{i}", "audio": torch.randn(samples, generator=g) * 0.1,
                      "vertices": template[0] + 0.001 * torch.randn(frames, template.shape[1], generator=g),
                      "template": template[0], "subject": i % setup.subjects})
    return collate(items)


class Clock:
    """Wall time of a block, with the device's queue drained on either side."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()


@contextlib.contextmanager
def counted_syncs(device: str, enabled: bool):
    """On CUDA, the operations in the block that made the host wait for the GPU (torch's sync
    debug mode), as a list of warnings; None elsewhere or when not `enabled`."""
    if not enabled or torch.device(device).type != "cuda":
        yield None
        return
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for warning in {str(w.message).splitlines()[0] for w in found}:
        print(f"host sync: {warning}", file=sys.stderr)


def peak_memory(device: str) -> str:
    if torch.device(device).type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB"


def train_row(model: PTalker, template: torch.Tensor, setup: Setup, batch_size: int, amp: str, args) -> list[str]:
    """sequences/s and peak memory of training steps at `batch_size` under `amp` (off | bf16)."""
    device = args.device
    step = TrainStep(model, None).train()
    params = [p for p in model.parameters() if p.requires_grad]
    adam = torch.optim.Adam(params, lr=1e-6, fused=True)
    batches = [clips(setup, template, batch_size, args.seconds, seed) for seed in range(args.warmup + args.steps)]
    batches = [{k: v.to(device) if torch.is_tensor(v) and k not in ("audio_lengths", "frame_lengths", "subject")
                else v for k, v in b.items()} for b in batches]
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    syncs = "n/a"
    try:
        for i, batch in enumerate(batches):
            if i == args.warmup:
                clock = Clock(device).__enter__()
            with counted_syncs(device, i >= args.warmup) as found:
                with autocast(device, amp):
                    total = step(batch)["total"]
                total.backward()
                adam.step()
                adam.zero_grad(set_to_none=True)
            if found is not None:
                syncs = f"{int(syncs if syncs != 'n/a' else 0) + len(found)}"
        clock.__exit__()
        rate = f"{batch_size * args.steps / clock.seconds:.2f}"
        syncs = syncs if syncs == "n/a" else f"{int(syncs) / args.steps:g}"
    except torch.OutOfMemoryError:
        rate = "OOM"
        adam.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    memory = peak_memory(device)
    del adam
    return ["train", setup.name, str(batch_size), "bf16" if amp == "bf16" else "fp32", rate, memory, syncs]


def captured_generate(model: PTalker):
    """The model's captured/compiled generation, as a function like generate, or None."""
    if "fused" in inspect.signature(model.generate).parameters:
        return lambda *a, **k: model.generate(*a, fused=True, **k)
    if hasattr(model, "compile_decode"):
        model.compile_decode()
        return model.generate
    return None


def generate_rows(model: PTalker, template: torch.Tensor, setup: Setup, lengths: list[float], device: str) -> list:
    """RTF and first-frame latency of generating `lengths` seconds of speech, eager and captured."""
    rows = []
    condition = one_hot(torch.tensor([0]), setup.subjects).to(device)
    template = template.to(device)
    modes = {"eager": model.generate, "captured": captured_generate(model)}
    for seconds in lengths:
        audio = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
        audio = audio.to(device)
        for mode, generate in modes.items():
            try:
                if generate is not None:   # warm-up at this length: compilation and capture are not timed
                    generate(audio, template, condition)
                    generate(audio, template, condition, frames=1)
            except (RuntimeError, NotImplementedError, AssertionError) as exc:   # e.g. no CUDA graphs here
                print(f"{mode} generation unavailable: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
                modes[mode] = generate = None
            if generate is None:
                rows.append(["generate", f"{seconds:g} s", mode, "n/a", "n/a"])
                continue
            with Clock(device) as whole:
                generate(audio, template, condition)
            with Clock(device) as first:
                generate(audio, template, condition, frames=1)
            rows.append(["generate", f"{seconds:g} s", mode, f"{whole.seconds / seconds:.3f}",
                         f"{first.seconds * 1000:.1f} ms"])
    return rows


def ddp_worker(rank: int, world: int, port: int, out: str, steps: int, warmup: int) -> None:
    """One process of the DDP measurement: VOCASET training steps at batch 4 per GPU in bf16, set up
    as ptalker.trainer does; rank 0 writes the seconds per step to `out`."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = f"cuda:{rank}"
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device(device))
    torch.manual_seed(0)
    setup = FULL[0]
    model, template = build(setup)
    step = TrainStep(model.to(device), None).train()
    net = DistributedDataParallel(step, broadcast_buffers=False, find_unused_parameters=step.may_skip_parameters())
    adam = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6, fused=True)
    for i in range(warmup + steps):
        if i == warmup:
            dist.barrier()
            clock = Clock(device).__enter__()
        batch = clips(setup, template, 4, (4.0, 8.0), seed=i)
        batch = {k: v.to(device) if torch.is_tensor(v) and k not in ("audio_lengths", "frame_lengths", "subject")
                 else v for k, v in batch.items()}
        with autocast(device, "bf16"):
            total = net(batch)["total"]
        total.backward()
        adam.step()
        adam.zero_grad(set_to_none=True)
    clock.__exit__()
    if rank == 0:
        Path(out).write_text(str(clock.seconds / steps))
    dist.destroy_process_group()


def ddp_line(device: str, quick: bool, steps: int, warmup: int) -> str:
    """Seconds per step with 1 and 2 processes (one GPU each, the same batch per GPU)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    count = torch.cuda.device_count() if torch.device(device).type == "cuda" else 0
    if count < 2 or quick:
        return f"DDP overhead (1 vs 2 processes): not measured: needs 2 GPUs (found {count})" \
               f"{' and no --quick' if quick and count >= 2 else ''}"
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            with socket.socket() as s:   # a free port for the rendezvous
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            out = str(Path(tmp) / f"world{world}")
            mp.spawn(ddp_worker, args=(world, port, out, steps, warmup), nprocs=world)
            seconds.append(float(Path(out).read_text()))
    return f"DDP overhead (1 vs 2 processes), {FULL[0].name}, batch 4 per GPU, bf16: {seconds[0]:.3f} s/step " \
           f"alone, {seconds[1]:.3f} s/step with 2 GPUs ({100 * (seconds[1] / seconds[0] - 1):+.0f}%)"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + rows)


def run(args: argparse.Namespace) -> None:
    """Print the table for the settings in `args` (see main)."""
    print(f"device {args.device}{' (quick: tiny sizes)' if args.quick else ''}, torch {torch.__version__}")
    train_rows, generation = [], []
    for setup in args.setups:
        torch.manual_seed(0)
        model, template = build(setup)
        model.to(args.device)
        for batch_size in args.batch_sizes:
            for amp in ("off", "bf16"):
                train_rows.append(train_row(model, template, setup, batch_size, amp, args))
                print(" | ".join(train_rows[-1]), file=sys.stderr)
        if setup is args.setups[0]:
            generation = generate_rows(model.eval(), template, setup, args.lengths, args.device)
        del model
    print(table(train_rows, ["row", "configuration", "batch", "precision", "sequences/s", "peak GPU memory",
                             "host syncs/step"]))
    print()
    print(table(generation, ["row", "speech", "mode", "RTF", "first frame"]))
    print()
    print(ddp_line(args.device, args.quick, args.steps, args.warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models, short clips: checks the script")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=None, help="default 1 4 8 16 (quick: 1 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per row")
    args = parser.parse_args()
    args.setups = QUICK if args.quick else FULL
    args.batch_sizes = args.batch_sizes or ([1, 2] if args.quick else [1, 4, 8, 16])
    args.seconds = (0.4, 0.8) if args.quick else (4.0, 8.0)
    args.lengths = [0.5, 1.0] if args.quick else [10.0, 60.0]
    if args.quick:
        args.steps, args.warmup = 1, 1
    with tf32_matmuls(args.device, True):   # as training runs
        run(args)


if __name__ == "__main__":
    main()
