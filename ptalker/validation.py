"""The two validation scores that pick the best checkpoint (--val_metric): the teacher-forced
reconstruction loss and the lip-vertex error of generation. Under torchrun every rank scores its
share of the clips and every rank returns the mean over the whole set."""
from __future__ import annotations

import torch

from models import PTalker

from .batches import batch_losses, conditions_of
from .data import TalkingFaceDataset, collate
from .device import autocast, batch_to_device
from .distributed import Parallel, mean_over_ranks
from .metrics import lip_vertex_error
from .prediction import generate_jobs


@torch.no_grad()
def validation_loss(model: PTalker, dataset: TalkingFaceDataset, lip_ids, device, parallel: Parallel = Parallel(),
                    amp: str = "off") -> float:
    """Mean teacher-forced reconstruction loss (rec + mouth + vel as weighted in training; the
    auxiliary terms do not pick checkpoints); a clip of a speaker unseen in training is scored under every
    training condition and averaged. Each rank scores every world-th clip; sums and counts are
    reduced over the ranks, so every rank returns the mean over the whole set."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0   # summed on the device, read once
    for i in range(parallel.rank, len(dataset), parallel.world):
        batch = batch_to_device(collate([dataset[i]]), device)
        conditions = conditions_of(dataset.sequences[i].subject_index, model.config.n_subjects)
        with autocast(device, amp):
            scores = [batch_losses(model, batch, lip_ids, torch.tensor([c]))["reconstruction"] for c in conditions]
        total += torch.stack(scores).double().mean()
        count += 1
    return mean_over_ranks(total.item(), count, parallel, device)


@torch.no_grad()
def validation_lip_error(model: PTalker, dataset: TalkingFaceDataset, lip_ids: torch.Tensor, device,
                         parallel: Parallel = Parallel(), batch_size: int = 32) -> float:
    """LVE of autoregressive generation, as the test measures it: per frame the largest squared
    lip-vertex error, averaged over all frames. A clip of a speaker unseen in training is generated
    under every training condition. Unlike the teacher-forced loss, this sees the errors that
    generation feeds back to itself. Ranks split the clips and reduce sums and counts."""
    model.eval()
    n, lips = model.config.n_subjects, lip_ids.cpu().numpy()
    jobs = [(i, c) for i in range(parallel.rank, len(dataset), parallel.world)
            for c in conditions_of(dataset.sequences[i].subject_index, n)]
    total, count = 0.0, 0
    for _, batch, predicted in generate_jobs(model, dataset, jobs, batch_size, device):
        for pred, gt, frames in zip(predicted.cpu().numpy(), batch["vertices"].cpu().numpy(),
                                    batch["frame_lengths"].tolist()):
            total += float(lip_vertex_error(pred[:frames], gt[:frames], lips).sum())
            count += frames
    return mean_over_ranks(total, count, parallel, device)
