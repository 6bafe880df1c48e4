"""The test phase's predictions: every test clip animated autoregressively into the result folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import PTalker

from .batches import conditions_of, one_hot
from .data import TalkingFaceDataset
from .fileio import save_npy
from .layout import result_stem


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
