"""Training, validation and test loops for PTalker on a dataset in the standard layout."""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_loader import TalkingFaceDataset, collate, length_batches
from models import PTalker
from models.losses import compute_losses

from .checkpoint import read_checkpoint, save_checkpoint
from .errors import UserError
from .fileio import save_npy


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
    resume: bool = False


def one_hot(subjects: torch.Tensor, n_subjects: int) -> torch.Tensor:
    """Subject indices (B,) -> (B, n_subjects); -1 (not a training subject) -> all zeros."""
    out = torch.zeros(len(subjects), n_subjects)
    known = subjects >= 0
    out[known, subjects[known]] = 1.0
    return out


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_losses(model: PTalker, batch: dict, lip_ids: torch.Tensor | None,
                 condition: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher-forced losses of one padded batch; `condition` (B,) overrides the one-hot subjects."""
    cfg = model.config
    subjects = batch["subject"] if condition is None else condition
    padded = len(set(batch["frame_lengths"].tolist())) > 1 or len(set(batch["audio_lengths"].tolist())) > 1
    lengths = (batch["audio_lengths"], batch["frame_lengths"]) if padded else (None, None)
    out = model(batch["audio"], batch["vertices"], batch["template"],
                one_hot(subjects, cfg.n_subjects).to(batch["audio"].device), *lengths)
    return compute_losses(out, batch["vertices"], cfg, batch["subject"], lip_ids,
                          batch["frame_lengths"] if padded else None, model.contrast_scale)


@torch.no_grad()
def validation_loss(model: PTalker, dataset: TalkingFaceDataset, lip_ids, device) -> float:
    """Mean teacher-forced total loss; a clip of a speaker unseen in training is scored under every
    training condition and averaged."""
    model.eval()
    losses = []
    for i in range(len(dataset)):
        batch = _to(collate([dataset[i]]), device)
        if int(batch["subject"][0]) >= 0:
            conditions = [batch["subject"]]
        else:
            conditions = [torch.tensor([c], device=device) for c in range(model.config.n_subjects)]
        losses.append(np.mean([batch_losses(model, batch, lip_ids, c)["total"].item() for c in conditions]))
    return float(np.mean(losses)) if losses else math.nan


def _format_terms(sums: dict[str, float], count: int) -> str:
    return " ".join(f"{k}={v / count:.3g}" for k, v in sums.items())


def train(model: PTalker, train_set: TalkingFaceDataset, val_set: TalkingFaceDataset, lip_ids, settings: TrainSettings,
          checkpoint_meta: dict) -> Path:
    """Train with Adam; keep the checkpoint with the best validation loss at `settings.best_path` and the
    latest state (for --resume) at `settings.last_path`. Returns the best checkpoint's path.

    checkpoint_meta: keyword arguments of save_checkpoint besides path/model/extra."""
    device = settings.device
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    start_epoch, best = 1, math.inf
    if settings.resume:
        if not settings.last_path.is_file():
            raise UserError(f"--resume: no interrupted run to continue at {settings.last_path}")
        state = read_checkpoint(settings.last_path)
        model.load_state_dict(state["state_dict"])
        extra = state["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        start_epoch, best = extra["epoch"] + 1, extra["best_val"]
        rng.setstate(extra["python_rng"])
        torch.set_rng_state(extra["torch_rng"])
        print(f"resuming after epoch {extra['epoch']} (best validation loss {best:.6g})", file=sys.stderr)
    lengths = [train_set.frames(i) for i in range(len(train_set))]
    lip_ids = None if lip_ids is None else lip_ids.to(device)
    for epoch in range(start_epoch, settings.max_epoch + 1):
        model.train()
        batches = length_batches(lengths, settings.batch_size, rng)
        sums: dict[str, float] = {}
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(batches, desc=f"epoch {epoch}/{settings.max_epoch}", unit="batch", leave=False)
        started = time.time()
        for step, indices in enumerate(bar, 1):
            batch = _to(collate([train_set[i] for i in indices]), device)
            terms = batch_losses(model, batch, lip_ids)
            if not torch.isfinite(terms["total"]):
                raise UserError(f"non-finite loss at epoch {epoch}, batch {step} ({', '.join(batch['names'])}); "
                                f"no checkpoint written for this epoch — try a lower --lr")
            (terms["total"] / settings.gradient_accumulation_steps).backward()
            if step % settings.gradient_accumulation_steps == 0 or step == len(batches):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sums['total'] / step:.4g}")
        val = validation_loss(model, val_set, lip_ids, device) if len(val_set) else sums["total"] / len(batches)
        improved = val < best
        if improved:
            best = val
            save_checkpoint(settings.best_path, model, extra={"epoch": epoch, "val_loss": val}, **checkpoint_meta)
        print(f"epoch {epoch}: train {_format_terms(sums, len(batches))} | val {val:.6g}"
              f"{' (best, saved)' if improved else ''} | {time.time() - started:.1f}s", file=sys.stderr)
        save_checkpoint(settings.last_path, model, extra={
            "epoch": epoch, "best_val": best, "optimizer": optimizer.state_dict(),
            "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state()}, **checkpoint_meta)
    if not settings.best_path.is_file():
        raise UserError("training ran no epoch: raise --max_epoch (or drop --resume on a finished run)")
    return settings.best_path


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
        conditions = range(len(train_subjects)) if seq.subject_index < 0 or all_conditions else [seq.subject_index]
        jobs += [(i, c) for c in conditions]
    for i, c in tqdm(jobs, desc="test", unit="clip", leave=False):
        item = test_set[i]
        frames = len(item["vertices"])
        pred = model.generate(item["audio"][None].to(device), item["template"][None].to(device),
                              one_hot(torch.tensor([c]), len(train_subjects)).to(device), frames=frames)
        path = result_dir / f"{item['name']}_condition_{train_subjects[c]}.npy"
        save_npy(path, pred[0].cpu().numpy().astype(np.float32))
        written.append(path)
    return written
