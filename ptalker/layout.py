"""The file conventions of the standard dataset layout, each in one place.

    <dataset>/wav/<subject>_<sentence>.wav             speech of one clip
    <dataset>/vertices_npy/<subject>_<sentence>.npy    its captured motion, (frames, V*3)
    <dataset>/result/<name>_condition_<subject>.npy    a prediction of clip <name> in <subject>'s style

`subject_of` and `sentence_of` read a clip name; `result_stem` builds a prediction's file stem and
`split_result_stem` takes it apart; `load_vertices` opens every vertex file (captures, predictions,
reference motions, VOCASET's raw array), so all accept the same shapes and fail the same way.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import UserError

CONDITION_SEP = "_condition_"


def subject_of(name: str) -> str:
    """`FaceTalk_170725_00137_TA_sentence01` -> `FaceTalk_170725_00137_TA`; `F2_e37` -> `F2`;
    a name without `_` is its own subject."""
    return name.rsplit("_", 1)[0]


def sentence_of(name: str) -> int | None:
    """The sentence number: the digits that end the name (None when there are none).
    `..._sentence07` -> 7, `F2_e37` -> 37, `synth01_sentence105` -> 105."""
    digits = re.search(r"\d+$", name)
    return int(digits.group()) if digits else None


def result_stem(name: str, condition: str | None = None) -> str:
    """A prediction's file stem: clip `name` animated under training subject `condition`
    (`F2_e37`, `F3` -> `F2_e37_condition_F3`); without a condition, the clip name itself."""
    return f"{name}{CONDITION_SEP}{condition}" if condition else name


def split_result_stem(stem: str) -> tuple[str, str]:
    """`F2_e37_condition_F3` -> (`F2_e37`, `F3`); a stem without a condition -> (stem, "").

    The condition subject may hold underscores (`..._condition_FaceTalk_170728_03272_TA`), so the
    split is at the last `_condition_`."""
    name, sep, condition = stem.rpartition(CONDITION_SEP)
    return (name, condition) if sep else (stem, "")


def load_vertices(path: str | os.PathLike, what: str = "vertices") -> np.ndarray:
    """A vertex file -> a memory-mapped (frames, V, 3) view: only the header is read until it is indexed.

    Accepted: (frames, V*3) and (frames, V, 3), either with leading axes of size 1 (a batch of one).
    A missing or unreadable file, any other shape, non-numeric values or no frames is a UserError that
    names `what` and the path. The vertex count is the caller's to check (it knows what to expect)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged or pickled files
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(array, np.ndarray):   # an .npz archive
        raise UserError(f"{what} {path} is not a single array (.npy)")
    if array.dtype.kind not in "biuf":
        raise UserError(f"{what} {path} holds {array.dtype} values, not numbers")
    shape = array.shape
    vertex_axes = 2 if len(shape) >= 3 and shape[-1] == 3 else 1
    frame_axes = shape[:-vertex_axes]
    width = int(np.prod(shape[-vertex_axes:])) if shape else 0
    if not frame_axes or width == 0 or sum(d != 1 for d in frame_axes) > 1:
        raise UserError(f"{what} {path} has shape {shape}; expected (frames, V*3) or (frames, V, 3)")
    if width % 3:
        raise UserError(f"{what} {path} has {width} values per frame, not 3 per vertex")
    frames = int(np.prod(frame_axes))
    if frames == 0:
        raise UserError(f"{what} {path} holds no frames")
    return array.reshape(frames, width // 3, 3)
