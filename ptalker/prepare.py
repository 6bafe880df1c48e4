"""Turn the raw VOCASET and BIWI downloads into the standard dataset layout.

Both converters write `wav/<subject>_<sentence>.wav` and `vertices_npy/<subject>_<sentence>.npy`
(float32, frames x V*3), show a progress bar, skip sequences whose outputs already exist (every
write is atomic, so an interrupted run leaves only complete files) and return a `Summary`.

Policy for incomplete input, the same for both datasets: a sequence with audio but no frames, or
frames but no audio, is skipped with a warning listed in the summary; anything unreadable or
inconsistent (corrupt file, wrong pickle structure, vertex counts that disagree) is a `UserError`
that names the file, since converting around it would silently produce a wrong dataset.
"""
from __future__ import annotations

import pickle
import re
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import UserError
from .fileio import atomic_path, save_npy, save_pickle, save_wav
from .layout import load_vertices
from .mesh import load_templates, read_mesh, surface_area, write_mesh

VOCASET_SOURCE = "the VOCASET training data download (voca.is.tue.mpg.de, registration required)"
FLAME_SAMPLE_SOURCE = ("FLAME_sample.ply from the VOCA release "
                       "(github.com/TimoBolkart/voca, folder template/)")
BIWI_SOURCE = "the B3D(AC)^2 corpus (data.vision.ee.ethz.ch/cvl/datasets/b3dac2.en.html)"
BIWI_SENTENCES = range(1, 41)   # the emotional takes e01..e40; neutral takes 01..40 are not used


@dataclass
class Summary:
    """What a conversion run did, printed at its end."""
    dataset: str
    subjects: set[str] = field(default_factory=set)
    written: int = 0
    already_done: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> int:
        return self.written + self.already_done

    def format(self) -> str:
        lines = [
            f"{self.dataset}: {len(self.subjects)} subjects, {self.sequences} sequences "
            f"({self.written} written, {self.already_done} already done), "
            f"{self.frames} frames, {self.audio_seconds:.1f} s of audio",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} sequences:")
            lines += [f"    {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def run_cli(convert: Callable[[], Summary]) -> int:
    """Run a conversion: print its summary; a UserError becomes one `error:` line and status 2."""
    try:
        summary = convert()
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished sequences are kept, run again to continue", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


def progress(items: list, desc: str):
    from tqdm import tqdm

    # disable=None hides the bar when stderr is not a terminal (logs, CI)
    return tqdm(items, desc=desc, unit="seq", disable=None, file=sys.stderr)


def require_file(path: Path, what: str, source: str | None = None) -> Path:
    if not path.is_file():
        hint = f": get it from {source}" if source else ""
        raise UserError(f"{what} not found: {path}{hint}")
    return path


def _load_pickle(path: Path, what: str):
    require_file(path, what, VOCASET_SOURCE)
    try:
        with open(path, "rb") as f:
            # the VOCASET pickles were written by Python 2
            return pickle.load(f, encoding="latin1")
    except Exception as exc:  # unpickling raises many types for corrupt input
        raise UserError(f"cannot read pickle {path}: {exc.__class__.__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------- VOCASET

def open_vertex_array(path: Path) -> np.ndarray:
    """data_verts.npy memory-mapped (it is ~7.4 GB) -> (rows, V, 3) view, nothing read yet."""
    require_file(path, "vertex array", VOCASET_SOURCE)
    return load_vertices(path, "vertex array")


def read_raw_audio(path: Path) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """raw_audio_fixed.pkl -> {(subject, sentence): (samples, sample_rate)}, structure checked."""
    raw = _load_pickle(path, "audio pickle")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must hold a dict {{subject: {{sentence: {{'audio', 'sample_rate'}}}}}}")
    out = {}
    for subject, sentences in raw.items():
        if not isinstance(sentences, dict):
            raise UserError(f"{path}: entry {subject!r} must be a dict {{sentence: {{...}}}}")
        for sentence, entry in sentences.items():
            where = f"{path}: entry [{subject!r}][{sentence!r}]"
            if not isinstance(entry, dict) or "audio" not in entry or "sample_rate" not in entry:
                raise UserError(f"{where} must be a dict with 'audio' and 'sample_rate'")
            samples = np.asarray(entry["audio"])
            rate = entry["sample_rate"]
            if samples.ndim not in (1, 2) or samples.size == 0 or samples.dtype.kind not in "iuf":
                raise UserError(f"{where} audio must be a non-empty numeric array, got "
                                f"{samples.dtype} {samples.shape}")
            if not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise UserError(f"{where} sample_rate must be a positive integer, got {rate!r}")
            out[(str(subject), str(sentence))] = (samples, int(rate))
    return out


def read_sequence_index(path: Path, rows: int) -> dict[tuple[str, str], list[int]]:
    """subj_seq_to_idx.pkl -> {(subject, sentence): rows of data_verts in frame-index order}."""
    raw = _load_pickle(path, "sequence index pickle")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} must hold a dict {{subject: {{sentence: {{frame: row}}}}}}")
    out = {}
    for subject, sentences in raw.items():
        if not isinstance(sentences, dict):
            raise UserError(f"{path}: entry {subject!r} must be a dict {{sentence: {{frame: row}}}}")
        for sentence, frames in sentences.items():
            where = f"{path}: entry [{subject!r}][{sentence!r}]"
            if not isinstance(frames, dict):
                raise UserError(f"{where} must be a dict {{frame index: row}}")
            try:
                pairs = sorted((int(frame), int(row)) for frame, row in frames.items())
            except (TypeError, ValueError) as exc:
                raise UserError(f"{where} holds a non-integer frame index or row") from exc
            order = [row for _, row in pairs]
            bad = [row for row in order if not 0 <= row < rows]
            if bad:
                raise UserError(f"{where} points to row {bad[0]}, but the vertex array has "
                                f"{rows} rows")
            out[(str(subject), str(sentence))] = order
    return out


def check_vocaset_templates(templates: Path, topology: Path, num_vertices: int) -> set[str]:
    """Both template files are needed by training; fail early, saying where to get them."""
    require_file(templates, "templates.pkl", VOCASET_SOURCE)
    require_file(topology, "topology mesh", FLAME_SAMPLE_SOURCE)
    subjects = load_templates(templates)
    for subject, verts in subjects.items():
        if len(verts) != num_vertices:
            raise UserError(f"{templates}: template of {subject!r} has {len(verts)} vertices, "
                            f"the vertex array has {num_vertices}")
    mesh_vertices, _ = read_mesh(topology)
    if len(mesh_vertices) != num_vertices:
        raise UserError(f"{topology} has {len(mesh_vertices)} vertices, the vertex array has "
                        f"{num_vertices}")
    return set(subjects)


def pair_sequences(audio_keys: Iterable, motion_keys: Iterable, summary: Summary) -> list:
    """Sequences with both audio and motion; the rest are recorded as skipped."""
    audio_keys, motion_keys = set(audio_keys), set(motion_keys)
    for key in sorted(audio_keys - motion_keys):
        summary.skipped.append(("_".join(key), "audio but no frames"))
    for key in sorted(motion_keys - audio_keys):
        summary.skipped.append(("_".join(key), "frames but no audio"))
    return sorted(audio_keys & motion_keys)


def prepare_vocaset(data_verts: Path, raw_audio: Path, seq_index: Path, templates: Path,
                    topology: Path, out_dir: Path) -> Summary:
    """VOCASET raw files -> out_dir/wav, out_dir/vertices_npy (all 60 fps frames kept)."""
    summary = Summary("VOCASET")
    verts = open_vertex_array(Path(data_verts))
    template_subjects = check_vocaset_templates(Path(templates), Path(topology), verts.shape[1])
    audio = read_raw_audio(Path(raw_audio))
    index = read_sequence_index(Path(seq_index), verts.shape[0])
    missing = sorted({subject for subject, _ in index} - template_subjects)
    if missing:
        raise UserError(f"{templates} has no template for subject {missing[0]!r}")
    for key, rows in list(index.items()):
        if not rows:
            summary.skipped.append(("_".join(key), "no frames listed in the sequence index"))
            del index[key]
            audio.pop(key, None)
    wav_dir, vertices_dir = Path(out_dir) / "wav", Path(out_dir) / "vertices_npy"
    for subject, sentence in progress(pair_sequences(audio, index, summary), "VOCASET"):
        name = f"{subject}_{sentence}"
        rows = index[(subject, sentence)]
        samples, rate = audio[(subject, sentence)]
        summary.subjects.add(subject)
        summary.frames += len(rows)
        summary.audio_seconds += len(samples) / rate
        vertices_path, wav_path = vertices_dir / f"{name}.npy", wav_dir / f"{name}.wav"
        if vertices_path.is_file() and wav_path.is_file():
            summary.already_done += 1
            continue
        if not vertices_path.is_file():
            # fancy indexing reads only these rows from the memory map
            frames = np.asarray(verts[np.asarray(rows)], dtype=np.float32)
            save_npy(vertices_path, frames.reshape(len(rows), -1))
        if not wav_path.is_file():
            save_wav(wav_path, samples, rate)
        summary.written += 1
    summary.notes.append("frames are the 60 fps captures; the loader keeps every second one")
    return summary


# -------------------------------------------------------------------------------------------- BIWI

def read_vl(path: Path) -> np.ndarray:
    """One BIWI frame: uint32 vertex count n, then n x 3 little-endian float32 -> (n, 3)."""
    data = path.read_bytes()
    if len(data) < 4:
        raise UserError(f"corrupt .vl file {path}: {len(data)} bytes, too short for its header")
    (count,) = struct.unpack_from("<I", data)
    expected = 4 + 12 * count
    if len(data) != expected:
        raise UserError(f"corrupt .vl file {path}: header says {count} vertices "
                        f"({expected} bytes), the file has {len(data)} bytes")
    return np.frombuffer(data, dtype="<f4", count=3 * count, offset=4).reshape(count, 3)


def normalise_biwi(vertices: np.ndarray, faces: np.ndarray, source: Path | str) -> np.ndarray:
    """Rotate by pi about x, centre on the mean vertex, scale to unit total surface area."""
    verts = np.asarray(vertices, dtype=np.float64) * np.array([1.0, -1.0, -1.0])
    verts -= verts.mean(axis=0)
    area = surface_area(verts, faces)
    if not np.isfinite(area) or area <= 0:
        raise UserError(f"{source}: mesh has surface area {area}, cannot normalise it")
    return (verts / np.sqrt(area)).astype(np.float32)


def frame_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise UserError(f"cannot order frame {path}: its name holds no frame number")
    return int(numbers[-1])


def sorted_frames(folder: Path) -> list[Path]:
    """The .vl files of a sequence ordered by the number in their names (frame_2 before frame_10)."""
    files = [p for p in folder.glob("*.vl") if not p.name.startswith(".")]
    numbered = sorted((frame_number(p), p.name, p) for p in files)
    for (a, _, first), (b, _, second) in zip(numbered, numbered[1:]):
        if a == b:
            raise UserError(f"frames {first} and {second} carry the same number {a}")
    return [p for _, _, p in numbered]


_SEQUENCE = re.compile(r"e(\d\d)")
_AUDIO_NAMES = [   # relative to the audio folder; "_cut" takes are trimmed to the tracked frames
    re.compile(r"(?P<subject>[^/_]+)_(?P<sequence>e\d\d)(?P<cut>_cut)?\.wav"),
    re.compile(r"(?P<subject>[^/_]+)/(?P=subject)_(?P<sequence>e\d\d)(?P<cut>_cut)?\.wav"),
    re.compile(r"(?P<subject>[^/_]+)/(?P<sequence>e\d\d)(?P<cut>_cut)?\.wav"),
]


def _emotional(name: str) -> bool:
    match = _SEQUENCE.fullmatch(name)
    return bool(match) and int(match.group(1)) in BIWI_SENTENCES


def find_biwi_audio(audio_dir: Path) -> dict[tuple[str, str], Path]:
    """{(subject, eNN): wav} from `<subj>_<eNN>[_cut].wav`, `<subj>/<subj>_<eNN>[_cut].wav` or
    `<subj>/<eNN>[_cut].wav`; the trimmed `_cut` take wins when both exist."""
    found: dict[tuple[str, str], tuple[bool, Path]] = {}
    for path in sorted(audio_dir.rglob("*.wav")):
        relative = path.relative_to(audio_dir).as_posix()
        for pattern in _AUDIO_NAMES:
            match = pattern.fullmatch(relative)
            if match and _emotional(match["sequence"]):
                key = (match["subject"], match["sequence"])
                cut = bool(match["cut"])
                if key not in found or (cut and not found[key][0]):
                    found[key] = (cut, path)
                break
    return {key: path for key, (_, path) in found.items()}


def find_biwi_frames(faces_dir: Path, summary: Summary) -> tuple[dict, dict]:
    """-> ({(subject, eNN): folder of .vl frames}, {(subject, eNN): archive not yet extracted})."""
    if not faces_dir.is_dir():
        raise UserError(f"faces folder not found: {faces_dir}: extract the faces archives of "
                        f"{BIWI_SOURCE} there")
    folders, packed, neutral = {}, {}, 0
    for subject_dir in sorted(p for p in faces_dir.iterdir() if p.is_dir() and p.name[0] != "."):
        for entry in sorted(subject_dir.iterdir()):
            stem = entry.name.split(".")[0]
            if entry.is_dir() and _emotional(entry.name):
                folders[(subject_dir.name, entry.name)] = entry
            elif entry.is_dir() and re.fullmatch(r"\d\d", entry.name):
                neutral += 1
            elif entry.is_file() and _emotional(stem) and not (subject_dir / stem).is_dir():
                packed.setdefault((subject_dir.name, stem), entry)
    if neutral:
        summary.notes.append(f"ignored {neutral} neutral sequences (only e01-e40 are used)")
    if not folders:
        raise UserError(f"no sequence folders <subject>/eNN holding .vl frames in {faces_dir}")
    return folders, packed


def read_biwi_scans(scans_dir: Path, subjects: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{subject: (normalised template (V, 3), faces)} from rigid_scans/<subject>.obj."""
    out = {}
    for subject in sorted(subjects):
        path = require_file(scans_dir / f"{subject}.obj", "neutral scan", BIWI_SOURCE)
        verts, faces = read_mesh(path)
        if len(faces) == 0:
            raise UserError(f"neutral scan {path} has no faces; they are needed for the surface area")
        if faces.max() >= len(verts):
            raise UserError(f"neutral scan {path} has faces indexing missing vertices")
        first = next(iter(out.items()), None)
        if first and len(first[1][0]) != len(verts):
            raise UserError(f"neutral scan {path} has {len(verts)} vertices, the scan of "
                            f"{first[0]} has {len(first[1][0])}: all subjects must share one topology")
        out[subject] = (normalise_biwi(verts, faces, path), faces)
    return out


def read_biwi_sequence(folder: Path, faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Every .vl frame of a sequence, normalised -> (frames, V*3) float32."""
    files = sorted_frames(folder)
    out = np.empty((len(files), num_vertices * 3), dtype=np.float32)
    for i, path in enumerate(files):
        verts = read_vl(path)
        if len(verts) != num_vertices:
            raise UserError(f"{path} has {len(verts)} vertices, the subject's template has "
                            f"{num_vertices}")
        out[i] = normalise_biwi(verts, faces, path).reshape(-1)
    return out


def _audio_seconds(path: Path) -> float:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # soundfile raises its own and OS error types
        raise UserError(f"cannot read audio {path}: {exc}") from exc
    if info.frames == 0:
        raise UserError(f"audio file holds no samples: {path}")
    return info.frames / info.samplerate


def prepare_biwi(faces_dir: Path, scans_dir: Path, audio_dir: Path, out_dir: Path,
                 topology_subject: str | None = None, topology_name: str = "BIWI.ply") -> Summary:
    """BIWI raw files -> out_dir/{wav, vertices_npy, templates.pkl, templates/<topology_name>}.

    templates.pkl and the topology mesh are rebuilt on every run (seconds); sequences whose
    outputs exist are skipped.
    """
    summary = Summary("BIWI")
    faces_dir, scans_dir, out_dir = Path(faces_dir), Path(scans_dir), Path(out_dir)
    frames, packed = find_biwi_frames(faces_dir, summary)
    if not Path(audio_dir).is_dir():
        raise UserError(f"audio folder not found: {audio_dir}: place the wav files of "
                        f"{BIWI_SOURCE} there or pass --audio")
    audio = find_biwi_audio(Path(audio_dir))
    for key, archive in sorted(packed.items()):
        summary.skipped.append(("_".join(key), f"frames still packed in {archive}: extract it"))
        audio.pop(key, None)
    scans = read_biwi_scans(scans_dir, {subject for subject, _ in frames})
    topology_subject = topology_subject or min(scans)
    if topology_subject not in scans:
        raise UserError(f"topology subject {topology_subject!r} has no sequences in {faces_dir}")
    save_pickle(out_dir / "templates.pkl", {s: verts for s, (verts, _) in scans.items()})
    write_mesh(out_dir / "templates" / topology_name, *scans[topology_subject])

    wav_dir, vertices_dir = out_dir / "wav", out_dir / "vertices_npy"
    for subject, sequence in progress(pair_sequences(audio, frames, summary), "BIWI"):
        name = f"{subject}_{sequence}"
        template, faces = scans[subject]
        count = len(sorted_frames(frames[(subject, sequence)]))
        if count == 0:
            summary.skipped.append((name, "audio but no frames (empty frame folder)"))
            continue
        source_wav = audio[(subject, sequence)]
        summary.subjects.add(subject)
        summary.frames += count
        summary.audio_seconds += _audio_seconds(source_wav)
        vertices_path, wav_path = vertices_dir / f"{name}.npy", wav_dir / f"{name}.wav"
        if vertices_path.is_file() and wav_path.is_file():
            summary.already_done += 1
            continue
        if not vertices_path.is_file():
            save_npy(vertices_path, read_biwi_sequence(frames[(subject, sequence)], faces,
                                                       len(template)))
        if not wav_path.is_file():
            with atomic_path(wav_path) as tmp:
                shutil.copyfile(source_wav, tmp)
        summary.written += 1
    summary.notes.append(f"templates.pkl ({len(scans)} subjects) and templates/{topology_name} "
                         f"(subject {topology_subject}) rebuilt from {scans_dir}")
    return summary
