"""Self-describing checkpoints: model config, speech-model config, weights, training subjects,
mesh faces and subject templates, so a checkpoint alone rebuilds and runs the model offline."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import PTalker, PTalkerConfig
from models.audio import load_speech_model

from .errors import UserError
from .fileio import atomic_path
from .mesh import mesh_edges

# 2: offsets in the motion unit, GAT on offsets alone, motion-encoder norms, InfoNCE heads and queue
FORMAT = "ptalker-checkpoint-2"
EARLIER_FORMATS = ("ptalker-checkpoint-1",)


def build_model(config: PTalkerConfig, faces: np.ndarray, speech_model: torch.nn.Module | None = None) -> PTalker:
    """A PTalker for a mesh topology; the speech model defaults to `config.audio_model`'s pretrained weights."""
    if speech_model is None:
        try:
            speech_model = load_speech_model(config.audio_model)
        except OSError as exc:
            raise UserError(f"cannot load speech model {config.audio_model!r} (hub id or local folder): "
                            f"{str(exc).splitlines()[0]}") from exc
    edges = torch.from_numpy(mesh_edges(faces, config.num_vertices)) if config.use_spatial else None
    return PTalker(config, speech_model, edges)


def save_checkpoint(path: str | os.PathLike, model: PTalker, train_subjects: list[str], faces: np.ndarray,
                    templates: dict[str, np.ndarray], extra: dict | None = None) -> None:
    """Write atomically: a killed run leaves the previous checkpoint intact."""
    state = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "speech_config": model.audio.model.config.to_dict(),
        "state_dict": model.state_dict(),
        "train_subjects": list(train_subjects),
        "faces": torch.as_tensor(np.asarray(faces, dtype=np.int64)),
        "templates": {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in templates.items()},
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, or a UserError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # an empty file's exception has no message
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        if path.stat().st_size == 0:
            reason = "the file is empty"
        raise UserError(f"cannot read checkpoint {path} (corrupt or not a checkpoint): {reason}") from exc
    if isinstance(state, dict) and state.get("format") in EARLIER_FORMATS:
        raise UserError(f"{path} was written by an earlier version ({state['format']}) whose network differs from "
                        f"this one's (motion unit, spatial GAT input, motion-encoder norms): its weights cannot be "
                        f"converted; retrain it with this version")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a PTalker checkpoint of this project")
    return state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[PTalker, dict]:
    """Rebuild the model from a checkpoint alone (no hub access) -> (model in eval mode, checkpoint dict)."""
    from transformers import AutoConfig, AutoModel

    state = read_checkpoint(path)
    speech_config = dict(state["speech_config"])
    speech = AutoModel.from_config(AutoConfig.for_model(speech_config.pop("model_type"), **speech_config))
    config = PTalkerConfig.from_dict(state["config"])
    model = build_model(config, state["faces"].numpy(), speech)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match its own config: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), state


@dataclass(frozen=True)
class SaveInterval:
    """How often the resumable state (`<model_name>_last.pth`) is written: every `epochs` epochs,
    or at the first epoch end `minutes` after the previous write. With a large speech model it
    holds gigabytes (weights and Adam's two moments), too much to write after every short epoch."""
    epochs: int | None = None
    minutes: float | None = None

    @classmethod
    def parse(cls, text: str) -> "SaveInterval":
        """"N" (epochs) or "Nmin" (minutes), N > 0; ValueError otherwise."""
        minutes = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*min\s*", text)
        if minutes and float(minutes[1]) > 0:
            return cls(minutes=float(minutes[1]))
        if text.strip().isdigit() and int(text) > 0:
            return cls(epochs=int(text))
        raise ValueError(f"expected N (epochs) or Nmin (minutes), N > 0, got {text!r}")

    def due(self, epoch: int, written_epoch: int, minutes_since_write: float) -> bool:
        """Whether the state after `epoch` is written, the previous write having been after
        `written_epoch`, `minutes_since_write` ago (the run's last epoch is always written)."""
        if self.epochs is not None:
            return epoch - written_epoch >= self.epochs
        return minutes_since_write >= self.minutes


def save_interval(text: str) -> str:
    """Parser type of --last_checkpoint_every: the text, once SaveInterval can read it."""
    try:
        SaveInterval.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()
