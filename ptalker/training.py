"""Training, validation and test loops for PTalker on a dataset in the standard layout.

One process trains on one device; under torchrun every process trains a DistributedDataParallel
replica on its own share of the length-bucketed batches, and rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models import PTalker
from models.losses import compute_losses

from .checkpoint import read_checkpoint, save_checkpoint
from .data import LengthBatchSampler, TalkingFaceDataset, collate
from .errors import UserError
from .fileio import atomic_path, save_npy
from .layout import result_stem
from .metrics import lip_vertex_error

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run; rank 0 of 1 without torchrun."""
    rank: int = 0
    world: int = 1
    # CPU group with a long timeout, for waiting while rank 0 alone works (filling the audio
    # cache, the test phase): that can outlast the default group's collective timeout
    wait_group: object = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def say(self, message: str) -> None:
        if self.main:
            print(message, file=sys.stderr)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others (it fills caches they then read)."""
        if self.active and not self.main:
            self.wait_for_all()
        yield
        if self.active and self.main:
            self.wait_for_all()

    def wait_for_all(self) -> None:
        """Every rank waits here until all have arrived."""
        if self.active:
            dist.barrier(group=self.wait_group)


def start_parallel(device: str) -> tuple[Parallel, str]:
    """Join the process group that torchrun describes in the environment: NCCL with one GPU per
    process on CUDA, gloo on the CPU. Returns (this process's place, its device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Parallel(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"{world} processes on this node but only {torch.cuda.device_count()} GPU(s): "
                            f"lower torchrun's --nproc_per_node")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    wait_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1))
    return Parallel(dist.get_rank(), dist.get_world_size(), wait_group), device


def stop_parallel(parallel: Parallel) -> None:
    if parallel.active and dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class TrainSettings:
    max_epoch: int = 100
    lr: float = 1e-4
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seed: int = 7
    device: str = "cpu"
    best_path: Path = Path("save/model.pth")
    last_path: Path = Path("save/model_last.pth")
    log_path: Path | None = None          # per-epoch CSV of the losses
    resume: bool = False
    amp: str = "off"                      # bf16 | fp16 | off; CUDA only
    grad_clip: float = 0.0                # max global gradient norm, 0: no clipping
    lr_schedule: str = "constant"         # constant | cosine (to zero at the last step)
    warmup_steps: int = 0                 # optimiser steps of linear warm-up
    num_workers: int = 0                  # DataLoader processes reading the vertex files
    identity_dropout: float = 0.0         # chance a clip trains without its one-hot (unseen/reference modes)
    self_feed: float = 0.0                # chance a fed-back frame is the model's own prediction
    audio_style_dropout: float = 0.0      # chance a clip keeping its one-hot trains without the audio style
    val_metric: str = "loss"              # loss (teacher-forced) | lve (of generation): picks the best
    ema: float = 0.0                      # decay of the weights' moving average; 0: no average
    parallel: Parallel = field(default_factory=Parallel)


def one_hot(subjects: torch.Tensor, n_subjects: int) -> torch.Tensor:
    """Subject indices (B,) -> (B, n_subjects); -1 (not a training subject) -> all zeros."""
    out = torch.zeros(len(subjects), n_subjects)
    known = subjects >= 0
    out[known, subjects[known]] = 1.0
    return out


def conditions_of(subject: int, n_subjects: int, every: bool = False) -> list[int]:
    """The training conditions a clip is scored under: its speaker's own if seen in training (or
    all, with `every`), all of them for a speaker unseen in training (subject -1)."""
    return list(range(n_subjects)) if subject < 0 or every else [subject]


def to_device(batch: dict, device) -> dict:
    """Tensors of a collated batch moved to `device` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _lengths(batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(audio lengths, frame lengths) of a batch whose clips differ in length, else (None, None)."""
    padded = len(set(batch["frame_lengths"].tolist())) > 1 or len(set(batch["audio_lengths"].tolist())) > 1
    return (batch["audio_lengths"], batch["frame_lengths"]) if padded else (None, None)


def _teacher_forced(model: PTalker, batch: dict, condition: torch.Tensor | None, fed_back: torch.Tensor | None,
                    motion_style_only: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """PTalker.forward on a collated batch (see batch_losses for the arguments)."""
    subjects = batch["subject"] if condition is None else condition
    return model(batch["audio"], batch["vertices"] if fed_back is None else fed_back, batch["template"],
                 one_hot(subjects, model.config.n_subjects).to(batch["audio"].device), *_lengths(batch),
                 motion_style_only)


def batch_losses(model: PTalker, batch: dict, lip_ids: torch.Tensor | None,
                 condition: torch.Tensor | None = None, fed_back: torch.Tensor | None = None,
                 motion_style_only: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher-forced losses of one padded batch; `condition` (B,) overrides the one-hot subjects,
    `fed_back` (B, T, V*3) the motion the decoder sees as its past (default: the captured motion),
    and `motion_style_only` (B,) bool marks clips decoded without their audio style."""
    out = _teacher_forced(model, batch, condition, fed_back, motion_style_only)
    return compute_losses(out, batch["vertices"], model.config, batch["subject"], lip_ids, _lengths(batch)[1],
                          model.contrast_scale)


class TrainStep(nn.Module):
    """Forward pass and losses as one module, so that DistributedDataParallel sees every parameter
    the losses use (the top-k contrast's temperature is used outside PTalker.forward)."""

    def __init__(self, model: PTalker, lip_ids: torch.Tensor | None, identity_dropout: float = 0.0,
                 self_feed: float = 0.0, audio_style_dropout: float = 0.0):
        super().__init__()
        self.model, self.identity_dropout, self.self_feed = model, identity_dropout, self_feed
        self.audio_style_dropout = audio_style_dropout
        self.register_buffer("lip_ids", lip_ids, persistent=False)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        condition = fed_back = motion_style_only = None
        B, device = len(batch["subject"]), batch["subject"].device
        if self.training and self.identity_dropout > 0:
            # a dropped one-hot (-1) trains an inference mode without one: half the clips as an unseen
            # speaker (style from speech and past motion), half as the reference-motion mode (style
            # from the captured past motion alone)
            dropped = torch.rand(B) < self.identity_dropout
            condition = batch["subject"].masked_fill(dropped.to(device), -1)
            motion_style_only = (dropped & (torch.rand(B) < 0.5)).to(device)
        if self.training and self.audio_style_dropout > 0:
            # the speech identifies a seen speaker as well as the one-hot does; decoding some clips
            # from the one-hot without the audio style makes the one-hot carry the style on its own
            kept = (batch["subject"] if condition is None else condition) >= 0
            silenced = kept & (torch.rand(B) < self.audio_style_dropout).to(device)
            motion_style_only = silenced if motion_style_only is None else motion_style_only | silenced
        if self.training and self.self_feed > 0:
            fed_back = self._mix_in_predictions(batch, condition, motion_style_only)
        return batch_losses(self.model, batch, self.lip_ids, condition, fed_back, motion_style_only)

    @torch.no_grad()
    def _mix_in_predictions(self, batch: dict, condition: torch.Tensor | None,
                            motion_style_only: torch.Tensor | None = None) -> torch.Tensor:
        """Captured motion (B, T, V*3) with each frame replaced, with chance `self_feed`, by the
        model's own one-pass prediction of it. Generation feeds back its own frames; training only on
        captured ones lets the decoder lean on a past it will never see (exposure bias) — in
        particular on the speaking style in that past, instead of on the speaker condition.
        A clip trained without its one-hot keeps its captured past: it stands for the reference-motion
        mode, whose style comes from captured motion."""
        captured = batch["vertices"]
        predicted = _teacher_forced(self.model, batch, condition, None, motion_style_only)["vertices"]
        swap = torch.rand(captured.shape[:2], device=captured.device) < self.self_feed
        swap &= ((batch["subject"] if condition is None else condition) >= 0).to(captured.device)[:, None]
        return torch.where(swap[..., None], predicted, captured)


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers, updated after
    every optimiser step. Validation, the best checkpoint and so the test use the average, which
    smooths the step-to-step noise of the raw weights; training goes on from the raw weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay, self.updates = model, decay, 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        # a short horizon at first, so that the random initial weights fade from the average quickly
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = self.model.state_dict()
        torch._foreach_lerp_(list(self.average.values()), [live[k] for k in self.average], 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its raw weights again after it."""
        raw = {k: v.clone() for k, v in self.model.state_dict().items() if k in self.average}
        self.model.load_state_dict(self.average, strict=False)
        try:
            yield
        finally:
            self.model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        for k, v in state["average"].items():
            self.average[k].copy_(v)


def _autocast(device: str, amp: str):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


@torch.no_grad()
def validation_loss(model: PTalker, dataset: TalkingFaceDataset, lip_ids, device, parallel: Parallel = Parallel(),
                    amp: str = "off") -> float:
    """Mean teacher-forced reconstruction loss (rec + mouth + vel as weighted in training; the
    auxiliary terms do not pick checkpoints); a clip of a speaker unseen in training is scored under every
    training condition and averaged. Each rank scores every world-th clip; sums and counts are
    reduced over the ranks, so every rank returns the mean over the whole set."""
    model.eval()
    total, count = 0.0, 0
    for i in range(parallel.rank, len(dataset), parallel.world):
        batch = to_device(collate([dataset[i]]), device)
        conditions = conditions_of(dataset.sequences[i].subject_index, model.config.n_subjects)
        with _autocast(device, amp):
            scores = [batch_losses(model, batch, lip_ids, torch.tensor([c], device=device))["reconstruction"]
                      for c in conditions]
        total += torch.stack(scores).float().mean().item()
        count += 1
    return _mean_over_ranks(total, count, parallel, device)


@torch.no_grad()
def validation_lip_error(model: PTalker, dataset: TalkingFaceDataset, lip_ids: torch.Tensor, device,
                         parallel: Parallel = Parallel(), batch_size: int = 32) -> float:
    """LVE of autoregressive generation, as the test measures it: per frame the largest squared
    lip-vertex error, averaged over all frames. A clip of a speaker unseen in training is generated
    under every training condition. Unlike the teacher-forced loss, this sees the errors that
    generation feeds back to itself. Ranks split the clips and reduce sums and counts."""
    model.eval()
    n, lips = model.config.n_subjects, lip_ids.cpu().numpy()
    jobs = []
    for i in range(parallel.rank, len(dataset), parallel.world):
        jobs += [(i, c) for c in conditions_of(dataset.sequences[i].subject_index, n)]
    jobs.sort(key=lambda job: dataset.frames(job[0]))   # similar lengths share a batch: less padding
    total, count = 0.0, 0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start: start + batch_size]
        batch = to_device(collate([dataset[i] for i, _ in chunk]), device)
        condition = one_hot(torch.tensor([c for _, c in chunk]), n).to(device)
        predicted = model.generate(batch["audio"], batch["template"], condition,
                                   audio_lengths=batch["audio_lengths"], frame_lengths=batch["frame_lengths"])
        for pred, gt, frames in zip(predicted.cpu().numpy(), batch["vertices"].cpu().numpy(),
                                    batch["frame_lengths"].tolist()):
            total += float(lip_vertex_error(pred[:frames], gt[:frames], lips).sum())
            count += frames
    return _mean_over_ranks(total, count, parallel, device)


def _mean_over_ranks(total: float, count: int, parallel: Parallel, device) -> float:
    if parallel.active:
        reduced = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(reduced)
        total, count = reduced.tolist()
    return total / count if count else math.nan


def lr_factor(schedule: str, warmup: int, total: int):
    """Multiplier of the base learning rate after `step` optimiser steps: linear warm-up over
    `warmup` steps, then constant or a half cosine that reaches zero after `total` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def _rng_state(device: str) -> dict:
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = {"python": random.getstate(), "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: str) -> None:
    random.setstate(state["python"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(obj, parallel: Parallel) -> list:
    """Every rank's `obj`, in rank order (collective)."""
    if not parallel.active:
        return [obj]
    out = [None] * parallel.world
    dist.all_gather_object(out, obj)
    return out


class EpochLog:
    """`<model_name>_log.csv`: one row per epoch (epoch, optimiser steps, each loss term, val, lr,
    seconds). A resumed run keeps the rows of the epochs it continues from."""

    def __init__(self, path: Path, keep_until_epoch: int):
        self.path = path
        rows = []
        if keep_until_epoch and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until_epoch]
        self.fields = list(rows[0]) if rows else None
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            if self.fields:
                writer = csv.DictWriter(f, self.fields)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: dict) -> None:
        new = self.fields is None
        self.fields = self.fields or list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


def _format_terms(means: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in means.items())


def _global_norm(tensors) -> torch.Tensor:
    tensors = [t for t in tensors if t is not None]
    return torch.nn.utils.get_total_norm(tensors) if tensors else torch.zeros(())


def train(model: PTalker, train_set: TalkingFaceDataset, val_set: TalkingFaceDataset, lip_ids, settings: TrainSettings,
          checkpoint_meta: dict) -> Path:
    """Train with Adam; keep the checkpoint with the best validation loss at `settings.best_path` and the
    state at the end of the latest epoch (for --resume) at `settings.last_path`. Returns the best
    checkpoint's path. With `settings.ema`, validation and the best checkpoint use the weights'
    moving average.

    A non-finite loss, gradient or parameter stops training with a UserError naming the epoch,
    step and clips, before any checkpoint of that epoch is written.

    checkpoint_meta: keyword arguments of save_checkpoint besides path/model/extra."""
    par, device = settings.parallel, settings.device
    amp = settings.amp
    if amp != "off" and torch.device(device).type != "cuda":
        par.say(f"note: --amp {amp} needs CUDA; training in float32 on {device}")
        amp = "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bfloat16 support: use --amp fp16")
    accum = settings.gradient_accumulation_steps
    torch.manual_seed(settings.seed + par.rank)   # different dropout on every replica
    model.to(device)
    if settings.val_metric == "lve" and lip_ids is None:
        raise UserError("--val_metric lve needs the lip region (--lip_mask)")
    step_module = TrainStep(model, None if lip_ids is None else lip_ids.to(device), settings.identity_dropout,
                            settings.self_feed, settings.audio_style_dropout)
    # some parameters (speech layers skipped by layerdrop, the adversary without known speakers) get
    # no gradient in some steps
    net = DistributedDataParallel(step_module, device_ids=[device] if device.startswith("cuda") else None,
                                  find_unused_parameters=True) if par.active else step_module
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel updates all parameters in one pass: a few times faster than the per-tensor loop
    optimizer = torch.optim.Adam(params, lr=settings.lr, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    sampler = LengthBatchSampler([train_set.frames(i) for i in range(len(train_set))], settings.batch_size,
                                 settings.seed, par.rank, par.world)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=settings.num_workers,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=settings.num_workers > 0)
    steps_per_epoch = math.ceil(len(sampler) / accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(
        settings.lr_schedule, settings.warmup_steps, steps_per_epoch * settings.max_epoch))
    average = WeightAverage(model, settings.ema) if settings.ema > 0 else None
    start_epoch, best, steps = 1, math.inf, 0
    lr = optimizer.param_groups[0]["lr"]     # of the latest step, for the log
    if settings.resume:
        start_epoch, best, steps = _resume(settings, model, optimizer, scaler, scheduler, average, par)
    log = EpochLog(settings.log_path, start_epoch - 1) if settings.log_path and par.main else None
    for epoch in range(start_epoch, settings.max_epoch + 1):
        sampler.set_epoch(epoch)
        step_module.train()
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        bad = None                 # (batch, names) of a non-finite loss since the last optimiser step
        step_names: list[str] = []  # clips of the current optimiser step
        bar = tqdm(loader, desc=f"epoch {epoch}/{settings.max_epoch}", unit="batch", leave=False,
                   disable=not par.main)
        started = time.time()
        for micro, batch in enumerate(bar, 1):
            boundary = micro % accum == 0 or micro == len(sampler)
            group = min(accum, len(sampler) - (micro - 1) // accum * accum)   # micro-batches in this step
            batch = to_device(batch, device)
            step_names += batch["names"]
            with net.no_sync() if par.active and not boundary else contextlib.nullcontext():
                with _autocast(device, amp):
                    terms = net(batch)
                scaler.scale(terms["total"] / group).backward()
            values = dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))
            if bad is None and not math.isfinite(values["total"]):
                bad = (micro, batch["names"])
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if boundary:
                where = f"epoch {epoch}, step {steps + 1}"
                _optimizer_step(params, optimizer, scaler, settings.grad_clip, amp, bad, where, step_names, par)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                steps += 1
                if not torch.isfinite(_global_norm(params)):
                    raise UserError(f"non-finite parameters after the optimiser step at {where} "
                                    f"({', '.join(step_names)}); no checkpoint written for this epoch "
                                    f"— try a lower --lr or --grad_clip 1.0")
                if average is not None:
                    average.update()
                bad, step_names = None, []
            if par.main:
                bar.set_postfix(loss=f"{sums['total'] / micro:.4g}")
        means = _epoch_means(sums, len(sampler), par, device)
        with average.swapped_in() if average is not None else contextlib.nullcontext():
            if not len(val_set):
                val = means["reconstruction"]
            elif settings.val_metric == "lve":
                val = validation_lip_error(model, val_set, step_module.lip_ids, device, par)
            else:
                val = validation_loss(model, val_set, step_module.lip_ids, device, par, amp)
            improved = val < best
            if improved and par.main:
                save_checkpoint(settings.best_path, model, **checkpoint_meta,
                                extra={"epoch": epoch, "val_loss": val, "val_metric": settings.val_metric})
        best = min(best, val)
        rng_states = _gather(_rng_state(device), par)
        if not par.main:
            continue
        seconds = time.time() - started
        print(f"epoch {epoch}: train {_format_terms(means)} | val {val:.6g}{' (best, saved)' if improved else ''}"
              f" | lr {lr:.3g} | {steps} steps | {seconds:.1f}s", file=sys.stderr)
        if log is not None:
            log.append({"epoch": epoch, "steps": steps, **{k: f"{v:.6g}" for k, v in means.items()},
                        "val": f"{val:.6g}", "lr": f"{lr:.6g}", "seconds": f"{seconds:.3f}"})
        save_checkpoint(settings.last_path, model, extra={
            "epoch": epoch, "best_val": best, "val_metric": settings.val_metric, "steps": steps,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_states,
            "ema": None if average is None else average.state_dict()},
            **checkpoint_meta)
    if par.main and not settings.best_path.is_file():
        raise UserError("training ran no epoch: raise --max_epoch (or drop --resume on a finished run)")
    return settings.best_path


def _resume(settings: TrainSettings, model, optimizer, scaler, scheduler, average: WeightAverage | None,
            par: Parallel) -> tuple[int, float, int]:
    """Restore the state at the end of the last finished epoch -> (next epoch, best validation loss,
    optimiser steps). The interrupted epoch reruns from its beginning with the same random numbers."""
    if not settings.last_path.is_file():
        raise UserError(f"--resume: no interrupted run to continue at {settings.last_path}")
    state = read_checkpoint(settings.last_path)
    extra = state["extra"]
    if "rng" not in extra:
        raise UserError(f"--resume: {settings.last_path} was written by an earlier version and cannot be continued")
    if extra.get("val_metric", "loss") != settings.val_metric:
        raise UserError(f"--resume: the run chose its best checkpoint by validation {extra.get('val_metric', 'loss')}, "
                        f"not {settings.val_metric}: pass the same --val_metric")
    saved_decay = (extra.get("ema") or {}).get("decay", 0.0)
    if saved_decay != settings.ema:
        raise UserError(f"--resume: the run averaged its weights with --ema {saved_decay:g}, not {settings.ema:g}: "
                        f"pass the same --ema")
    model.load_state_dict(state["state_dict"])
    if average is not None:
        average.load_state_dict(extra["ema"])
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if extra["scaler"]:
        scaler.load_state_dict(extra["scaler"])
    if len(extra["rng"]) == par.world:
        _set_rng_state(extra["rng"][par.rank], settings.device)
    else:
        par.say(f"note: the run was saved with {len(extra['rng'])} process(es), this one has {par.world}: "
                f"dropout draws differ from an uninterrupted run")
    par.say(f"resuming after epoch {extra['epoch']} (best validation {settings.val_metric} {extra['best_val']:.6g})")
    return extra["epoch"] + 1, extra["best_val"], extra["steps"]


def _optimizer_step(params, optimizer, scaler, grad_clip: float, amp: str, bad, where: str, names: list[str],
                    par: Parallel) -> None:
    """Unscale, check and clip the gradients, then step. Every rank reaches the same verdict: the
    gradients are already averaged over the ranks, and the loss flags are reduced here."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0 else \
        _global_norm(p.grad for p in params)
    flags = torch.stack([torch.tensor(float(bad is not None)), (~torch.isfinite(norm)).float().cpu()])
    flags = flags.to(params[0].device)
    if par.active:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    loss_bad, grad_bad = flags.tolist()
    if loss_bad:
        clips = f"batch {bad[0]} ({', '.join(bad[1])})" if bad else "a batch of another process"
        raise UserError(f"non-finite loss at {where}, {clips}; no checkpoint written for this epoch "
                        f"— try a lower --lr or --grad_clip 1.0")
    # fp16 overflows are routine: the scaler skips that step and lowers its scale
    if grad_bad and amp != "fp16":
        raise UserError(f"non-finite gradients at {where} ({', '.join(names)}); no checkpoint written for this epoch "
                        f"— try a lower --lr or --grad_clip 1.0")
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _epoch_means(sums: dict[str, float], batches: int, par: Parallel, device) -> dict[str, float]:
    """Per-term mean over the epoch's batches of every rank."""
    if par.active:
        reduced = torch.tensor(list(sums.values()) + [batches], dtype=torch.float64, device=device)
        dist.all_reduce(reduced)
        *values, batches = reduced.tolist()
        sums = dict(zip(sums, values))
    return {k: v / batches for k, v in sums.items()}


@torch.no_grad()
def write_test_predictions(model: PTalker, test_set: TalkingFaceDataset, train_subjects: list[str],
                           result_dir: Path, device, all_conditions: bool = False) -> list[Path]:
    """Animate every test clip autoregressively -> `<name>_condition_<subject>.npy` (T, V*3) files.

    A speaker seen in training is animated under its own condition (or all, with `all_conditions`);
    an unseen speaker under every training condition."""
    model.eval().to(device)
    written = []
    jobs = []
    for i, seq in enumerate(test_set.sequences):
        jobs += [(i, c) for c in conditions_of(seq.subject_index, len(train_subjects), all_conditions)]
    for i, c in tqdm(jobs, desc="test", unit="clip", leave=False):
        item = test_set[i]
        frames = len(item["vertices"])
        pred = model.generate(item["audio"][None].to(device), item["template"][None].to(device),
                              one_hot(torch.tensor([c]), len(train_subjects)).to(device), frames=frames)
        path = result_dir / f"{result_stem(item['name'], train_subjects[c])}.npy"
        save_npy(path, pred[0].cpu().numpy().astype(np.float32))
        written.append(path)
    return written
