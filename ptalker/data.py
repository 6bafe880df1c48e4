"""Dataset reading: the sequences of each split, a 16 kHz audio cache, padded length-bucketed batches.

Clip names and vertex files follow `ptalker.layout`; `data_loader.py` at the top re-exports this
module for the seed's `from data_loader import ...` and keeps its `--check` command line.
"""
from __future__ import annotations

import math
import pickle
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from .audio import load_audio
from .datasets import DatasetPreset
from .errors import UserError
from .fileio import save_pickle
from .layout import load_vertices, sentence_of, subject_of
from .mesh import load_templates


def parse_sentences(text: str | range | tuple[int, ...]) -> range | tuple[int, ...]:
    """`1-40` -> range(1, 41); `1-32,41-72` -> the numbers of both ranges; numbers pass through."""
    if not isinstance(text, str):
        return text
    try:
        ranges = [range(low, high + 1) for low, high in ((int(x) for x in part.split("-"))
                                                        for part in text.split(","))]
    except ValueError:
        raise UserError(f"sentence range must look like 1-40 (or 1-32,41-72), got {text!r}") from None
    return ranges[0] if len(ranges) == 1 else tuple(n for r in ranges for n in r)


@dataclass
class Sequence:
    name: str
    subject: str
    vertices_path: Path
    audio: np.ndarray            # (S,) 16 kHz
    template: np.ndarray         # (V*3,)
    subject_index: int           # index among the training subjects, -1 for others


class AudioCache:
    """Decoded, resampled 16 kHz speech for every wav of a dataset, kept in one pickle keyed by file
    name and validated by size and modification time, so a second run starts in seconds."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict = {}
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    self.entries = pickle.load(f)
            except Exception:     # a damaged cache is rebuilt, never trusted
                self.entries = {}
        self.changed = False

    def get(self, wav: Path) -> np.ndarray:
        stat = wav.stat()
        key, signature = wav.name, (stat.st_size, stat.st_mtime_ns)
        hit = self.entries.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
        audio = load_audio(wav)
        self.entries[key] = (signature, audio)
        self.changed = True
        return audio

    def save(self) -> None:
        if self.changed:
            try:
                save_pickle(self.path, self.entries)
            except OSError as exc:  # a read-only dataset folder just runs without a cache
                print(f"note: audio cache not written ({exc})", file=sys.stderr)


def _resolve(folder: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else folder / p


def load_splits(preset: DatasetPreset, vertice_dim: int, train_subjects: list[str],
                splits: dict[str, tuple[list[str], range]], wav_path: str = "wav",
                vertices_path: str = "vertices_npy", template_file: str = "templates.pkl",
                ) -> dict[str, list[Sequence]]:
    """Read the sequences of each split {split: (subjects, sentence range)} -> {split: [Sequence]}.

    Audio comes through the on-disk cache; vertex arrays stay on disk until a batch needs them."""
    folder = preset.folder
    if not folder.is_dir():
        raise UserError(f"dataset folder not found: {folder}")
    wav_dir, vert_dir = _resolve(folder, wav_path), _resolve(folder, vertices_path)
    for d in (wav_dir, vert_dir):
        if not d.is_dir():
            raise UserError(f"dataset folder {folder} has no {d.name}/ folder ({d})")
    templates = load_templates(_resolve(folder, template_file))
    wavs = {p.stem: p for p in sorted(wav_dir.glob("*.wav")) if not p.name.startswith(".")}
    if not wavs:
        raise UserError(f"no .wav files in {wav_dir}")
    known = sorted({subject_of(n) for n in wavs})
    wanted = set(train_subjects).union(*(set(s) for s, _ in splits.values()))
    unknown = sorted(s for s in wanted if s not in known)
    if unknown:
        raise UserError(f"unknown subject(s) {', '.join(unknown)} in {wav_dir}; known: {', '.join(known)}")
    cache = AudioCache(folder / "cache" / "audio_16k.pkl")
    selected = [(split, name) for split, (subjects, sentences) in splits.items()
                for name in wavs if subject_of(name) in subjects and sentence_of(name) in sentences]
    out: dict[str, list[Sequence]] = {split: [] for split in splits}
    try:
        for split, name in tqdm(selected, desc=f"loading {preset.name}", unit="wav", leave=False):
            subject = subject_of(name)
            vertices = vert_dir / f"{name}.npy"
            if not vertices.is_file():
                raise UserError(f"{wavs[name]} has no vertices: expected {vertices}")
            width = load_vertices(vertices).shape[1] * 3
            if width != vertice_dim:
                raise UserError(f"{vertices} has {width} values per frame, but --vertice_dim is {vertice_dim}")
            if subject not in templates:
                raise UserError(f"no template for subject {subject} in {template_file}")
            template = templates[subject].reshape(-1)
            if template.size != vertice_dim:
                raise UserError(f"template of {subject} has {template.size // 3} vertices "
                                f"({template.size} values), but --vertice_dim is {vertice_dim}")
            index = train_subjects.index(subject) if subject in train_subjects else -1
            out[split].append(Sequence(name, subject, vertices, cache.get(wavs[name]), template, index))
    finally:
        cache.save()
    return out


class TalkingFaceDataset(Dataset):
    """Sequences -> dicts of tensors: audio (S,), vertices (T, V*3), template (V*3,), subject index.

    `speech_frames` (audio samples -> the most frames the speech drives, or None for any number;
    a model's `speech_frames`) cuts captures longer than their speech, as BIWI's alignment needs."""

    def __init__(self, sequences: list[Sequence], capture_stride: int = 1, speech_frames=None):
        self.sequences, self.stride, self.speech_frames = sequences, capture_stride, speech_frames

    def __len__(self) -> int:
        return len(self.sequences)

    def frames(self, i: int) -> int:
        captured = len(range(0, len(load_vertices(self.sequences[i].vertices_path)), self.stride))
        return self._usable(i, captured)

    def _usable(self, i: int, captured: int) -> int:
        limit = self.speech_frames(len(self.sequences[i].audio)) if self.speech_frames else None
        return captured if limit is None else min(captured, limit)

    def offset_rms(self, clips: int = 64) -> float:
        """Root mean square of the captured offsets from the template over up to `clips` evenly
        spaced sequences, in mesh units: the model's motion unit (config.motion_scale)."""
        picks = np.unique(np.linspace(0, len(self) - 1, min(clips, len(self))).round().astype(int))
        total, count = 0.0, 0
        for i in picks:
            seq = self.sequences[i]
            offsets = load_vertices(seq.vertices_path)[:: self.stride].reshape(-1, seq.template.size)
            total += float(np.square(offsets - seq.template, dtype=np.float64).sum())
            count += offsets.size
        rms = math.sqrt(total / max(count, 1))
        if not rms > 0:
            raise UserError("the training motion never leaves the templates: nothing to learn")
        return rms

    def __getitem__(self, i: int) -> dict:
        seq = self.sequences[i]
        vertices = load_vertices(seq.vertices_path)[:: self.stride]
        vertices = vertices[: self._usable(i, len(vertices))]
        return {"name": seq.name, "audio": torch.from_numpy(np.asarray(seq.audio, dtype=np.float32)),
                "vertices": torch.from_numpy(np.array(vertices, dtype=np.float32).reshape(len(vertices), -1)),
                "template": torch.from_numpy(seq.template.astype(np.float32)),
                "subject": seq.subject_index}


def collate(items: list[dict]) -> dict:
    """Pad a list of samples to a batch: audio (B, S), vertices (B, T, V*3), template (B, V*3),
    subject (B,), audio_lengths (B,), frame_lengths (B,), names."""
    audio_lengths = torch.tensor([len(x["audio"]) for x in items])
    frame_lengths = torch.tensor([len(x["vertices"]) for x in items])
    audio = torch.zeros(len(items), int(audio_lengths.max()))
    vertices = torch.zeros(len(items), int(frame_lengths.max()), items[0]["vertices"].shape[1])
    for i, x in enumerate(items):
        audio[i, : len(x["audio"])] = x["audio"]
        vertices[i, : len(x["vertices"])] = x["vertices"]
    return {"names": [x["name"] for x in items], "audio": audio, "vertices": vertices,
            "template": torch.stack([x["template"] for x in items]),
            "subject": torch.tensor([x["subject"] for x in items]),
            "audio_lengths": audio_lengths, "frame_lengths": frame_lengths}


def length_batches(lengths: list[int], batch_size: int, rng: random.Random, shuffle: bool = True) -> list[list[int]]:
    """Indices bucketed into batches of similar length (little padding), batch order shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


class LengthBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches for a DataLoader's `batch_sampler`, split across data-parallel ranks.

    The batches of an epoch depend only on (seed, epoch), so every rank builds the same list without
    communicating and a resumed run replays an epoch exactly. Rank r takes batches r, r+world, ...;
    the list is first padded by repeating its first batches so that every rank runs the same number
    of steps (collective operations would otherwise wait forever on the rank with fewer)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world)

    def __iter__(self):
        batches = length_batches(self.lengths, self.batch_size, random.Random(f"{self.seed}:{self.epoch}"),
                                 self.shuffle)
        if not batches:
            return iter([])
        padded = (batches * self.world)[: len(self) * self.world]
        return iter(padded[self.rank:: self.world])
