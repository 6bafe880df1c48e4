"""Autoregressive generation over a dataset in batches (generate_jobs, also validation's), and the test
phase's predictions: every test clip animated into the result folder."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import PTalker

from .batches import conditions_of, one_hot
from .data import TalkingFaceDataset, collate
from .device import batch_to_device
from .fileio import save_npy
from .layout import result_stem


def generation_batches(jobs: list[tuple[int, int]], frames, batch_size: int) -> list[list[tuple[int, int]]]:
    """(clip, condition) jobs in batches of up to `batch_size` of similar length: a clip's
    conditions together, clips sorted by their `frames` (indexed by clip) so that little of a batch
    is padding."""
    ordered = sorted(jobs, key=lambda job: (frames[job[0]], job))
    return [ordered[i: i + batch_size] for i in range(0, len(ordered), batch_size)]


def generate_jobs(model: PTalker, dataset: TalkingFaceDataset, jobs: list[tuple[int, int]], batch_size: int,
                  device) -> Iterator[tuple[list[tuple[int, int]], dict, torch.Tensor]]:
    """Autoregressive generation of (clip, condition) jobs, up to `batch_size` as one zero-padded
    batch, which gives each the frames it gets alone (PTalker.generate) in one pass of the frame loop
    -> per batch: its jobs, the collated batch on `device` and the vertices (B, T, V*3), each clip's
    first frame_lengths[b] frames its own. A clip in several jobs of a batch is read once."""
    frames = {i: dataset.frames(i) for i, _ in jobs}
    for chunk in generation_batches(jobs, frames, batch_size):
        items = {i: dataset[i] for i, _ in chunk}
        batch = batch_to_device(collate([items[i] for i, _ in chunk]), device)
        condition = one_hot(torch.tensor([c for _, c in chunk]), model.config.n_subjects).to(device)
        yield chunk, batch, model.generate(batch["audio"], batch["template"], condition,
                                           audio_lengths=batch["audio_lengths"], frame_lengths=batch["frame_lengths"])


@torch.no_grad()
def write_test_predictions(model: PTalker, test_set: TalkingFaceDataset, train_subjects: list[str],
                           result_dir: Path, device, all_conditions: bool = False,
                           batch_size: int = 16) -> list[Path]:
    """Animate every test clip autoregressively -> `<name>_condition_<subject>.npy` (T, V*3) files.

    A speaker seen in training is animated under its own condition (or all, with `all_conditions`);
    an unseen speaker under every training condition. Up to `batch_size` (clip, condition) pairs
    are generated as one batch (generate_jobs)."""
    model.eval().to(device)
    jobs = [(i, c) for i, seq in enumerate(test_set.sequences)
            for c in conditions_of(seq.subject_index, len(train_subjects), all_conditions)]
    written = []
    bar = tqdm(total=len(jobs), desc="test", unit="clip", leave=False)
    for chunk, batch, predicted in generate_jobs(model, test_set, jobs, batch_size, device):
        for (_, c), pred, name, length in zip(chunk, predicted.cpu().numpy(), batch["names"],
                                              batch["frame_lengths"].tolist()):
            path = result_dir / f"{result_stem(name, train_subjects[c])}.npy"
            save_npy(path, pred[:length].astype(np.float32))
            written.append(path)
        bar.update(len(chunk))
    bar.close()
    return written
