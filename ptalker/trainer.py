"""Training of PTalker on a dataset in the standard layout: its settings, the Trainer, and `train`."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models import PTalker

from .augmentation import TrainStep
from .checkpoint import SaveInterval, read_checkpoint, save_checkpoint, save_interval
from .cli import at_least, fraction, option, positive
from .data import LengthBatchSampler, TalkingFaceDataset, collate
from .device import AMP_CHOICES, autocast, batch_to_device, default_amp, resolve_amp, tf32_matmuls
from .distributed import Parallel, broadcast_from_main, gather, sum_tensors_over_ranks
from .epoch_log import EpochLog
from .errors import UserError
from .random_state import capture_rng_state, restore_rng_state
from .validation import validation_lip_error, validation_loss
from .weight_average import WeightAverage

NON_FINITE_HINT = "no checkpoint written for this epoch — try a lower --lr or --grad_clip 1.0"


@dataclass
class TrainConfig:
    """How to train: each field with help text is also main.py's flag of the same name (see ptalker.cli);
    lr, max_epoch and amp default on the command line to the --recipe's values."""
    max_epoch: int = option(100, "training epochs (default: the recipe's)", type=at_least(0))
    lr: float = option(1e-4, "Adam learning rate (default: the recipe's)", type=positive)
    batch_size: int = option(1, "clips per batch, per process; clips of similar length are batched together",
                             type=at_least(1))
    gradient_accumulation_steps: int = option(
        1, "batches whose gradients are averaged into one optimiser step", type=at_least(1))
    seed: int = option(7, "random seed of the initial weights, the batch order and the augmentation", type=int)
    device: str = "cpu"
    best_path: Path = Path("save/model.pth")
    last_path: Path = Path("save/model_last.pth")
    log_path: Path | None = None          # per-epoch CSV of the losses
    resume: bool = option(False, "continue the interrupted run from <model_name>_last.pth")
    amp: str = option("off", "mixed precision on CUDA: auto = bf16 on GPUs from Ampere on, else fp16; fp16 is "
                             "the public code's choice, with loss scaling; ignored on the CPU (default: the "
                             "recipe's)", choices=AMP_CHOICES)
    tf32: str = option("on", "float32 matmuls and convolutions on TF32 tensor cores (CUDA, Ampere and later)",
                       choices=("on", "off"))
    log_every: int = option(50, "optimiser steps between reads of the running losses (progress bar) and checks "
                                "for non-finite values; every read waits for the GPU. Each epoch's end always "
                                "checks", type=at_least(1))
    last_checkpoint_every: str = option(
        "20min", "how often the state for --resume (<model_name>_last.pth) is written: every N epochs (e.g. 1) or "
                 "at the first epoch end N minutes after the previous write (e.g. 20min); the last epoch always "
                 "writes it", type=save_interval)
    grad_clip: float = option(0.0, "clip the global gradient norm to this value; 0 (default, as the original "
                                   "recipe) is off", type=float)
    lr_schedule: str = option("constant", "constant, or cosine decay to zero over --max_epoch (after the warm-up)",
                              choices=("constant", "cosine"))
    warmup_steps: int = option(0, "optimiser steps of linear learning-rate warm-up", type=at_least(0))
    num_workers: int = option(0, "DataLoader processes reading the training clips", type=at_least(0))
    identity_dropout: float = option(
        0.0, "probability of training a clip without its speaker one-hot, so the model also learns the unseen "
             "and reference-motion modes (default 0, as the original recipe: never)", type=fraction(one_allowed=True))
    self_feed: float = option(
        0.0, "probability that a fed-back past frame is the model's own prediction instead of the captured one, "
             "as in generation (default 0, as the original recipe: always captured)",
        type=fraction(one_allowed=True))
    audio_style_dropout: float = option(
        0.0, "probability that a clip keeping its one-hot trains without the audio style, so the one-hot alone "
             "must carry the speaker's style (default 0, as the original recipe: never)",
        type=fraction(one_allowed=True))
    val_metric: str = option(
        "loss", "what picks the best checkpoint: the teacher-forced validation reconstruction loss (rec, mouth, "
                "vel), or the lip vertex error of generating the validation clips (slower, closer to the test)",
        choices=("loss", "lve"))
    ema: float = option(
        0.0, "decay of an exponential moving average of the weights (e.g. 0.999), which validation, the best "
             "checkpoint and the test use (default 0, as the original recipe: no average)",
        type=fraction(one_allowed=False))
    parallel: Parallel = field(default_factory=Parallel)
    # fp16 steps whose gradients overflow are skipped (the scaler then lowers its scale); this many
    # in a row means the loss itself is not finite, and stops training
    fp16_skip_limit: int = 20


def train(model: PTalker, train_set: TalkingFaceDataset, val_set: TalkingFaceDataset, lip_ids, settings: TrainConfig,
          checkpoint_meta: dict) -> Path:
    """Train with Adam; keep the checkpoint with the best validation loss at `settings.best_path` and the
    state at the end of the latest epoch (for --resume) at `settings.last_path`. Returns the best
    checkpoint's path. With `settings.ema`, validation and the best checkpoint use the weights'
    moving average.

    A non-finite loss, gradient or parameter stops training with a UserError naming the epoch,
    step and clips, before any checkpoint of that epoch is written (under fp16, only a run of
    `fp16_skip_limit` skipped steps does).

    checkpoint_meta: keyword arguments of save_checkpoint besides path/model/extra."""
    with tf32_matmuls(settings.device, settings.tf32 == "on"):
        return Trainer(model, train_set, val_set, lip_ids, settings, checkpoint_meta).run()


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


class StepGuard:
    """Non-finite losses and gradients, tracked on the device so that no step waits for the GPU.

    Each step's verdict (`bad`) makes the optimiser skip that step on the device. Under fp16 an
    overflow is routine (the scaler skips the step and lowers its scale): steps are counted, and
    only a run of `limit` of them stops training. Otherwise the first bad step is remembered, and
    the trainer's check (every `log_every` steps and at each epoch's end) stops with its clips."""

    def __init__(self, device, fp16: bool, limit: int):
        self.fp16, self.limit = fp16, limit
        zero = torch.zeros((), dtype=torch.long, device=device)
        self.loss_micro = zero - 1      # the current step's first micro-batch with a non-finite loss
        self.first_step, self.first_micro, self.first_loss = zero - 1, zero - 1, zero.clone()   # of the first bad step
        self.skipped, self.run, self.longest = zero.clone(), zero.clone(), zero.clone()

    def loss(self, total: torch.Tensor, micro: int) -> None:
        """Note micro-batch `micro`'s total loss (a device scalar)."""
        self.loss_micro = torch.where((self.loss_micro < 0) & ~torch.isfinite(total), micro, self.loss_micro)

    def step(self, step: int, grad_norm: torch.Tensor, parallel: Parallel) -> torch.Tensor:
        """The verdict on optimiser step `step` (device bool), the same on every rank: gradients are
        already averaged over the ranks, and the loss flags are reduced here."""
        flags = torch.stack([self.loss_micro >= 0, ~torch.isfinite(grad_norm)]).to(torch.long)
        if parallel.active:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad = flags.amax() > 0
        new = (self.first_step < 0) & bad
        self.first_step = torch.where(new, step, self.first_step)
        self.first_micro = torch.where(new, self.loss_micro, self.first_micro)
        self.first_loss = torch.where(new, flags[0], self.first_loss)
        self.skipped += bad
        self.run = (self.run + 1) * bad
        self.longest = torch.maximum(self.longest, self.run)
        self.loss_micro = torch.full_like(self.loss_micro, -1)
        return bad

    def read(self) -> dict[str, int]:
        """The first bad step, its micro-batch with a non-finite loss (-1: none on this rank), whether
        any rank's loss was, the skipped steps and the longest run of them: one read from the device."""
        values = torch.stack([self.first_step, self.first_micro, self.first_loss, self.skipped,
                              self.longest]).tolist()
        return dict(zip(("step", "micro", "loss", "skipped", "longest"), values))


class Trainer:
    """Adam training of one PTalker, laid out like a torchtune recipe: `__init__` sets everything up
    (and resumes), `run` trains epoch by epoch, and each phase of an epoch is a method. What it does,
    with the TrainConfig field (main.py flag of the same name) that controls it:

    - data parallel under torchrun (`parallel`): a DistributedDataParallel replica per process on its
      share of the length-bucketed batches (`batch_size`, `num_workers` loader processes); rank 0
      alone prints, logs and writes checkpoints
    - gradient accumulation (`gradient_accumulation_steps`) and clipping (`grad_clip`)
    - mixed precision (`amp`: auto | bf16 | fp16 on CUDA; float32 elsewhere, with a note) with the
      losses and the vertex head in float32; `train` runs it with TF32 for what stays float32 (`tf32`)
    - learning-rate warm-up and schedule (`warmup_steps`, `lr_schedule`)
    - augmentation in the training step (`identity_dropout`, `audio_style_dropout`, `self_feed`)
    - a moving average of the weights (`ema`) for validation and the best checkpoint
    - the best checkpoint by validation loss or by LVE of generation (`val_metric`) at `best_path`
    - the state at `last_path` every few epochs or minutes and after the last epoch
      (`last_checkpoint_every`); `resume` continues from it exactly (weights, optimiser, schedule,
      loss scaler, average and every random generator)
    - no step waits for the GPU: losses add up on the device and are read, and non-finite values
      checked, every `log_every` steps and at each epoch's end (see StepGuard); a non-finite loss,
      gradient or parameter stops with a UserError naming the epoch, step and clips, before any
      checkpoint of that epoch is written
    - a line per epoch on stderr and a row in the CSV log (`log_path`)
    """

    def __init__(self, model: PTalker, train_set: TalkingFaceDataset, val_set: TalkingFaceDataset, lip_ids,
                 settings: TrainConfig, checkpoint_meta: dict):
        self.model, self.train_set, self.val_set = model, train_set, val_set
        self.settings, self.checkpoint_meta = settings, checkpoint_meta
        self.par, self.device = settings.parallel, settings.device
        self.amp = self._usable_amp()
        torch.manual_seed(settings.seed + self.par.rank)   # different dropout on every replica
        model.to(self.device)
        if settings.val_metric == "lve" and lip_ids is None:
            raise UserError("--val_metric lve needs the lip region (--lip_mask)")
        self._setup_step(lip_ids)
        self._setup_optimiser()
        self._setup_data()
        self._setup_schedule()
        self.average = WeightAverage(model, settings.ema) if settings.ema > 0 else None
        self.guard = StepGuard(self.device, self.amp == "fp16", settings.fp16_skip_limit)
        self.start_epoch, self.best, self.steps = 1, math.inf, 0
        self.lr = self.optimizer.param_groups[0]["lr"]     # of the latest step, for the log
        if settings.resume:
            self.start_epoch, self.best, self.steps = self._resume()
        self.last_interval = SaveInterval.parse(settings.last_checkpoint_every)
        self.last_written = (self.start_epoch - 1, time.monotonic())   # (epoch, when)
        self.log = EpochLog(settings.log_path, self.start_epoch - 1) if settings.log_path and self.par.main else None

    # ------------------------------------------------------------------ setup

    def _usable_amp(self) -> str:
        """`settings.amp` with auto resolved, or "off" (with a note) off CUDA; bf16 on a GPU without
        native support is an error."""
        amp, device = resolve_amp(self.settings.amp, self.device), self.device
        if amp != "off" and torch.device(device).type != "cuda":
            self.par.say(f"note: --amp {amp} needs CUDA; training in float32 on {device}")
            amp = "off"
        if amp == "bf16" and default_amp(torch.cuda.get_device_capability(device)) != "bf16":
            raise UserError("this GPU has no native bfloat16 support: use --amp fp16")
        return amp

    def _setup_step(self, lip_ids) -> None:
        s, device = self.settings, self.device
        self.step_module = TrainStep(self.model, None if lip_ids is None else lip_ids.to(device), s.identity_dropout,
                                     s.self_feed, s.audio_style_dropout)
        # The buffers a checkpoint holds (the InfoNCE queue) change in training and must stay the
        # same on every rank; rank 0's are sent after each forward pass (see _share_buffers). DDP's
        # own broadcast_buffers would also resend the constant mesh-graph indices every step.
        kept = set(self.model.state_dict())
        self.shared_buffers = [b for name, b in self.model.named_buffers() if name in kept]
        # device_ids=None: DDP leaves the batch where it is (the lengths and subjects on the host)
        self.net = DistributedDataParallel(
            self.step_module, device_ids=None, broadcast_buffers=False,
            find_unused_parameters=self.step_module.may_skip_parameters()) if self.par.active else self.step_module

    def _setup_optimiser(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # the fused kernel updates all parameters in one pass: a few times faster than the per-tensor
        # loop, and it skips a step flagged non-finite on the device (`found_inf`) without waiting
        self.optimizer = torch.optim.Adam(self.params, lr=self.settings.lr, fused=True)
        self.scaler = torch.amp.GradScaler(torch.device(self.device).type, enabled=self.amp == "fp16")

    def _setup_data(self) -> None:
        s, par, train_set = self.settings, self.par, self.train_set
        self.sampler = LengthBatchSampler([train_set.frames(i) for i in range(len(train_set))], s.batch_size,
                                          s.seed, par.rank, par.world)
        self.loader = DataLoader(train_set, batch_sampler=self.sampler, collate_fn=collate,
                                 num_workers=s.num_workers, pin_memory=torch.device(self.device).type == "cuda",
                                 persistent_workers=s.num_workers > 0)

    def _setup_schedule(self) -> None:
        s = self.settings
        steps_per_epoch = math.ceil(len(self.sampler) / s.gradient_accumulation_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(
            s.lr_schedule, s.warmup_steps, steps_per_epoch * s.max_epoch))

    def _resume(self) -> tuple[int, float, int]:
        """Restore the state at the end of the last finished epoch -> (next epoch, best validation loss,
        optimiser steps). The interrupted epoch reruns from its beginning with the same random numbers."""
        s, par = self.settings, self.par
        if not s.last_path.is_file():
            raise UserError(f"--resume: no interrupted run to continue at {s.last_path}")
        state = read_checkpoint(s.last_path)
        extra = self._resumable_extra(state)
        self.model.load_state_dict(state["state_dict"])
        if self.average is not None:
            self.average.load_state_dict(extra["ema"])
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        if extra["scaler"]:
            self.scaler.load_state_dict(extra["scaler"])
        if len(extra["rng"]) == par.world:
            restore_rng_state(extra["rng"][par.rank], s.device)
        else:
            par.say(f"note: the run was saved with {len(extra['rng'])} process(es), this one has {par.world}: "
                    f"dropout draws differ from an uninterrupted run")
        par.say(f"resuming after epoch {extra['epoch']} (best validation {s.val_metric} {extra['best_val']:.6g})")
        return extra["epoch"] + 1, extra["best_val"], extra["steps"]

    def _resumable_extra(self, state: dict) -> dict:
        """The saved run's extra state, once it is known that this run can continue it."""
        extra, s = state["extra"], self.settings
        if "rng" not in extra:
            raise UserError(f"--resume: {s.last_path} was written by an earlier version and cannot be continued")
        if extra.get("val_metric", "loss") != s.val_metric:
            raise UserError(f"--resume: the run chose its best checkpoint by validation "
                            f"{extra.get('val_metric', 'loss')}, not {s.val_metric}: pass the same --val_metric")
        saved_decay = (extra.get("ema") or {}).get("decay", 0.0)
        if saved_decay != s.ema:
            raise UserError(f"--resume: the run averaged its weights with --ema {saved_decay:g}, not {s.ema:g}: "
                            f"pass the same --ema")
        return extra

    # ------------------------------------------------------------------ the loop

    def run(self) -> Path:
        """Train from the start epoch to `max_epoch` -> the best checkpoint's path."""
        last_epoch = self.settings.max_epoch
        for epoch in range(self.start_epoch, last_epoch + 1):
            started = time.time()
            means = self.train_epoch(epoch)
            val, improved = self.validate(epoch, means)
            rng_states = gather(capture_rng_state(self.device), self.par)
            if self.par.main:
                self.report(epoch, means, val, improved, time.time() - started)
                written_epoch, written_at = self.last_written
                if epoch == last_epoch or self.last_interval.due(epoch, written_epoch,
                                                                 (time.monotonic() - written_at) / 60):
                    self.save_last(epoch, rng_states)
                    self.last_written = (epoch, time.monotonic())
        if self.par.main and not self.settings.best_path.is_file():
            raise UserError("training ran no epoch: raise --max_epoch (or drop --resume on a finished run)")
        return self.settings.best_path

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's batches -> each loss term's mean over the batches of every rank."""
        self.sampler.set_epoch(epoch)
        self.step_module.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.sums: dict[str, torch.Tensor] = {}   # each loss term's sum over the micro-batches, on the device
        self.clips: dict[int, list] = {}          # optimiser step -> its (micro-batch, clip names) since the last check
        self.checked = (self.steps, self.guard.read()["skipped"])   # (step, skipped steps) at the last check
        self.skipped_before = self.checked[1]
        batches, accum = len(self.sampler), self.settings.gradient_accumulation_steps
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.settings.max_epoch}", unit="batch", leave=False,
                   disable=not self.par.main)
        for micro, batch in enumerate(bar, 1):
            boundary = micro % accum == 0 or micro == batches
            self._accumulate(micro, batch, boundary)
            if boundary:
                self._optimiser_step()
                if self.steps % self.settings.log_every == 0 or micro == batches:
                    self._check(epoch, bar, micro)
        sums = torch.stack(list(self.sums.values())).double()
        *totals, count = sum_tensors_over_ranks(torch.cat([sums, sums.new_full((1,), batches)]), self.par).tolist()
        return {k: v / count for k, v in zip(self.sums, totals)}

    def _accumulate(self, micro: int, batch: dict, boundary: bool) -> None:
        """Forward and backward of micro-batch `micro` (from 1), its gradient scaled by its share of the
        optimiser step; the replicas synchronise at the step's last one (`boundary`). Its loss terms
        add up on the device."""
        accum, batches = self.settings.gradient_accumulation_steps, len(self.sampler)
        group = min(accum, batches - (micro - 1) // accum * accum)   # micro-batches in this step
        batch = batch_to_device(batch, self.device)
        self.clips.setdefault(self.steps + 1, []).append((micro, batch["names"]))
        with self.net.no_sync() if self.par.active and not boundary else contextlib.nullcontext():
            with autocast(self.device, self.amp):
                terms = self.net(batch)
            self.scaler.scale(terms["total"] / group).backward()
        self._share_buffers()
        for k, v in terms.items():
            self.sums[k] = self.sums[k] + v.detach() if k in self.sums else v.detach().float()
        self.guard.loss(terms["total"].detach(), micro)

    def _share_buffers(self) -> None:
        """Rank 0's training-state buffers (the InfoNCE queue) to every rank, as DDP's buffer broadcast
        gave them: all ranks meet the same negatives, and a resumed run continues from rank 0's."""
        if self.par.active:
            broadcast_from_main(self.shared_buffers, self.par)

    def _optimiser_step(self) -> None:
        """Unscale and clip the gradients, step (skipped on the device when non-finite), then the
        schedule's step and the average's update."""
        self.scaler.unscale_(self.optimizer)
        grad_clip = self.settings.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.params, grad_clip) if grad_clip > 0 else \
            _global_norm(p.grad for p in self.params)
        bad = self.guard.step(self.steps + 1, norm, self.par)
        if self.scaler.is_enabled():    # fp16: the scaler finds the overflow itself and skips the step
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.found_inf = bad.float()   # read by the fused Adam kernel, as the scaler passes it
            self.optimizer.step()
            del self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.steps += 1
        if self.average is not None:
            self.average.update()

    def _check(self, epoch: int, bar, micro: int) -> None:
        """Read the device once: the running loss for the progress bar, the parameters and the steps
        since the last check; stop on a non-finite value (see StepGuard)."""
        where = f"epoch {epoch}, step {self.steps}"
        params_finite = torch.isfinite(_global_norm(self.params))
        if self.par.main:
            bar.set_postfix(loss=f"{self.sums['total'].item() / micro:.4g}")
        state = self.guard.read()
        if not params_finite:
            raise UserError(f"non-finite parameters after the optimiser step at {where} (the check after step "
                            f"{self.checked[0]} found none); {NON_FINITE_HINT}")
        if self.guard.fp16 and state["longest"] >= self.guard.limit:
            raise UserError(f"{state['longest']} fp16 optimiser steps in a row up to {where} had non-finite "
                            f"gradients and were skipped; {NON_FINITE_HINT}, or --amp bf16")
        if not self.guard.fp16 and state["step"] >= 0:
            raise UserError(self._bad_step_message(epoch, state))
        self.checked, self.clips = (self.steps, state["skipped"]), {}

    def _bad_step_message(self, epoch: int, state: dict) -> str:
        """What went wrong at the first non-finite step, with its clips."""
        step, batches = state["step"], self.clips.get(state["step"], [])
        where = f"epoch {epoch}, step {step}"
        if state["loss"]:
            named = [f"batch {m} ({', '.join(names)})" for m, names in batches if m == state["micro"]]
            return f"non-finite loss at {where}, {named[0] if named else 'a batch of another process'}; " \
                   f"{NON_FINITE_HINT}"
        clips = ", ".join(name for _, names in batches for name in names)
        return f"non-finite gradients at {where} ({clips}); {NON_FINITE_HINT}"

    # ------------------------------------------------------------------ after each epoch

    def validate(self, epoch: int, means: dict[str, float]) -> tuple[float, bool]:
        """The epoch's validation score (of the averaged weights, with `ema`); rank 0 saves the best
        checkpoint when the score beats the best so far -> (score, improved)."""
        with self.average.swapped_in() if self.average is not None else contextlib.nullcontext():
            val = self._validation_score(means)
            improved = val < self.best
            if improved and self.par.main:
                save_checkpoint(self.settings.best_path, self.model, **self.checkpoint_meta,
                                extra={"epoch": epoch, "val_loss": val, "val_metric": self.settings.val_metric})
        self.best = min(self.best, val)
        return val, improved

    def _validation_score(self, means: dict[str, float]) -> float:
        """`val_metric` on the validation set; the training reconstruction loss when that set is empty."""
        if not len(self.val_set):
            return means["reconstruction"]
        lip_ids = self.step_module.lip_ids
        if self.settings.val_metric == "lve":
            return validation_lip_error(self.model, self.val_set, lip_ids, self.device, self.par)
        return validation_loss(self.model, self.val_set, lip_ids, self.device, self.par, self.amp)

    def report(self, epoch: int, means: dict[str, float], val: float, improved: bool, seconds: float) -> None:
        """The epoch's line on stderr and its row in the CSV log."""
        terms = " ".join(f"{k}={v:.3g}" for k, v in means.items())
        skipped = self.checked[1] - self.skipped_before
        print(f"epoch {epoch}: train {terms} | val {val:.6g}{' (best, saved)' if improved else ''}"
              f" | lr {self.lr:.3g} | {self.steps} steps{f' ({skipped} skipped: fp16 overflow)' if skipped else ''}"
              f" | {seconds:.1f}s", file=sys.stderr)
        if self.log is not None:
            self.log.append({"epoch": epoch, "steps": self.steps, **{k: f"{v:.6g}" for k, v in means.items()},
                             "val": f"{val:.6g}", "lr": f"{self.lr:.6g}", "seconds": f"{seconds:.3f}"})

    def save_last(self, epoch: int, rng_states: list[dict]) -> None:
        """The state at the end of `epoch`, every rank's random generators included, for --resume."""
        save_checkpoint(self.settings.last_path, self.model, extra={
            "epoch": epoch, "best_val": self.best, "val_metric": self.settings.val_metric, "steps": self.steps,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states,
            "ema": None if self.average is None else self.average.state_dict()},
            **self.checkpoint_meta)


def _global_norm(tensors) -> torch.Tensor:
    tensors = [t for t in tensors if t is not None]
    return torch.nn.utils.get_total_norm(tensors) if tensors else torch.zeros(())
