"""main.py's work: flags -> dataset, config and model -> train -> test -> metrics."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from models.config import PTalkerConfig

from .checkpoint import build_model, load_checkpoint
from .data import TalkingFaceDataset, load_splits, parse_sentences
from .datasets import DatasetPreset, resolve_dataset
from .device import pick_device
from .distributed import Parallel, start_parallel, stop_parallel
from .errors import UserError
from .mesh import find_template_mesh, load_templates, read_mesh
from .metrics import RegionMasks, dataset_regions, report, score_result_folder, write_csv
from .prediction import write_test_predictions
from .cli import flag_values
from .options import ModelFlags
from .trainer import TrainConfig, train


def _subjects(flag: str | None, default: tuple[str, ...], what: str) -> list[str]:
    if flag is not None:
        return flag.split()
    if not default and what == "train":
        raise UserError("give --train_subjects (space-separated) for a dataset folder without a preset")
    return list(default)


def _regions(preset: DatasetPreset, args, num_vertices: int, parallel: Parallel) -> RegionMasks:
    """The lip region (mouth loss, LVE) and the upper-face region (FDD), each loaded on its own;
    prints the notes and one line per region used (file, vertex count)."""
    masks = dataset_regions(preset, args.lip_mask, args.upper_face_mask)
    masks.validate(num_vertices)
    for line in masks.describe():
        parallel.say(line)
    return masks


def _require_lip_region(config: PTalkerConfig, masks: RegionMasks) -> None:
    """The mouth loss needs the lips: training without them is an error unless its weight is 0."""
    if masks.lips is None and config.losses.mouth:
        raise UserError(f"the mouth loss needs a lip region and {masks.lip_source} is missing: place it "
                        f"there, pass --lip_mask FILE, or give --loss_weight mouth=0 to train without it")


def _amp(args: argparse.Namespace, device: str) -> str:
    """The recipe's mixed precision quietly becomes float32 off CUDA; an explicit --amp is kept (train()
    then says it cannot be used, except for auto, which means float32 there)."""
    if "amp" in args.from_recipe and torch.device(device).type != "cuda":
        return "off"
    return args.amp


def run(args: argparse.Namespace) -> None:
    """One process, or one of torchrun's: every process trains, rank 0 alone tests while the others wait."""
    parallel, device = start_parallel(pick_device(args.device))
    try:
        _run(args, parallel, device)
        parallel.wait_for_all()
    finally:
        stop_parallel(parallel)


def _run(args: argparse.Namespace, parallel: Parallel, device: str) -> None:
    """Load the splits, train (unless --test_only), then on rank 0 test the best checkpoint."""
    preset = resolve_dataset(args.dataset)
    vertice_dim, faces = _topology(preset, args.vertice_dim)
    train_subjects = _subjects(args.train_subjects, preset.train_subjects, "train")
    sets = _datasets(preset, args, vertice_dim, train_subjects, parallel)
    masks = _regions(preset, args, vertice_dim // 3, parallel)
    lip_ids = None if masks.lips is None else torch.as_tensor(masks.lips, dtype=torch.long)
    settings = _train_settings(args, preset, device, parallel)
    if not args.test_only:
        config = _model_config(args, preset, vertice_dim, len(train_subjects), sets["train"].offset_rms())
        _require_lip_region(config, masks)
        torch.manual_seed(args.seed)
        model = build_model(config, faces)
        for dataset in sets.values():   # BIWI: captures longer than their speech are cut to it
            dataset.speech_frames = model.speech_frames
        meta = {"train_subjects": train_subjects, "faces": faces,
                "templates": load_templates(preset.folder / args.template_file)}
        train(model, sets["train"], sets["val"], lip_ids, settings, meta)
    if parallel.main:
        _test(args, preset, sets["test"], train_subjects, masks, settings.best_path, device)


def _topology(preset: DatasetPreset, vertice_dim: int | None) -> tuple[int, np.ndarray]:
    """(values per frame, mesh faces) of the dataset's template mesh; --vertice_dim must agree with it."""
    folder = preset.folder
    mesh_path = find_template_mesh(folder) if folder.is_dir() else None
    if mesh_path is None:
        raise UserError(f"dataset folder not found: {folder}")
    mesh_vertices, faces = read_mesh(mesh_path)
    vertice_dim = vertice_dim or preset.vertice_dim or mesh_vertices.size
    if mesh_vertices.size != vertice_dim:
        raise UserError(f"template mesh {mesh_path} has {len(mesh_vertices)} vertices "
                        f"({mesh_vertices.size} values), but --vertice_dim is {vertice_dim}")
    return vertice_dim, faces


def _datasets(preset: DatasetPreset, args: argparse.Namespace, vertice_dim: int, train_subjects: list[str],
              parallel: Parallel) -> dict[str, TalkingFaceDataset]:
    """The train, val and test splits the flags (else the preset) name."""
    splits = {
        "train": (train_subjects, parse_sentences(args.train_sentences or preset.train_sentences)),
        "val": (_subjects(args.val_subjects, preset.val_subjects, "val"),
                parse_sentences(args.val_sentences or preset.val_sentences)),
        "test": (_subjects(args.test_subjects, preset.test_subjects, "test"),
                 parse_sentences(args.test_sentences or preset.test_sentences)),
    }
    with parallel.main_first():   # rank 0 fills the audio cache, the others read it
        data = load_splits(preset, vertice_dim, train_subjects, splits, args.wav_path, args.vertices_path,
                           args.template_file)
    parallel.say("sequences: " + ", ".join(f"{k} {len(v)}" for k, v in data.items()))
    if not data["train"] and not args.test_only:
        raise UserError("the training split is empty: check --train_subjects and --train_sentences")
    return {k: TalkingFaceDataset(v, preset.capture_stride) for k, v in data.items()}


def _train_settings(args: argparse.Namespace, preset: DatasetPreset, device: str, parallel: Parallel) -> TrainConfig:
    """TrainConfig's flags as given, plus the paths, device and processes of this run."""
    save_dir = preset.folder / args.save_path
    name = args.model_name or preset.name.lower()
    flags = flag_values(TrainConfig, args) | {"amp": _amp(args, device)}
    return TrainConfig(**flags, device=device, best_path=save_dir / f"{name}.pth",
                       last_path=save_dir / f"{name}_last.pth", log_path=save_dir / f"{name}_log.csv",
                       parallel=parallel)


def _model_config(args: argparse.Namespace, preset: DatasetPreset, vertice_dim: int, n_subjects: int,
                  motion_scale: float) -> PTalkerConfig:
    """The model's config: the ModelFlags named as PTalkerConfig fields, with the preset's values for the
    sizes left unset; a bad --loss_weight is a UserError."""
    config_fields = {f.name for f in fields(PTalkerConfig)}
    given = {name: value for name, value in flag_values(ModelFlags, args).items() if name in config_fields}
    config = PTalkerConfig(**given | dict(
        vertice_dim=vertice_dim, feature_dim=args.feature_dim or preset.feature_dim,
        period=args.period or preset.period, fps=args.fps or preset.fps, n_subjects=n_subjects,
        audio_frames_per_frame=2 if preset.audio_alignment == "pairs" else 1, motion_scale=motion_scale,
        gat_checkpoint=args.gat_checkpoint == "on",
    )).with_ablations(args.ablation)
    try:
        return config.with_loss_weights(args.loss_weight)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _test(args: argparse.Namespace, preset: DatasetPreset, test_set: TalkingFaceDataset, train_subjects: list[str],
          masks: RegionMasks, best_path: Path, device: str) -> None:
    """The best checkpoint animates the test clips into the result folder, which is then scored."""
    folder, result_dir = preset.folder, preset.folder / args.result_path
    model, state = load_checkpoint(best_path, device)
    test_set.speech_frames = model.speech_frames
    if state["train_subjects"] != train_subjects:
        raise UserError(f"checkpoint {best_path} was trained on {state['train_subjects']}, "
                        f"not on --train_subjects {train_subjects}")
    extra = state["extra"]
    print(f"testing {best_path} (epoch {extra.get('epoch')}, validation {extra.get('val_metric', 'loss')} "
          f"{extra.get('val_loss', float('nan')):.6g})", file=sys.stderr)
    stale = list(result_dir.glob("*.npy")) if result_dir.is_dir() else []
    for path in stale:   # scores must come from this run's predictions only
        path.unlink()
    written = write_test_predictions(model, test_set, train_subjects, result_dir, device,
                                     all_conditions=args.test_conditions == "all")
    print(f"wrote {len(written)} predictions to {result_dir}", file=sys.stderr)
    if written:
        scores = score_result_folder(folder, result_dir, masks, preset.capture_stride,
                                     args.template_file, args.vertices_path)
        print(report(scores, preset.name))
        write_csv(scores, result_dir / "metrics.csv")
