"""Evaluation metrics of speech-driven face animation, with CodeTalker's definitions.

All vertex arrays are absolute positions. Per frame t and vertex v, `d(t, v)` is the squared
distance sum_xyz (gt - pred)^2 (no square root), as in the reference evaluation.

- LVE: per frame, the max of d over the lip vertices; averaged over all frames of all sequences.
- FDD: per sequence, `dyn = mean over upper-face vertices of std over time of sum_xyz motion^2`
  with `motion = vertices - template`; FDD = dyn_gt - dyn_pred (signed), averaged over sequences.
- MVE: per frame, the mean Euclidean distance over all vertices; averaged over all frames.

A region is a set of vertex ids (an id listed twice counts once; docs/reproduction.md compares this
with the public metric script). A region that is absent leaves its metric NaN, `n/a` in the table.

`score_result_folder` scores a folder of predictions; `report` turns the scores into the table that
every entry point prints, so main.py's test phase and `evaluate.py` show the same numbers.
"""
from __future__ import annotations

import csv
import math
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DatasetPreset
from .errors import UserError
from .fileio import atomic_path
from .layout import load_vertices, result_stem, split_result_stem, subject_of
from .mesh import load_templates


# ----------------------------------------------------------------------------- per-sequence metrics

def _as_frames(vertices) -> np.ndarray:
    """(T, V, 3) or (T, V*3) -> (T, V, 3) float64 (float64 so pooled means do not drift)."""
    array = np.asarray(vertices, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] % 3 == 0:
        array = array.reshape(array.shape[0], -1, 3)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected vertices of shape (T, V, 3) or (T, V*3), got {array.shape}")
    return array


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")


def lip_vertex_error(pred, gt, lip_ids) -> np.ndarray:
    """Per-frame lip error: pred, gt (T, V, 3), lip_ids (L,) -> (T,) max over lips of d(t, v).

    LVE of a test set is the mean of these values over all frames of all sequences pooled.
    """
    ids = np.asarray(lip_ids, dtype=np.int64)
    pred, gt = _as_frames(pred), _as_frames(gt)
    _check_pair(pred, gt)
    return np.square(gt[:, ids] - pred[:, ids]).sum(axis=2).max(axis=1)


def upper_face_dynamics(motion, ids=None) -> float:
    """motion (T, V, 3) = vertices - template, ids (U,) or None for all -> mean over those
    vertices of the std over time of sum_xyz motion^2 (population std, ddof=0, like the
    reference's np.std)."""
    motion = _as_frames(motion)
    if ids is not None:
        motion = motion[:, np.asarray(ids, dtype=np.int64)]
    return float(np.square(motion).sum(axis=2).std(axis=0).mean())


def upper_face_dynamics_deviation(pred, gt, template, ids) -> float:
    """pred, gt (T, V, 3), template (V, 3), ids (U,) -> dyn_gt - dyn_pred for one sequence.

    Positive when the prediction moves the upper face less than the ground truth.
    """
    ids = np.asarray(ids, dtype=np.int64)
    pred, gt = _as_frames(pred), _as_frames(gt)
    _check_pair(pred, gt)
    # Slice before subtracting: full-mesh motion arrays are large for BIWI-sized meshes.
    template = np.asarray(template, dtype=np.float64).reshape(-1, 3)[ids]
    return upper_face_dynamics(gt[:, ids] - template) - upper_face_dynamics(pred[:, ids] - template)


def mean_vertex_error(pred, gt) -> np.ndarray:
    """pred, gt (T, V, 3) -> (T,) mean over all vertices of the Euclidean distance."""
    pred, gt = _as_frames(pred), _as_frames(gt)
    _check_pair(pred, gt)
    return np.linalg.norm(gt - pred, axis=2).mean(axis=1)


# ----------------------------------------------------------------------------- region masks

@dataclass(frozen=True)
class RegionMasks:
    """Vertex ids (unique, sorted int64 arrays) of the lips (LVE, the mouth loss) and of the upper face
    (FDD); None where a region is absent, which turns its metric off. `*_source` is the file each came
    from (or the missing one); `notes` tell the user about absent or substituted regions."""
    lips: np.ndarray | None
    upper_face: np.ndarray | None
    lip_source: str = ""
    upper_face_source: str = ""
    notes: tuple[str, ...] = ()

    def validate(self, num_vertices: int) -> None:
        for label, ids in (("lip", self.lips), ("upper-face", self.upper_face)):
            if ids is not None and ids.size and ids.max() >= num_vertices:
                raise UserError(f"{label} mask holds vertex id {int(ids.max())} but the meshes have "
                                f"{num_vertices} vertices: the mask belongs to another topology")

    def describe(self) -> list[str]:
        """The notes, then one line per region present: its file and how many vertices it holds."""
        regions = (("lip", self.lips, self.lip_source), ("upper-face", self.upper_face, self.upper_face_source))
        return [*self.notes, *(f"{label} region: {source} ({ids.size} vertices)"
                               for label, ids, source in regions if ids is not None)]


def _read_ids_text(path: Path) -> np.ndarray:
    tokens = path.read_text().replace(",", " ").split()
    try:
        return np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError as exc:
        raise UserError(f"mask file {path} must hold integer vertex ids separated by commas "
                        f"or whitespace: {exc}") from exc


def _read_ids_pickle(path: Path, regions: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            table = pickle.load(f, encoding="latin1")  # FLAME's masks are a Python 2 pickle
    except Exception as exc:  # pickle raises many types for corrupt files
        raise UserError(f"cannot read mask pickle {path}: {exc}") from exc
    if not isinstance(table, dict):
        raise UserError(f"mask pickle {path} must hold a dict {{region: vertex ids}}")
    names = [name for name in regions.split("+") if name]
    missing = [name for name in names if name not in table]
    if not names or missing:
        raise UserError(f"mask pickle {path} has no region {'+'.join(missing) or '(none named)'}; "
                        f"regions there: {', '.join(sorted(map(str, table)))}")
    return np.concatenate([np.asarray(table[name], dtype=np.int64).ravel() for name in names])


def _mask_file(dataset_dir: Path, spec: str, what: str) -> tuple[Path, str | None]:
    """`FILE.pkl:region+region` -> (its path, the regions); an ids file -> (its path, None).
    Relative paths are taken from `dataset_dir`."""
    file_part, sep, regions = spec.rpartition(":")
    if not (sep and file_part.lower().endswith(".pkl")):
        if spec.lower().endswith(".pkl"):
            raise UserError(f"{what} mask {spec!r} names a pickle but no region: "
                            f"write FILE.pkl:region[+region]")
        file_part, regions = spec, None
    path = Path(file_part).expanduser()
    return (path if path.is_absolute() else dataset_dir / path), regions


def _load_mask(dataset_dir: Path, spec: str, what: str, mask_source: str) -> tuple[np.ndarray, str]:
    """-> (unique sorted ids, the file they came from, with its regions for a pickle)."""
    path, regions = _mask_file(dataset_dir, spec, what)
    if not path.is_file():
        raise UserError(f"{what} mask file not found: {path}. {_where_to_get(mask_source)}; place it "
                        f"there or pass its path with --{what.replace('-', '_')}_mask")
    ids = _read_ids_text(path) if regions is None else _read_ids_pickle(path, regions)
    if ids.size == 0:
        raise UserError(f"{what} mask {spec!r} ({path}) holds no vertex ids")
    if ids.min() < 0:
        raise UserError(f"{what} mask {spec!r} ({path}) holds a negative vertex id {int(ids.min())}")
    # Duplicates would weight a vertex twice in FDD's mean; a region is a set.
    return np.unique(ids), str(path) if regions is None else f"{path}:{regions}"


def _where_to_get(mask_source: str) -> str:
    return mask_source or "region ids come with the dataset's evaluation protocol"


def dataset_regions(preset: DatasetPreset, lip_mask: str | None = None,
                    upper_face_mask: str | None = None) -> RegionMasks:
    """The regions of a dataset, each loaded on its own.

    A spec is a text file of ids (`regions/lve.txt`, comma/whitespace separated) or a pickle of id
    arrays with the regions to unite (`FLAME_masks.pkl:forehead+eye_region`), relative to the
    dataset folder unless absolute. A spec given here (a flag) must load. A preset's default file
    that is absent leaves its region None, with a note that its metric is off. The lips first fall
    back to `preset.lip_mask_fallback` (VOCASET: FLAME_masks.pkl:lips), with a note that LVE is then
    not comparable to published figures.
    """
    notes: list[str] = []
    lips, lip_source = _dataset_region(preset, lip_mask or _default_lip_mask(preset, notes),
                                       lip_mask is not None, "lip", "LVE", notes)
    upper_face, upper_face_source = _dataset_region(preset, upper_face_mask or preset.upper_face_mask,
                                                    upper_face_mask is not None, "upper-face", "FDD", notes)
    return RegionMasks(lips, upper_face, lip_source, upper_face_source, tuple(notes))


def _default_lip_mask(preset: DatasetPreset, notes: list[str]) -> str:
    """The preset's lip mask, or its fallback (with a note) when only the fallback's file is there."""
    primary, _ = _mask_file(preset.folder, preset.lip_mask, "lip")
    fallback = preset.lip_mask_fallback
    if not fallback or primary.is_file() or not _mask_file(preset.folder, fallback, "lip")[0].is_file():
        return preset.lip_mask
    notes.append(f"note: {primary} not found; the lip region is {fallback} instead, so {preset.name} LVE is "
                 f"not comparable to published figures ({_where_to_get(preset.mask_source)})")
    return fallback


def _dataset_region(preset: DatasetPreset, spec: str, given: bool, what: str, metric: str,
                    notes: list[str]) -> tuple[np.ndarray | None, str]:
    """-> (ids, source) of a given spec or of a present default; (None, missing file) with a note."""
    path, _ = _mask_file(preset.folder, spec, what)
    if given or path.is_file():
        return _load_mask(preset.folder, spec, what, preset.mask_source)
    notes.append(f"note: no {what} region ({path} not found; {_where_to_get(preset.mask_source)}): "
                 f"{metric} is off")
    return None, str(path)


# ----------------------------------------------------------------------------- scores

@dataclass(frozen=True)
class SequenceScore:
    """One prediction file. `lve`/`mve` are means over its scored frames; `gt_frames` is the
    ground-truth length after the capture stride (larger than `frames` for a short prediction)."""
    name: str
    condition: str
    frames: int
    gt_frames: int
    lve: float
    fdd: float
    mve: float


@dataclass(frozen=True)
class Aggregate:
    """LVE and MVE pooled over all frames; FDD averaged over sequences."""
    sequences: int
    frames: int
    lve: float
    fdd: float
    mve: float


def aggregate(rows: list[SequenceScore] | tuple[SequenceScore, ...]) -> Aggregate:
    frames = np.array([row.frames for row in rows], dtype=np.float64)
    lve = np.array([row.lve for row in rows])
    mve = np.array([row.mve for row in rows])
    return Aggregate(sequences=len(rows), frames=int(frames.sum()),
                     lve=float((lve * frames).sum() / frames.sum()),
                     fdd=float(np.mean([row.fdd for row in rows])),
                     mve=float((mve * frames).sum() / frames.sum()))


@dataclass(frozen=True)
class Scores:
    rows: tuple[SequenceScore, ...]
    overall: Aggregate
    by_condition: dict[str, Aggregate]
    static: Aggregate | None = None     # the template itself as the prediction: the floor to beat

    @classmethod
    def from_rows(cls, rows: list[SequenceScore], static_rows: list[SequenceScore] | None = None) -> "Scores":
        conditions = sorted({row.condition for row in rows})
        return cls(rows=tuple(rows), overall=aggregate(rows),
                   by_condition={c: aggregate([r for r in rows if r.condition == c]) for c in conditions},
                   static=aggregate(static_rows) if static_rows else None)

    @property
    def own_condition(self) -> Aggregate | None:
        """Sequences scored under their own speaker's condition, when other conditions were scored too."""
        own = [r for r in self.rows if r.condition and r.condition == subject_of(r.name)]
        return aggregate(own) if own and len(own) < len(self.rows) else None

    def own_condition_ranking(self) -> tuple[int, int]:
        """Over sequences scored under several conditions including their own speaker's: how many
        have their lowest LVE under their own speaker's condition -> (best, total)."""
        by_name: dict[str, list[SequenceScore]] = {}
        for row in self.rows:
            by_name.setdefault(row.name, []).append(row)
        best = total = 0
        for name, rows in by_name.items():
            speaker = subject_of(name)
            own = [r for r in rows if r.condition == speaker]
            if len(rows) > 1 and own:
                total += 1
                best += own[0].lve < min(r.lve for r in rows if r.condition != speaker)
        return best, total

    @property
    def shortened(self) -> tuple[SequenceScore, ...]:
        """Predictions shorter than their ground truth (scored on the prediction's length)."""
        return tuple(row for row in self.rows if row.frames < row.gt_frames)


def score_sequence(name: str, condition: str, pred, gt, template, masks: RegionMasks) -> SequenceScore:
    """pred (T, V, 3), gt (T', V, 3), template (V, 3) -> scores on the first min(T, T') frames.

    A longer prediction is cut to the ground truth (the reference protocol); a shorter one cuts the
    ground truth instead, which `SequenceScore.gt_frames` records. LVE / FDD are NaN without their region.
    """
    pred, gt = _as_frames(pred), _as_frames(gt)
    frames = min(len(pred), len(gt))
    pred_t, gt_t = pred[:frames], gt[:frames]
    lips, upper_face = masks.lips, masks.upper_face
    return SequenceScore(
        name=name, condition=condition, frames=frames, gt_frames=len(gt),
        lve=math.nan if lips is None else float(lip_vertex_error(pred_t, gt_t, lips).mean()),
        fdd=math.nan if upper_face is None else upper_face_dynamics_deviation(pred_t, gt_t, template, upper_face),
        mve=float(mean_vertex_error(pred_t, gt_t).mean()))


def _read_frames(path: Path, what: str, stride: int = 1) -> np.ndarray:
    """A vertex file -> every `stride`-th frame as (T, V, 3) float64, all values finite."""
    vertices = _as_frames(load_vertices(path, what)[::stride])
    if not np.isfinite(vertices).all():
        raise UserError(f"{what} {path} holds non-finite values")
    return vertices


def score_result_folder(dataset_dir: str | os.PathLike, result_dir: str | os.PathLike,
                        masks: RegionMasks, capture_stride: int = 1,
                        templates_file: str | os.PathLike = "templates.pkl",
                        vertices_dir: str | os.PathLike = "vertices_npy") -> Scores:
    """Score every `*.npy` prediction in `result_dir` against `<vertices_dir>/<name>.npy`.

    `templates_file` and `vertices_dir` are relative to `dataset_dir` unless absolute. Ground truth
    keeps every `capture_stride`-th captured frame, like training does.
    """
    dataset_dir, result_dir = Path(dataset_dir), Path(result_dir)
    if capture_stride < 1:
        raise UserError(f"capture stride must be >= 1, got {capture_stride}")
    if not result_dir.is_dir():
        raise UserError(f"result folder not found: {result_dir}")
    files = sorted(result_dir.glob("*.npy"))
    if not files:
        raise UserError(f"no predictions (*.npy) in {result_dir}")
    templates = load_templates(dataset_dir / templates_file)
    gt_dir = dataset_dir / vertices_dir
    rows, static = [], {}
    for file in files:
        name, condition = split_result_stem(file.stem)
        speaker = subject_of(name)
        if not speaker or speaker == name:
            raise UserError(f"cannot tell the speaker from result file {file.name}: expected "
                            f"<speaker>_<sentence>[_condition_<subject>].npy")
        gt_path = gt_dir / f"{name}.npy"
        if not gt_path.is_file():
            raise UserError(f"no ground truth for {file.name}: {gt_path} is missing")
        if speaker not in templates:
            raise UserError(f"no template for speaker {speaker!r} (from {file.name}) in "
                            f"{dataset_dir / templates_file}")
        gt = _read_frames(gt_path, "ground truth", capture_stride)
        pred = _read_frames(file, "prediction")
        template = templates[speaker]
        if pred.shape[1] != gt.shape[1]:
            raise UserError(f"prediction {file} has {pred.shape[1]} vertices per frame but its ground "
                            f"truth {gt_path} has {gt.shape[1]}")
        if template.shape[0] != gt.shape[1]:
            raise UserError(f"template of {speaker!r} has {template.shape[0]} vertices but the ground "
                            f"truth {gt_path} has {gt.shape[1]}")
        masks.validate(gt.shape[1])
        rows.append(score_sequence(name, condition, pred, gt, template, masks))
        if name not in static:
            static[name] = score_sequence(name, "static template", np.broadcast_to(template, gt.shape), gt,
                                          template, masks)
    return Scores.from_rows(rows, list(static.values()))


def evaluate_preset(preset: DatasetPreset, result_dir: str | os.PathLike,
                    vertices_dir: str | os.PathLike = "vertices_npy",
                    templates_file: str | os.PathLike = "templates.pkl",
                    lip_mask: str | None = None, upper_face_mask: str | None = None,
                    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Scores:
    """Score `result_dir` with a dataset preset's regions (see `dataset_regions`; overridable) and
    capture stride. `say` gets the regions' notes and one line per region used."""
    if not preset.folder.is_dir():
        raise UserError(f"dataset folder not found: {preset.folder}")
    masks = dataset_regions(preset, lip_mask, upper_face_mask)
    scores = score_result_folder(preset.folder, result_dir, masks, preset.capture_stride,
                                 templates_file=templates_file, vertices_dir=vertices_dir)
    for line in masks.describe():
        say(line)
    return scores


# ----------------------------------------------------------------------------- reporting

@dataclass(frozen=True)
class Units:
    """Decimal exponents the printed values are scaled by: a value v shows as v / 10**exponent."""
    lve: int
    fdd: int
    mve: int

    def label(self, metric: str) -> str:
        return f"{metric.upper()} (x1e{getattr(self, metric)})"


# BIWI and VOCASET units are the ones the literature reports (VOCASET FDD varies; x1e-7 is common).
PRESET_UNITS = {"biwi": Units(lve=-4, fdd=-5, mve=-3), "vocaset": Units(lve=-5, fdd=-7, mve=-3)}


def _exponent(value: float) -> int:
    return int(math.floor(math.log10(abs(value)))) if math.isfinite(value) and value != 0 else 0


def metric_units(dataset_name: str, scores: Scores | None = None) -> Units:
    """The literature's units for BIWI / VOCASET; for other datasets, the power of ten of each
    overall value (so it prints as 1.xxxx-9.xxxx), or plain units without scores."""
    known = PRESET_UNITS.get(dataset_name.lower())
    if known is not None:
        return known
    if scores is None:
        return Units(0, 0, 0)
    overall = scores.overall
    return Units(_exponent(overall.lve), _exponent(overall.fdd), _exponent(overall.mve))


def format_table(scores: Scores, units: Units, per_sequence: bool = False) -> str:
    """A printable table: optionally one row per sequence, one per condition (when there are
    several), and the overall row; units in the header; short predictions listed below."""
    entries: list[tuple[str, int, float, float, float]] = []
    if per_sequence:
        entries += [(f"{r.name} [{r.condition}]" if r.condition else r.name, r.frames, r.lve, r.fdd, r.mve)
                    for r in scores.rows]
    if len(scores.by_condition) > 1:
        entries += [(f"condition {c or '(none)'} ({a.sequences} seq)", a.frames, a.lve, a.fdd, a.mve)
                    for c, a in scores.by_condition.items()]
    own = scores.own_condition
    if own is not None:
        entries.append((f"own speaker's condition ({own.sequences} seq)", own.frames, own.lve, own.fdd, own.mve))
    overall = scores.overall
    entries.append((f"all ({overall.sequences} seq)", overall.frames, overall.lve, overall.fdd, overall.mve))
    if scores.static is not None:
        s = scores.static
        entries.append((f"static template ({s.sequences} seq)", s.frames, s.lve, s.fdd, s.mve))

    width = max(len(entry[0]) for entry in entries)
    labels = [units.label(metric) for metric in ("lve", "fdd", "mve")]
    lines = [f"{'':<{width}}  {'frames':>7}  " + "  ".join(f"{label:>13}" for label in labels)]
    for label, frames, lve, fdd, mve in entries:
        values = (lve / 10.0 ** units.lve, fdd / 10.0 ** units.fdd, mve / 10.0 ** units.mve)
        lines.append(f"{label:<{width}}  {frames:>7d}  " + "  ".join(
            f"{v:>13.4f}" if math.isfinite(v) else f"{'n/a':>13}" for v in values))
    lines.append("LVE: max squared lip-vertex distance, mean over all frames; FDD: dyn_gt - dyn_pred "
                 "(signed), mean over sequences; MVE: mean vertex distance, mean over all frames")
    best, total = scores.own_condition_ranking()
    if total and math.isfinite(scores.overall.lve):
        lines.append(f"own speaker's condition gives the lowest LVE on {best} of {total} sequences "
                     f"({100.0 * best / total:.0f}%)")
    short = scores.shortened
    if short:
        shown = 5  # the CSV has them all (frames < gt_frames)
        listed = ", ".join(result_stem(r.name, r.condition) for r in short[:shown])
        more = f" and {len(short) - shown} more" if len(short) > shown else ""
        lines.append(f"{len(short)} prediction(s) shorter than the ground truth, scored on their own "
                     f"length: {listed}{more}")
    return "\n".join(lines)


def report(scores: Scores, dataset_name: str, per_sequence: bool = False) -> str:
    """The table every entry point prints, in the dataset's units."""
    return format_table(scores, metric_units(dataset_name, scores), per_sequence=per_sequence)


def write_csv(scores: Scores, path: str | os.PathLike) -> None:
    """Per-sequence values (unscaled) as CSV, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "condition", "frames", "gt_frames", "lve", "fdd", "mve"])
        for r in scores.rows:
            writer.writerow([r.name, r.condition, r.frames, r.gt_frames,
                             repr(r.lve), repr(r.fdd), repr(r.mve)])
