"""What a dataset folder in the standard layout holds, and what is wrong with it.

`check_dataset` only reads headers (npy shapes through a memory map, wav headers), so it is quick
even on the full datasets; it never raises for a problem in the data, it lists it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .layout import load_vertices, subject_of
from .mesh import load_templates, read_mesh

MAX_LISTED_PROBLEMS = 30


@dataclass
class DatasetReport:
    dataset_dir: Path
    sequences: dict[str, int] = field(default_factory=dict)    # subject -> complete sequences
    frames: int = 0
    audio_seconds: float = 0.0
    template_subjects: list[str] = field(default_factory=list)
    template_vertices: int | None = None
    topology_mesh: Path | None = None
    topology_vertices: int | None = None
    topology_faces: int | None = None
    problems: list[str] = field(default_factory=list)
    length_mismatches: list[str] = field(default_factory=list)   # speech and capture over a frame apart

    @property
    def subjects(self) -> list[str]:
        return sorted(self.sequences)

    @property
    def num_sequences(self) -> int:
        return sum(self.sequences.values())

    @property
    def ok(self) -> bool:
        return not self.problems


def _visible(folder: Path, suffix: str) -> dict[str, Path]:
    """stem -> file; hidden files are unfinished atomic writes and are left out."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob(f"*{suffix}"))
            if p.is_file() and not p.name.startswith(".")}


def _wav_seconds(path: Path) -> float:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def check_dataset(dataset_dir: str | os.PathLike, vertice_dim: int | None = None,
                  wav_path: str = "wav", vertices_path: str = "vertices_npy",
                  template_file: str = "templates.pkl", fps: float | None = None,
                  capture_stride: int = 1) -> DatasetReport:
    """Inspect `dataset_dir` -> a DatasetReport; `report.problems` lists everything wrong, and with
    the motion's `fps` (after keeping every `capture_stride`-th captured frame)
    `report.length_mismatches` every clip whose speech and capture differ by more than one frame."""
    root = Path(dataset_dir)
    report = DatasetReport(dataset_dir=root)
    if not root.is_dir():
        report.problems.append(f"dataset folder not found: {root}")
        return report
    templates_path = root / template_file
    templates, width = _check_templates(report, templates_path, vertice_dim)
    _check_topology(report, root / "templates")
    wav_dir, npy_dir = root / wav_path, root / vertices_path
    wavs, npys = _paired_files(report, wav_dir, npy_dir)
    missing_template = set()
    for stem in sorted(set(wavs) & set(npys)):
        clip = _read_clip(report.problems, wavs[stem], npys[stem], width)
        if clip is None:
            continue
        captured, seconds = clip
        subject = subject_of(stem)
        if templates and subject not in templates and subject not in missing_template:
            missing_template.add(subject)
            report.problems.append(f"subject {subject!r} has sequences but no template in {templates_path}")
        report.sequences[subject] = report.sequences.get(subject, 0) + 1
        report.frames += captured
        report.audio_seconds += seconds
        frames = -(-captured // capture_stride)
        if fps is not None and abs(seconds * fps - frames) > 1:
            report.length_mismatches.append(f"{stem}: speech {seconds:.2f} s = {seconds * fps:.1f} frames, "
                                            f"capture {frames} frames")
    if not wavs and not npys and wav_dir.is_dir() and npy_dir.is_dir():
        report.problems.append(f"no sequences in {wav_dir} and {npy_dir}")
    return report


def _check_templates(report: DatasetReport, templates_path: Path, vertice_dim: int | None) -> tuple[dict, int | None]:
    """The subject templates (none when unreadable), their subjects and vertex count into `report`
    -> (templates, values per frame that every clip must have: vertice_dim, else the templates')."""
    problems = report.problems
    templates = {}
    if not templates_path.is_file():
        problems.append(f"{templates_path} is missing")
    else:
        try:
            templates = load_templates(templates_path)
        except UserError as exc:
            problems.append(str(exc))
    report.template_subjects = sorted(templates)
    counts = sorted({len(v) for v in templates.values()})
    if counts:
        report.template_vertices = counts[0]
    if len(counts) > 1:
        problems.append(f"{templates_path}: templates differ in vertex count ({counts})")
    width = report.template_vertices * 3 if report.template_vertices else None
    if vertice_dim is not None and width is not None and width != vertice_dim:
        problems.append(f"{templates_path}: templates have {report.template_vertices} vertices "
                        f"({width} values), but vertice_dim is {vertice_dim}")
    return templates, vertice_dim or width


def _check_topology(report: DatasetReport, topology_dir: Path) -> None:
    """The first topology mesh `templates/*.ply`: its vertex and face counts into `report`; it must
    have as many vertices as the templates."""
    problems = report.problems
    meshes = sorted(p for p in topology_dir.glob("*.ply") if not p.name.startswith(".")) \
        if topology_dir.is_dir() else []
    if not meshes:
        problems.append(f"no topology mesh {topology_dir}/*.ply")
        return
    report.topology_mesh = meshes[0]
    try:
        verts, faces = read_mesh(meshes[0])
        report.topology_vertices, report.topology_faces = len(verts), len(faces)
        if report.template_vertices and len(verts) != report.template_vertices:
            problems.append(f"{meshes[0]} has {len(verts)} vertices, the templates have "
                            f"{report.template_vertices}")
    except UserError as exc:
        problems.append(str(exc))


def _paired_files(report: DatasetReport, wav_dir: Path, npy_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(stem -> wav, stem -> npy); a missing folder and a file without its partner are problems."""
    for folder in (wav_dir, npy_dir):
        if not folder.is_dir():
            report.problems.append(f"folder {folder} is missing")
    wavs, npys = _visible(wav_dir, ".wav"), _visible(npy_dir, ".npy")
    for stem in sorted(set(wavs) - set(npys)):
        report.problems.append(f"{wavs[stem]} has no vertices file {npy_dir / (stem + '.npy')}")
    for stem in sorted(set(npys) - set(wavs)):
        report.problems.append(f"{npys[stem]} has no audio file {wav_dir / (stem + '.wav')}")
    return wavs, npys


def _read_clip(problems: list[str], wav: Path, npy: Path, width: int | None) -> tuple[int, float] | None:
    """(captured frames, speech seconds) of one clip from the files' headers; None, and a problem
    listed, when a file is unreadable or the motion has the wrong width."""
    try:
        vertices = load_vertices(npy)
    except UserError as exc:
        problems.append(str(exc))
        return None
    try:
        seconds = _wav_seconds(wav)
    except Exception as exc:  # soundfile raises its own and OS error types
        problems.append(f"cannot read {wav}: {exc}")
        return None
    values = vertices.shape[1] * 3
    if width is not None and values != width:
        problems.append(f"{npy} has {values} values per frame, the templates need {width}")
        return None
    return len(vertices), seconds


def format_report(report: DatasetReport) -> str:
    """A few readable lines: what the folder holds, then its problems (or OK)."""
    per_subject = ", ".join(f"{s} {n}" for s, n in sorted(report.sequences.items()))
    lines = [f"dataset {report.dataset_dir}",
             f"  subjects:   {len(report.subjects)}" + (f" ({per_subject})" if per_subject else ""),
             f"  sequences:  {report.num_sequences} with audio and vertices",
             f"  frames:     {report.frames}",
             f"  audio:      {report.audio_seconds:.1f} s"]
    if report.template_vertices is not None:
        lines.append(f"  templates:  {len(report.template_subjects)} subjects, "
                     f"{report.template_vertices} vertices")
    else:
        lines.append("  templates:  none")
    if report.topology_mesh is not None and report.topology_vertices is not None:
        lines.append(f"  topology:   {report.topology_mesh.name} ({report.topology_vertices} vertices, "
                     f"{report.topology_faces} faces)")
    else:
        lines.append("  topology:   none")
    if report.length_mismatches:
        lines.append(f"  {len(report.length_mismatches)} clips whose speech and capture differ by more than one "
                     f"frame (training cuts BIWI's motion to its speech, stretches VOCASET's speech):")
        lines += [f"    {m}" for m in report.length_mismatches]
    if report.ok:
        lines.append("OK")
    else:
        lines.append(f"{len(report.problems)} problems:")
        lines += [f"  - {p}" for p in report.problems[:MAX_LISTED_PROBLEMS]]
        if len(report.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)
