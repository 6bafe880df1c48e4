"""Known dataset presets: where a dataset lives and how its motion and audio line up.

A preset is looked up by name (`vocaset`, `BIWI`, `SynthTalk`, case-insensitive); any other `--dataset`
value is a path to a folder in the standard layout and gets the generic preset. The generated SynthTalk
corpus's subject and sentence splits (`SYNTHTALK_*`) are defined here too, for its preset and its scripts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

# ------------------------------------------------------------------ SynthTalk: subject and sentence splits
# of the default generated corpus (SynthTalk/make_dataset.py: 8 speakers x 120 sentences). Two protocols,
# like the two public benchmarks:
# - VOCASET-like (unseen speakers): train synth01-06 on sentences 1-40, validate on synth07 and test on
#   synth08, both on sentences 21-40.
# - BIWI-like (seen speakers, unseen sentences; the preset's): synth01-06 train on 1-32 and on the further
#   texts 73-104, validate on 33-36, test on 37-40 (Test-A); Test-B is the unseen synth07-08 on 37-40.
# Sentences 41-104 of synth01-06 are spoken in another of these six speakers' voices and moved with the
# speaker's own style (see SynthTalk/corpus.py): with one voice per speaker, the speech alone would tell
# the style, and a model could learn to ignore the speaker condition. 41-72 repeat the texts of 1-32;
# 73-104 are further texts. 105-120, in the speaker's own voice, are held out as a development set.
SYNTHTALK_TRAIN_SUBJECTS = ("synth01", "synth02", "synth03", "synth04", "synth05", "synth06")
SYNTHTALK_VAL_SUBJECTS = ("synth07",)
SYNTHTALK_TEST_SUBJECTS = ("synth08",)
SYNTHTALK_UNSEEN_SUBJECTS = SYNTHTALK_VAL_SUBJECTS + SYNTHTALK_TEST_SUBJECTS
# VOCASET-like
SYNTHTALK_TRAIN_SENTENCES = range(1, 41)
SYNTHTALK_VAL_SENTENCES = range(21, 41)
SYNTHTALK_TEST_SENTENCES = range(21, 41)
# BIWI-like, on the training subjects (Test-B: the unseen subjects on the held-out test sentences)
SYNTHTALK_HELDOUT_TRAIN_SENTENCES = range(1, 33)
SYNTHTALK_HELDOUT_VAL_SENTENCES = range(33, 37)
SYNTHTALK_HELDOUT_TEST_SENTENCES = range(37, 41)
SYNTHTALK_CROSS_VOICE_SENTENCES = range(41, 73)    # sentence 40 + k: the text of sentence k, another voice
SYNTHTALK_EXTRA_SENTENCES = range(73, 105)         # further texts (corpus.EXTRA_TEXTS), another voice
SYNTHTALK_DEVELOPMENT_SENTENCES = range(105, 121)  # held-out texts (corpus.DEVELOPMENT_TEXTS), own voice

SYNTHTALK = DatasetPreset(
    # the generated corpus; BIWI-like protocol: seen speakers, held-out sentences
    name="SynthTalk", folder=ROOT / "SynthTalk", fps=30, capture_stride=1, audio_alignment="interpolate",
    vertice_dim=None, feature_dim=64, period=30,
    train_subjects=SYNTHTALK_TRAIN_SUBJECTS, val_subjects=SYNTHTALK_TRAIN_SUBJECTS,
    test_subjects=SYNTHTALK_TRAIN_SUBJECTS,
    train_sentences=tuple(SYNTHTALK_HELDOUT_TRAIN_SENTENCES) + tuple(SYNTHTALK_EXTRA_SENTENCES),
    val_sentences=SYNTHTALK_HELDOUT_VAL_SENTENCES, test_sentences=SYNTHTALK_HELDOUT_TEST_SENTENCES,
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
