"""Dataset conversion (VOCASET/process_voca_data.py, BIWI/process_biwi_data.py) and check_dataset.

Fixtures are written in the exact raw formats: memory-mappable data_verts.npy, protocol-2 pickles
read with latin1, .vl frames packed byte by byte, .obj scans with texture coordinates.
"""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import shared_file

from ptalker.dataset_check import check_dataset, format_report
from ptalker.mesh import load_templates, read_mesh, write_mesh
from ptalker.prepare import prepare_biwi, prepare_vocaset

ROOT = Path(__file__).resolve().parent.parent
VOCA_SCRIPT = ROOT / "VOCASET" / "process_voca_data.py"
BIWI_SCRIPT = ROOT / "BIWI" / "process_biwi_data.py"

# a 4 x 4 vertex sheet with a bump: small, but a real triangle mesh with non-zero area
GRID_N = 4
GRID_FACES = np.array([f for r in range(GRID_N - 1) for c in range(GRID_N - 1) for f in (
    (r * GRID_N + c, r * GRID_N + c + 1, (r + 1) * GRID_N + c),
    (r * GRID_N + c + 1, (r + 1) * GRID_N + c + 1, (r + 1) * GRID_N + c))], dtype=np.int64)


def grid_vertices() -> np.ndarray:
    x, y = np.meshgrid(np.arange(GRID_N, dtype=np.float64), np.arange(GRID_N, dtype=np.float64))
    z = 0.3 * np.sin(x) * np.cos(y)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=script.parent, timeout=120)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------ VOCASET fixtures

VOCA_V = 10
VOCA_RATE = 22000
SUBJ_A, SUBJ_B = "FaceTalk_170000_00001_TA", "FaceTalk_170000_00002_TA"


def make_raw_vocaset(folder: Path) -> dict:
    """A 30-row VOCASET download with 10-vertex meshes. Returns what the outputs must hold."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    verts = rng.normal(size=(30, VOCA_V, 3)).astype(np.float32)
    np.save(folder / "data_verts.npy", verts)
    index = {
        SUBJ_A: {
            "sentence01": {2: 5, 0: 3, 1: 9},                 # unordered keys, scattered rows
            "sentence02": {i: 10 + i for i in range(4)},
            "sentence03": {0: 0, 1: 1},                        # frames but no audio
        },
        SUBJ_B: {"sentence01": {i: 20 + i for i in range(5)}},
    }
    audio = {
        SUBJ_A: {s: {"audio": rng.integers(-3000, 3000, n, dtype=np.int16), "sample_rate": VOCA_RATE}
                 for s, n in (("sentence01", 2200), ("sentence02", 4400))},
        SUBJ_B: {s: {"audio": rng.integers(-3000, 3000, n, dtype=np.int16), "sample_rate": VOCA_RATE}
                 for s, n in (("sentence01", 3300), ("sentence02", 1100))},   # sentence02: no frames
    }
    templates = {SUBJ_A: verts[0], SUBJ_B: verts[1]}
    for name, obj in (("subj_seq_to_idx.pkl", index), ("raw_audio_fixed.pkl", audio),
                      ("templates.pkl", templates)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    write_mesh(folder / "templates" / "FLAME_sample.ply", verts[0], [[0, 1, 2], [2, 3, 4], [5, 6, 7]])
    expected = {
        f"{SUBJ_A}_sentence01": (verts[[3, 9, 5]], audio[SUBJ_A]["sentence01"]["audio"]),
        f"{SUBJ_A}_sentence02": (verts[10:14], audio[SUBJ_A]["sentence02"]["audio"]),
        f"{SUBJ_B}_sentence01": (verts[20:25], audio[SUBJ_B]["sentence01"]["audio"]),
    }
    return expected


def test_vocaset_outputs_value_by_value(tmp_path):
    expected = make_raw_vocaset(tmp_path)
    result = run_script(VOCA_SCRIPT, "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (tmp_path / "vertices_npy").iterdir()) == sorted(expected)
    assert sorted(p.stem for p in (tmp_path / "wav").iterdir()) == sorted(expected)
    for name, (frames, samples) in expected.items():
        got = np.load(tmp_path / "vertices_npy" / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == (len(frames), VOCA_V * 3)
        np.testing.assert_array_equal(got, frames.reshape(len(frames), -1))
        speech, rate = soundfile.read(tmp_path / "wav" / f"{name}.wav", dtype="int16")
        assert rate == VOCA_RATE
        np.testing.assert_array_equal(speech, samples)
    out = result.stdout
    assert "2 subjects, 3 sequences (3 written, 0 already done), 12 frames, 0.5 s of audio" in out
    assert f"{SUBJ_A}_sentence03: frames but no audio" in out
    assert f"{SUBJ_B}_sentence02: audio but no frames" in out


def test_vocaset_rerun_skips_finished_and_completes_partial(tmp_path):
    make_raw_vocaset(tmp_path)
    assert run_script(VOCA_SCRIPT, "--root", str(tmp_path)).returncode == 0
    done = tmp_path / "vertices_npy" / f"{SUBJ_A}_sentence02.npy"
    stamp = done.stat().st_mtime_ns
    (tmp_path / "wav" / f"{SUBJ_B}_sentence01.wav").unlink()
    summary = prepare_vocaset(tmp_path / "data_verts.npy", tmp_path / "raw_audio_fixed.pkl",
                              tmp_path / "subj_seq_to_idx.pkl", tmp_path / "templates.pkl",
                              tmp_path / "templates" / "FLAME_sample.ply", tmp_path)
    assert (summary.written, summary.already_done, summary.frames) == (1, 2, 12)
    assert done.stat().st_mtime_ns == stamp
    assert (tmp_path / "wav" / f"{SUBJ_B}_sentence01.wav").is_file()


def test_vocaset_vertex_array_is_memory_mapped(tmp_path, monkeypatch):
    make_raw_vocaset(tmp_path)
    calls = []
    real_load = np.load

    def recording_load(path, *args, **kwargs):
        calls.append((Path(path).name, kwargs.get("mmap_mode")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", recording_load)
    prepare_vocaset(tmp_path / "data_verts.npy", tmp_path / "raw_audio_fixed.pkl",
                    tmp_path / "subj_seq_to_idx.pkl", tmp_path / "templates.pkl",
                    tmp_path / "templates" / "FLAME_sample.ply", tmp_path / "out")
    assert ("data_verts.npy", "r") in calls
    assert all(mode == "r" for name, mode in calls if name == "data_verts.npy")


def _break_audio_structure(folder: Path) -> None:
    with open(folder / "raw_audio_fixed.pkl", "wb") as f:
        pickle.dump({SUBJ_A: {"sentence01": {"audio": np.zeros(10, np.int16)}}}, f, protocol=2)


def _row_out_of_range(folder: Path) -> None:
    with open(folder / "subj_seq_to_idx.pkl", "wb") as f:
        pickle.dump({SUBJ_A: {"sentence01": {0: 1, 1: 99}}}, f, protocol=2)


def _template_size_mismatch(folder: Path) -> None:
    with open(folder / "templates.pkl", "wb") as f:
        pickle.dump({SUBJ_A: np.zeros((7, 3)), SUBJ_B: np.zeros((7, 3))}, f, protocol=2)


@pytest.mark.parametrize("breakage, fragments", [
    (lambda d: (d / "data_verts.npy").unlink(), ["vertex array not found", "data_verts.npy"]),
    (lambda d: (d / "templates.pkl").unlink(), ["templates.pkl not found", "voca.is.tue.mpg.de"]),
    (lambda d: (d / "templates" / "FLAME_sample.ply").unlink(),
     ["FLAME_sample.ply", "github.com/TimoBolkart/voca"]),
    (lambda d: (d / "subj_seq_to_idx.pkl").write_bytes(b"not a pickle"),
     ["cannot read pickle", "subj_seq_to_idx.pkl"]),
    (lambda d: (d / "data_verts.npy").write_bytes(b"\x93NUMPY garbage"), ["cannot read", "data_verts.npy"]),
    (_break_audio_structure, ["raw_audio_fixed.pkl", "'sample_rate'"]),
    (_row_out_of_range, ["subj_seq_to_idx.pkl", "row 99", "30 rows"]),
    (_template_size_mismatch, ["templates.pkl", "7 vertices", "10"]),
], ids=["no-verts", "no-templates", "no-topology", "bad-index-pickle", "bad-npy",
        "audio-structure", "row-range", "template-size"])
def test_vocaset_bad_input_is_one_line_error(tmp_path, breakage, fragments):
    make_raw_vocaset(tmp_path)
    breakage(tmp_path)
    result = run_script(VOCA_SCRIPT, "--root", str(tmp_path))
    assert_user_error(result, *fragments)
    assert not (tmp_path / "vertices_npy").exists()


# --------------------------------------------------------------------------------- BIWI fixtures

BIWI_FPS = 25


def write_vl(path: Path, vertices: np.ndarray) -> None:
    """A BIWI frame: uint32 count, then x y z float32 per vertex, little-endian."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<I", len(vertices))
    for x, y, z in vertices:
        data += struct.pack("<fff", x, y, z)
    path.write_bytes(data)


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """An .obj scan like BIWI's: vertices, texture coordinates indexed differently, faces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.17g} {y:.17g} {z:.17g}" for x, y, z in vertices]
    lines += [f"vt {i / len(vertices):.4f} 0.5" for i in range(len(vertices))]
    lines += ["f " + " ".join(f"{a + 1}/{len(vertices) - a}" for a in face) for face in faces]
    path.write_text("\n".join(lines) + "\n")


def write_tone(path: Path, seconds: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def reference_normalise(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The BIWI normalisation written independently: Heron's formula for the triangle areas."""
    v = np.asarray(vertices, dtype=np.float64).copy()
    v[:, 1:] *= -1
    v -= v.mean(axis=0)
    area = 0.0
    for a, b, c in faces:
        la, lb, lc = (np.linalg.norm(v[a] - v[b]), np.linalg.norm(v[b] - v[c]),
                      np.linalg.norm(v[c] - v[a]))
        s = (la + lb + lc) / 2
        area += np.sqrt(max(s * (s - la) * (s - lb) * (s - lc), 0.0))
    return v / np.sqrt(area)


def make_raw_biwi(root: Path, subjects=("F2", "M3"), sentences=(1, 2), frames: int = 12,
                  audio_pattern: str = "audio/{subject}_{sequence}_cut.wav") -> dict:
    """A raw BIWI download of GRID_N x GRID_N vertex meshes under `root`.

    Frames are named frame_1.vl ... frame_<frames>.vl (unpadded, so lexical order is wrong).
    Returns {"templates": {subject: raw (V, 3)}, "frames": {(subject, eNN): raw (T, V, 3)}}.
    """
    rng = np.random.default_rng(1)
    base = grid_vertices()
    raw = {"templates": {}, "frames": {}}
    for k, subject in enumerate(subjects):
        template = base * (1.0 + 0.1 * k) + np.array([100.0, -50.0, 800.0])
        raw["templates"][subject] = template
        write_obj(root / "rigid_scans" / f"{subject}.obj", template, GRID_FACES)
        for sentence in sentences:
            sequence = f"e{sentence:02d}"
            motion = rng.normal(scale=0.05, size=(frames, len(base), 3))
            seq_frames = (template + motion).astype(np.float32)
            raw["frames"][(subject, sequence)] = seq_frames
            for i, verts in enumerate(seq_frames, start=1):
                write_vl(root / "faces" / subject / sequence / f"frame_{i}.vl", verts)
            write_tone(root / audio_pattern.format(subject=subject, sequence=sequence), frames / BIWI_FPS)
    return raw


def build_prepared_biwi(root: Path, subjects=("F2", "M3"), sentences=(1, 2, 33, 37),
                        frames: int = 10, dataset_name: str = "biwi_fixture") -> Path:
    """A BIWI-like dataset in the standard layout, made by the real converter from raw fixtures.

    Raw files go to root/raw, the dataset to root/<dataset_name> (wav/, vertices_npy/,
    templates.pkl, templates/BIWI.ply); GRID_N**2 vertices, 25 fps, 16 kHz audio of matching length.
    The default sentences fall in BIWI's train (1-32), val (33-36) and test (37-40) ranges.
    Returns the dataset folder.
    """
    raw_dir, out_dir = root / "raw", root / dataset_name
    make_raw_biwi(raw_dir, subjects=subjects, sentences=sentences, frames=frames)
    prepare_biwi(raw_dir / "faces", raw_dir / "rigid_scans", raw_dir / "audio", out_dir)
    return out_dir


# unit tetrahedron: three right triangles of area 1/2 and one equilateral of side sqrt(2)
TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
TETRA_FACES = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
# by hand: rotate (x, -y, -z), subtract the mean (1/4, -1/4, -1/4), divide by sqrt(3/2 + sqrt(3)/2)
TETRA_NORMALISED = np.array([[-0.25, 0.25, 0.25], [0.75, 0.25, 0.25],
                             [-0.25, -0.75, 0.25], [-0.25, 0.25, -0.75]]) / np.sqrt(1.5 + np.sqrt(3) / 2)
# stretched along x: areas 1 + 1 + 1/2 + 3/2 = 4; rotated mean (1/2, -1/4, -1/4); divide by 2
STRETCHED = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
STRETCHED_NORMALISED = np.array([[-0.25, 0.125, 0.125], [0.75, 0.125, 0.125],
                                 [-0.25, -0.375, 0.125], [-0.25, 0.125, -0.375]])


def test_biwi_normalisation_matches_hand_computation(tmp_path):
    write_obj(tmp_path / "rigid_scans" / "F1.obj", TETRA, TETRA_FACES)
    sequence = tmp_path / "faces" / "F1" / "e05"
    write_vl(sequence / "frame_1.vl", 2 * TETRA + [5, -3, 7])   # scale and shift normalise away
    write_vl(sequence / "frame_2.vl", STRETCHED + [1, 1, 1])
    write_vl(sequence / "frame_10.vl", 3 * TETRA)               # lexically before frame_2
    write_tone(tmp_path / "audio" / "F1_e05.wav", 3 / BIWI_FPS)
    result = run_script(BIWI_SCRIPT, "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr

    got = np.load(tmp_path / "vertices_npy" / "F1_e05.npy")
    assert got.dtype == np.float32 and got.shape == (3, 12)
    expected = np.stack([TETRA_NORMALISED, STRETCHED_NORMALISED, TETRA_NORMALISED]).reshape(3, 12)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    templates = load_templates(tmp_path / "templates.pkl")
    assert list(templates) == ["F1"]
    np.testing.assert_allclose(templates["F1"], TETRA_NORMALISED, atol=1e-6)
    verts, faces = read_mesh(tmp_path / "templates" / "BIWI.ply")
    np.testing.assert_allclose(verts, TETRA_NORMALISED, atol=1e-6)
    np.testing.assert_array_equal(faces, TETRA_FACES)
    assert "1 subjects, 1 sequences (1 written, 0 already done), 3 frames, 0.1 s of audio" in result.stdout


def test_biwi_outputs_value_by_value(tmp_path):
    raw = make_raw_biwi(tmp_path, subjects=("M3", "F2"), sentences=(1, 2), frames=12)
    # a neutral take and the uncut audio beside the cut take must not be used
    write_vl(tmp_path / "faces" / "F2" / "01" / "frame_1.vl", raw["templates"]["F2"])
    write_tone(tmp_path / "audio" / "F2_e01.wav", 5.0)
    # audio in a subject folder is found too; a sequence without audio and audio without frames
    (tmp_path / "audio" / "M3_e02_cut.wav").rename(tmp_path / "audio" / "M3_e02.wav")
    os.makedirs(tmp_path / "audio" / "M3")
    (tmp_path / "audio" / "M3_e02.wav").rename(tmp_path / "audio" / "M3" / "M3_e02.wav")
    (tmp_path / "audio" / "F2_e02_cut.wav").unlink()
    write_tone(tmp_path / "audio" / "F2_e03_cut.wav", 0.4)

    result = run_script(BIWI_SCRIPT, "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = ["F2_e01", "M3_e01", "M3_e02"]
    assert sorted(p.stem for p in (tmp_path / "vertices_npy").iterdir()) == names
    assert sorted(p.stem for p in (tmp_path / "wav").iterdir()) == names
    for name in names:
        subject, sequence = name.split("_")
        got = np.load(tmp_path / "vertices_npy" / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == (12, GRID_N * GRID_N * 3)
        expected = np.stack([reference_normalise(f, GRID_FACES) for f in raw["frames"][(subject, sequence)]])
        np.testing.assert_allclose(got, expected.reshape(12, -1), atol=2e-6)
        assert soundfile.info(tmp_path / "wav" / f"{name}.wav").frames == 12 * 16000 // BIWI_FPS
    templates = load_templates(tmp_path / "templates.pkl")
    assert sorted(templates) == ["F2", "M3"]
    for subject, template in raw["templates"].items():
        # scans are read as float32, like the .vl frames
        expected = reference_normalise(template.astype(np.float32), GRID_FACES)
        np.testing.assert_allclose(templates[subject], expected, atol=2e-6)
    verts, faces = read_mesh(tmp_path / "templates" / "BIWI.ply")   # first subject: F2
    np.testing.assert_allclose(verts, templates["F2"], atol=1e-6)
    np.testing.assert_array_equal(faces, GRID_FACES)
    out = result.stdout
    assert "2 subjects, 3 sequences (3 written, 0 already done), 36 frames, 1.4 s of audio" in out
    assert "F2_e02: frames but no audio" in out
    assert "F2_e03: audio but no frames" in out
    assert "ignored 1 neutral sequences" in out


def test_biwi_rerun_skips_finished_sequences(tmp_path):
    # audio already in wav/ (no audio/ folder): read from there, nothing to copy
    make_raw_biwi(tmp_path, subjects=("F2",), sentences=(1, 2), frames=3,
                  audio_pattern="wav/{subject}_{sequence}.wav")
    first = run_script(BIWI_SCRIPT, "--root", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "(2 written, 0 already done)" in first.stdout
    done = tmp_path / "vertices_npy" / "F2_e01.npy"
    stamp = done.stat().st_mtime_ns
    (tmp_path / "vertices_npy" / "F2_e02.npy").unlink()
    result = run_script(BIWI_SCRIPT, "--root", str(tmp_path), "--topology-subject", "F2",
                        "--topology-name", "face.ply")
    assert result.returncode == 0, result.stderr
    assert "(1 written, 1 already done)" in result.stdout
    assert done.stat().st_mtime_ns == stamp
    assert (tmp_path / "vertices_npy" / "F2_e02.npy").is_file()
    assert (tmp_path / "templates" / "face.ply").is_file()


def _truncate_frame(root: Path) -> None:
    frame = root / "faces" / "F2" / "e01" / "frame_2.vl"
    frame.write_bytes(frame.read_bytes()[:-5])


def _wrong_vertex_count(root: Path) -> None:
    write_vl(root / "faces" / "F2" / "e01" / "frame_2.vl", grid_vertices()[:7])


def _second_subject_other_topology(root: Path) -> None:
    write_obj(root / "rigid_scans" / "M3.obj", TETRA, TETRA_FACES)
    write_vl(root / "faces" / "M3" / "e01" / "frame_1.vl", TETRA)


@pytest.mark.parametrize("breakage, fragments", [
    (_truncate_frame, ["corrupt .vl file", "frame_2.vl", "16 vertices (196 bytes)", "191 bytes"]),
    (lambda r: (r / "faces" / "F2" / "e01" / "frame_3.vl").write_bytes(b"\x01\x00"),
     ["corrupt .vl file", "frame_3.vl", "too short"]),
    (_wrong_vertex_count, ["frame_2.vl has 7 vertices", "template has 16"]),
    (lambda r: (r / "rigid_scans" / "F2.obj").unlink(), ["neutral scan not found", "F2.obj"]),
    (lambda r: (r / "audio" / "F2_e01_cut.wav").write_bytes(b"RIFF junk"),
     ["cannot read audio", "F2_e01_cut.wav"]),
    (lambda r: (r / "faces").rename(r / "elsewhere"), ["faces folder not found"]),
    (_second_subject_other_topology, ["M3.obj has 4 vertices", "F2 has 16"]),
], ids=["truncated-vl", "short-vl", "vertex-count", "no-scan", "bad-wav", "no-faces", "scan-sizes"])
def test_biwi_bad_input_is_one_line_error(tmp_path, breakage, fragments):
    make_raw_biwi(tmp_path, subjects=("F2",), sentences=(1,), frames=3)
    breakage(tmp_path)
    result = run_script(BIWI_SCRIPT, "--root", str(tmp_path))
    assert_user_error(result, *fragments)
    assert not (tmp_path / "vertices_npy").exists()


def test_biwi_conversion_recovers_the_published_topology_mesh(tmp_path):
    """BIWI.ply is a normalised scan (zero mean, unit area): undo that, convert, get it back."""
    mesh, faces = read_mesh(shared_file("biwi/BIWI.ply"))
    raw = mesh.astype(np.float64) * [120.0, -120.0, -120.0] + [3.0, 20.0, -900.0]
    write_obj(tmp_path / "rigid_scans" / "F1.obj", raw, faces)
    write_vl(tmp_path / "faces" / "F1" / "e37" / "frame_001.vl", raw)
    write_tone(tmp_path / "audio" / "F1_e37_cut.wav", 1 / BIWI_FPS)
    prepare_biwi(tmp_path / "faces", tmp_path / "rigid_scans", tmp_path / "audio", tmp_path)
    frames = np.load(tmp_path / "vertices_npy" / "F1_e37.npy")
    assert frames.shape == (1, 70110)
    np.testing.assert_allclose(frames[0].reshape(-1, 3), mesh, atol=1e-5)
    np.testing.assert_allclose(load_templates(tmp_path / "templates.pkl")["F1"], mesh, atol=1e-5)


# ----------------------------------------------------------------------------------- check_dataset

def test_check_dataset_on_a_prepared_folder(tmp_path):
    dataset = build_prepared_biwi(tmp_path, subjects=("F2", "M3"), sentences=(1, 33), frames=10)
    report = check_dataset(dataset, vertice_dim=GRID_N * GRID_N * 3)
    assert report.ok, report.problems
    assert report.subjects == ["F2", "M3"] and report.num_sequences == 4
    assert report.frames == 40
    assert report.audio_seconds == pytest.approx(1.6)
    assert report.template_vertices == GRID_N * GRID_N
    assert report.topology_mesh.name == "BIWI.ply" and report.topology_faces == len(GRID_FACES)
    text = format_report(report)
    assert "subjects:   2 (F2 2, M3 2)" in text and "1.6 s" in text and text.endswith("OK")


def test_check_dataset_lists_every_problem(tmp_path):
    dataset = build_prepared_biwi(tmp_path, subjects=("F2",), sentences=(1, 2, 3, 4), frames=4)
    (dataset / "vertices_npy" / "F2_e01.npy").unlink()
    (dataset / "wav" / "F2_e02.wav").unlink()
    np.save(dataset / "vertices_npy" / "F2_e03.npy", np.zeros((4, 6), np.float32))
    (dataset / "vertices_npy" / "F2_e04.npy").write_bytes(b"garbage")
    (dataset / "templates" / "BIWI.ply").unlink()
    (dataset / "vertices_npy" / ".F2_e05.npy.123.tmp.npy").write_bytes(b"unfinished write")
    report = check_dataset(dataset)
    text = "\n".join(report.problems)
    assert len(report.problems) == 5, text
    assert "F2_e01.wav has no vertices file" in text
    assert "F2_e02.npy has no audio file" in text
    assert "F2_e03.npy has 6 values per frame, the templates need 48" in text
    assert "cannot read" in text and "F2_e04.npy" in text
    assert "no topology mesh" in text
    assert "5 problems:" in format_report(report)

    (dataset / "templates.pkl").unlink()
    report = check_dataset(dataset, vertice_dim=70110)
    assert any("templates.pkl is missing" in p for p in report.problems)
    assert any("F2_e03.npy has 6 values per frame" in p for p in report.problems)
    assert check_dataset(tmp_path / "nowhere").problems == [f"dataset folder not found: {tmp_path / 'nowhere'}"]


def test_main_trains_on_a_prepared_biwi_dataset(tmp_path, tiny_wav2vec2):
    dataset = build_prepared_biwi(tmp_path)
    width = np.load(next((dataset / "vertices_npy").glob("*.npy"))).shape[1]
    (dataset / "regions").mkdir()
    (dataset / "regions" / "lve.txt").write_text("0, 1, 2")   # CodeTalker's file, placed by the user
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--dataset", str(dataset), "--vertice_dim", str(width),
         "--period", "25", "--fps", "25", "--train_subjects", "F2 M3", "--val_subjects", "F2 M3",
         "--test_subjects", "F2 M3", "--train_sentences", "1-32", "--val_sentences", "33-36",
         "--test_sentences", "37-40", "--max_epoch", "1", "--audio_model", str(tiny_wav2vec2),
         "--feature_dim", "16", "--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1",
         "--style_dim", "16", "--gat_dim", "4"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    predictions = sorted(p.name for p in (dataset / "result").glob("*.npy"))
    assert predictions == ["F2_e37_condition_F2.npy", "M3_e37_condition_M3.npy"]
    assert np.load(dataset / "result" / predictions[0]).shape[1] == width
