"""Known dataset presets: where a dataset lives and how its motion and audio line up.

A preset is looked up by name (`vocaset`, `BIWI`, case-insensitive); any other `--dataset` value
is a path to a folder in the standard layout and gets the generic preset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from SynthTalk import splits

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    folder: Path
    fps: int = 30
    capture_stride: int = 1        # keep every n-th captured frame (VOCASET: 60 fps -> 30 fps)
    audio_alignment: str = "interpolate"   # "interpolate" to the frame count, or "pairs" (2 audio frames / frame)
    vertice_dim: int | None = None
    feature_dim: int = 64
    period: int = 30
    train_subjects: tuple[str, ...] = ()
    val_subjects: tuple[str, ...] = ()
    test_subjects: tuple[str, ...] = ()
    train_sentences: range | tuple[int, ...] = range(1, 41)
    val_sentences: range | tuple[int, ...] = range(21, 41)
    test_sentences: range | tuple[int, ...] = range(21, 41)
    lip_mask: str = "regions/lve.txt"          # relative to the dataset folder
    lip_mask_fallback: str = ""                # used (with a note) when lip_mask's file is absent
    upper_face_mask: str = "regions/fdd.txt"
    mask_source: str = field(default="")       # where to obtain masks, for error messages


VOCASET = DatasetPreset(
    name="vocaset", folder=ROOT / "VOCASET", fps=30, capture_stride=2, audio_alignment="interpolate",
    vertice_dim=15069, feature_dim=64, period=30,
    train_subjects=tuple(f"FaceTalk_{s}_TA" for s in (
        "170728_03272", "170904_00128", "170725_00137", "170915_00223",
        "170811_03274", "170913_03279", "170904_03276", "170912_03278")),
    val_subjects=("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"),
    test_subjects=("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"),
    train_sentences=range(1, 41), val_sentences=range(21, 41), test_sentences=range(21, 41),
    # the lineage's LVE region (PTalker's vocaset/regions/lve.txt, 428 ids); FLAME's lips differ
    lip_mask="regions/lve.txt", lip_mask_fallback="FLAME_masks.pkl:lips",
    upper_face_mask="FLAME_masks.pkl:forehead+eye_region",
    mask_source="regions/lve.txt is vocaset/regions/lve.txt of PTalker's public repository "
                "(github.com/wangryhen/PTalker, MIT); FLAME_masks.pkl comes with the FLAME model download "
                "(flame.is.tue.mpg.de); see VOCASET/README.md",
)

BIWI = DatasetPreset(
    name="BIWI", folder=ROOT / "BIWI", fps=25, capture_stride=1, audio_alignment="pairs",
    vertice_dim=70110, feature_dim=128, period=25,
    train_subjects=("F2", "F3", "F4", "M3", "M4", "M5"),
    val_subjects=("F2", "F3", "F4", "M3", "M4", "M5"),
    test_subjects=("F2", "F3", "F4", "M3", "M4", "M5"),
    train_sentences=range(1, 33), val_sentences=range(33, 37), test_sentences=range(37, 41),
    mask_source="regions/lve.txt and regions/fdd.txt are published with CodeTalker's BIWI metrics",
)

SYNTHTALK = DatasetPreset(
    # the generated corpus (SynthTalk/make_dataset.py); BIWI-like protocol: seen speakers, held-out sentences
    name="SynthTalk", folder=ROOT / "SynthTalk", fps=30, capture_stride=1, audio_alignment="interpolate",
    vertice_dim=None, feature_dim=64, period=30,
    train_subjects=splits.TRAIN_SUBJECTS, val_subjects=splits.TRAIN_SUBJECTS, test_subjects=splits.TRAIN_SUBJECTS,
    train_sentences=tuple(splits.HELDOUT_TRAIN_SENTENCES) + tuple(splits.EXTRA_SENTENCES),
    val_sentences=splits.HELDOUT_VAL_SENTENCES, test_sentences=splits.HELDOUT_TEST_SENTENCES,
    mask_source="regions/ is written by SynthTalk/make_dataset.py",
)

PRESETS = {"vocaset": VOCASET, "biwi": BIWI, "synthtalk": SYNTHTALK}


def resolve_dataset(name_or_path: str | os.PathLike) -> DatasetPreset:
    """`vocaset`/`VOCASET`/`BIWI`/`biwi`/`SynthTalk` -> its preset; anything else -> a folder with the generic preset.

    A path whose folder name is a known dataset (e.g. `/data/BIWI`) keeps that dataset's preset.
    """
    text = str(name_or_path)
    key = text.lower()
    if key in PRESETS:
        return PRESETS[key]
    folder = Path(text).expanduser().resolve()
    preset = PRESETS.get(folder.name.lower())
    if preset is not None:
        return DatasetPreset(**{**preset.__dict__, "folder": folder})
    return DatasetPreset(name=folder.name, folder=folder)
