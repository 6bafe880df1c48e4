"""Headless rendering and mp4 writing: real templates, a tiny mesh, the render.py command line."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile
import trimesh

from conftest import ROOT, shared_file
from ptalker.errors import UserError
from ptalker.mesh import read_mesh, write_mesh
from ptalker.gl_context import select_backend
from ptalker.render_sequence import render_sequence
from ptalker.renderer import BACKGROUND, MeshRenderer

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
BACKGROUND_RGB = np.array([round(255 * c) for c in BACKGROUND])


def tiny_mesh() -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=1)
    return np.asarray(sphere.vertices, np.float32) * [0.8, 1.0, 0.6], np.asarray(sphere.faces)


def foreground(image: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(int) - BACKGROUND_RGB).sum(axis=2) > 30


def assert_centred_face(image: np.ndarray, min_fraction: float) -> None:
    mask = foreground(image)
    assert mask.mean() > min_fraction, "frame is (nearly) blank"
    assert image[mask].std() > 5, "no shading"
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    assert abs(rows.mean() / height - 0.5) < 0.12 and abs(cols.mean() / width - 0.5) < 0.08


def video_info(path) -> tuple[int, float, tuple[int, int], float | None]:
    """(frames, fps, (width, height), audio seconds or None) of an mp4, via the ffmpeg binary."""
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    header = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    video = re.search(r"Stream.*Video: h264.*?, (\d+)x(\d+).*?, ([\d.]+) fps", header)
    assert video, header
    audio = None
    if re.search(r"Stream.*Audio: aac", header):
        pcm = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a", "-f", "s16le", "-ac", "1",
                              "-ar", "16000", "-"], capture_output=True, check=True).stdout
        audio = len(pcm) / 2 / 16000
    return frames, float(video.group(3)), (int(video.group(1)), int(video.group(2))), audio


def first_frame(path, size: tuple[int, int]) -> np.ndarray:
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3)


def opening(template: np.ndarray, frames: int) -> np.ndarray:
    """The template with its lower part moving down and up, (T, V, 3)."""
    lo, hi = template.min(0), template.max(0)
    weight = np.clip((lo[1] + (hi[1] - lo[1]) / 3 - template[:, 1]) / (hi[1] - lo[1]), 0, 1)[:, None]
    amount = 0.1 * (hi[1] - lo[1]) * np.sin(np.linspace(0, np.pi, frames))[:, None, None]
    return (template - amount * weight * [0, 1, 0]).astype(np.float32)


def test_backend_is_found():
    assert select_backend() in ("egl", "osmesa")


@pytest.mark.parametrize("mesh", ["flame/FLAME_sample.ply", "biwi/BIWI.ply", "mediapipe/canonical_face_model.obj"])
def test_real_templates_render_centred(mesh):
    vertices, faces = read_mesh(shared_file(mesh))
    with MeshRenderer(faces, vertices, (320, 240)) as renderer:
        image = renderer.render([vertices])
        moved = renderer.render([opening(vertices, 3)[1]])
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert_centred_face(image, 0.15)
    assert (moved != image).any()


def test_tiny_mesh_and_side_by_side_panels():
    vertices, faces = tiny_mesh()
    with MeshRenderer(faces, vertices, (64, 64), panels=2) as renderer:
        image = renderer.render([vertices, vertices + [0, 0, 0.2]], [None, np.tile([1.0, 0, 0], (len(vertices), 1))])
    left, right = image[:, :64], image[:, 64:]
    assert_centred_face(left, 0.2)
    assert_centred_face(right, 0.2)
    assert (right[foreground(right)][:, 0] > right[foreground(right)][:, 1] + 40).mean() > 0.8  # red
    assert np.abs(left[foreground(left)][:, 0].astype(int) - left[foreground(left)][:, 1]).max() < 8  # grey
    with MeshRenderer(faces[:, ::-1], vertices, (64, 64)) as renderer:  # opposite winding: same look
        assert np.abs(renderer.render([vertices]).astype(int) - left).max() <= 1


def test_osmesa_backend_renders():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, trimesh;"
            "from ptalker.renderer import MeshRenderer;"
            "s = trimesh.creation.icosphere(subdivisions=1);"
            "r = MeshRenderer(s.faces, s.vertices, (32, 32)); print(int((r.render([s.vertices]) < 200).sum()))")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYOPENGL_PLATFORM": "osmesa"})
    if "OSMesa" in run.stderr and "install" in run.stderr:
        pytest.skip("OSMesa (libosmesa6) not installed")
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) > 100


def test_mp4_frames_fps_and_exact_audio(tmp_path):
    vertices, faces = read_mesh(shared_file("flame/FLAME_sample.ply"))
    wav = shared_file("speech/arctic_a0007.wav")  # 4 s
    short = render_sequence(opening(vertices, 20), faces, tmp_path / "short.mp4", 25, audio_path=wav,
                            resolution=(96, 96), progress=False)
    assert video_info(short) == (20, 25.0, (96, 96), pytest.approx(0.8, abs=0.003))
    assert_centred_face(first_frame(short, (96, 96)), 0.1)
    # longer than the speech: the audio track is padded with silence to the video length
    long = render_sequence(opening(vertices, 135), faces, tmp_path / "long.mp4", 30, audio_path=wav,
                           resolution=(63, 47), progress=False)
    assert video_info(long) == (135, 30.0, (64, 48), pytest.approx(4.5, abs=0.003))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "short.mp4"]


def test_worker_threads_keep_frame_order(tmp_path):
    vertices, faces = tiny_mesh()
    motion = np.stack([vertices + [0.15 * np.sin(t), 0, 0] for t in range(12)])
    decoded = []
    for workers in (1, 3):
        out = render_sequence(motion, faces, tmp_path / f"{workers}.mp4", 30, resolution=(48, 48),
                              template=vertices, workers=workers, progress=False)
        raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                             capture_output=True, check=True).stdout
        decoded.append(np.frombuffer(raw, np.uint8).reshape(-1, 48, 48).astype(int))
    assert len(decoded[0]) == 12
    assert np.abs(decoded[0] - decoded[1]).max() <= 2


def test_heatmap_side_by_side(tmp_path):
    vertices, faces = read_mesh(shared_file("flame/FLAME_sample.ply"))
    truth = opening(vertices, 4)
    prediction = truth + np.random.default_rng(0).normal(0, 0.002, truth.shape).astype(np.float32)
    out = render_sequence(prediction, faces, tmp_path / "heat.mp4", 30, gt=truth, heatmap=True,
                          resolution=(128, 128), progress=False)
    assert video_info(out)[:3] == (4, 30.0, (256, 128))
    frame = first_frame(out, (256, 128)).astype(int)
    saturation = frame.max(axis=2) - frame.min(axis=2)
    left, right = saturation[:, :128], saturation[:, 128:]
    assert (left[foreground(frame[:, :128])] > 60).mean() < 0.05   # grey ground truth
    assert (right[foreground(frame[:, 128:])] > 60).mean() > 0.5   # coloured prediction
    with pytest.raises(UserError, match="needs ground-truth"):
        render_sequence(prediction, faces, tmp_path / "x.mp4", 30, heatmap=True)
    with pytest.raises(UserError, match="5023"):
        render_sequence(prediction[:, :100], faces, tmp_path / "x.mp4", 30, gt=truth)


def test_failed_render_leaves_no_file(tmp_path, monkeypatch):
    vertices, faces = tiny_mesh()
    calls = []

    def failing(self, meshes, colors=None):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("renderer crashed")
        return np.zeros((self.height, self.width * self.panels, 3), np.uint8)

    monkeypatch.setattr(MeshRenderer, "render", failing)
    with pytest.raises(RuntimeError, match="crashed"):
        render_sequence(np.stack([vertices] * 8), faces, tmp_path / "out.mp4", 30, resolution=(32, 32),
                        workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    bad_audio = tmp_path / "bad.wav"
    bad_audio.write_bytes(b"not audio at all")
    monkeypatch.undo()
    with pytest.raises(UserError, match="ffmpeg could not write"):
        render_sequence(np.stack([vertices] * 8), faces, tmp_path / "out.mp4", 30, audio_path=bad_audio,
                        resolution=(32, 32), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.wav"]


@pytest.fixture
def tiny_dataset(tmp_path):
    """A dataset folder in the standard layout with one prediction of a 42-vertex mesh."""
    vertices, faces = tiny_mesh()
    folder = tmp_path / "tinyset"
    write_mesh(folder / "templates" / "tiny.ply", vertices, faces)
    motion = opening(vertices, 10).reshape(10, -1)
    (folder / "result").mkdir()
    np.save(folder / "result" / "sentence_01_condition_subject_A.npy", motion)
    (folder / "vertices_npy").mkdir()
    np.save(folder / "vertices_npy" / "sentence_01.npy", motion + 0.01)
    (folder / "wav").mkdir()
    soundfile.write(folder / "wav" / "sentence_01.wav", 0.1 * np.sin(np.arange(16000) / 10), 16000)
    return folder


def run_cli(capsys, *args) -> tuple[int, str, str]:
    import render

    code = render.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_renders_a_dataset(tiny_dataset, capsys):
    code, out, err = run_cli(capsys, "--dataset", tiny_dataset, "--fps", 25, "--resolution", 64)
    assert code == 0, err
    video = tiny_dataset / "output" / "sentence_01_condition_subject_A.mp4"
    assert str(video) in out
    assert video_info(video) == (10, 25.0, (64, 64), pytest.approx(0.4, abs=0.003))
    code, out, err = run_cli(capsys, "--dataset", tiny_dataset, "--side_by_side", "--heatmap", "--resolution", "64x48",
                             "--result_file", tiny_dataset / "result" / "sentence_01_condition_subject_A.npy",
                             "--output_path", tiny_dataset / "videos")
    assert code == 0, err
    assert video_info(tiny_dataset / "videos" / "sentence_01_condition_subject_A.mp4") == \
        (10, 30.0, (128, 48), pytest.approx(10 / 30, abs=0.003))


def test_cli_vocaset_ground_truth_every_second_frame(tmp_path, capsys):
    vertices, faces = read_mesh(shared_file("flame/FLAME_sample.ply"))
    folder = tmp_path / "VOCASET"  # a folder named like a dataset keeps its preset: 30 fps, stride 2
    write_mesh(folder / "templates" / "FLAME_sample.ply", vertices, faces)
    captured = opening(vertices, 12).reshape(12, -1)
    (folder / "vertices_npy").mkdir()
    np.save(folder / "vertices_npy" / "sentence_02.npy", captured)
    (folder / "result").mkdir()
    np.save(folder / "result" / "sentence_02_condition_FaceTalk_170725_00137_TA.npy", captured[::2][:5])
    (folder / "wav").mkdir()
    soundfile.write(folder / "wav" / "sentence_02.wav", np.zeros(8000), 16000)
    code, _, err = run_cli(capsys, "--dataset", folder, "--vertice_dim", 15069, "--side_by_side", "--resolution", 64)
    assert code == 0, err
    assert "5 predicted and 6 ground-truth frames; rendering the first 5" in err
    video = folder / "output" / "sentence_02_condition_FaceTalk_170725_00137_TA.mp4"
    assert video_info(video) == (5, 30.0, (128, 64), pytest.approx(5 / 30, abs=0.003))
    frame = first_frame(video, (128, 64)).astype(int)
    assert np.abs(frame[:, :64] - frame[:, 64:]).mean() < 3  # ground truth frame 0 == prediction frame 0


def test_cli_errors_are_one_line(tiny_dataset, capsys):
    code, _, err = run_cli(capsys, "--dataset", tiny_dataset, "--vertice_dim", 120)
    assert code == 2 and err.startswith("error: --vertice_dim 120") and err.count("\n") == 1
    np.save(tiny_dataset / "result" / "sentence_01_condition_subject_A.npy", np.zeros((5, 120), np.float32))
    code, _, err = run_cli(capsys, "--dataset", tiny_dataset)
    assert code == 2 and "has 40 vertices (120 values per frame)" in err and err.count("\n") == 1
    (tiny_dataset / "result" / "sentence_01_condition_subject_A.npy").unlink()
    (tiny_dataset / "result").rmdir()
    run = subprocess.run([sys.executable, "render.py", "--dataset", str(tiny_dataset)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("error: no result folder") and run.stderr.count("\n") == 1
    assert not (tiny_dataset / "output").exists()
