"""demo.py on a tiny trained checkpoint: real speech, any rate/channels, folders, exports, style
modes, and one-line errors that leave no output behind."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import json

import numpy as np
import pytest
import soundfile

import demo
from conftest import ROOT, shared_file
from ptalker.errors import UserError
from synthetic import speech_like, tiny_mesh, write_dataset

TINY = ["--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1", "--style_dim", "16",
        "--gat_dim", "4", "--feature_dim", "16"]
FPS = 30


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; extra threads only contend on a shared machine."""
    from models.ptalker import at_most_threads

    with at_most_threads(1):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_wav2vec2) -> Path:
    """A dataset folder with a checkpoint trained by main.py at <folder>/save/tiny.pth (S1 S2 seen, S3 not)."""
    import main

    root = write_dataset(tmp_path_factory.mktemp("data") / "tiny", ["S1", "S2", "S3"], range(1, 3), fps=FPS,
                         seconds=0.5)
    assert main.main(["--dataset", str(root), "--train_subjects", "S1 S2", "--val_subjects", "S3",
                      "--test_subjects", "S3", "--train_sentences", "1-2", "--val_sentences", "1-1",
                      "--test_sentences", "2-2", "--audio_model", str(tiny_wav2vec2), "--max_epoch", "1",
                      *TINY]) == 0
    return root


@pytest.fixture(scope="module")
def has_gl() -> bool:
    from ptalker.gl_context import select_backend

    try:
        select_backend()
    except UserError:
        return False
    return True


@pytest.fixture
def outputs(tmp_path) -> dict[str, Path]:
    return {"result": tmp_path / "result", "output": tmp_path / "output"}


def run_demo(dataset: Path, outputs: dict[str, Path], *args: str) -> int:
    return demo.main(["--dataset", str(dataset), "--result_path", str(outputs["result"]),
                      "--output_path", str(outputs["output"]), "--resolution", "32", *args])


def written(outputs: dict[str, Path]) -> list[str]:
    return sorted(str(p.relative_to(p.parents[1])) for d in outputs.values() if d.exists()
                  for p in d.rglob("*") if p.is_file())


def frames_of(path: Path) -> int:
    return round(soundfile.info(str(path)).duration * FPS)


def write_speech(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 3) -> Path:
    audio, _ = speech_like(seconds, rate, seed)
    soundfile.write(path, np.stack([audio] * channels, axis=1) if channels > 1 else audio, rate)
    return path


def test_seed_command_on_real_speech(dataset, has_gl, tmp_path):
    """The training command's flags as a script run: 16 kHz speech -> npy and an mp4 with sound."""
    wav = shared_file("speech/arctic_a0007.wav")
    command = [sys.executable, str(ROOT / "demo.py"), "--model_name", "tiny", "--wav_path", str(wav),
               "--dataset", str(dataset), "--vertice_dim", "126", "--feature_dim", "16", "--period", "30",
               "--fps", "30", "--train_subjects", "S1 S2", "--test_subjects", "S3", "--condition", "S2",
               "--subject", "S3", "--result_path", str(tmp_path / "result"), "--output_path", str(tmp_path / "out"),
               "--resolution", "32", "--threads", "1", *([] if has_gl else ["--no_render"])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    vertices = np.load(tmp_path / "result" / "arctic_a0007.npy")
    assert vertices.shape == (frames_of(wav), 126) and vertices.dtype == np.float32
    assert "real-time factor" in done.stdout and "speaker S2" in done.stdout and "face: S3" in done.stdout
    if has_gl:
        import imageio_ffmpeg

        video = tmp_path / "out" / "arctic_a0007.mp4"
        assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == len(vertices)
        assert "render" in done.stdout
        probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(video)], capture_output=True, text=True)
        assert "Audio: aac" in probe.stderr


def test_44khz_speech_with_video(dataset, has_gl, outputs, capsys):
    wav = shared_file("speech/obama_weekly_address.wav")
    assert run_demo(dataset, outputs, "--wav_path", str(wav), *([] if has_gl else ["--no_render"])) == 0
    vertices = np.load(outputs["result"] / "obama_weekly_address.npy")
    assert vertices.shape == (frames_of(wav), 126)
    assert np.isfinite(vertices).all()
    if has_gl:
        assert (outputs["output"] / "obama_weekly_address.mp4").stat().st_size > 0
    out = capsys.readouterr().out
    assert "11.52 s audio" in out and "real-time factor" in out
    # defaults: the first training subject's style on its own face
    assert "speaker S1" in out and "face: S1" in out


def test_stereo_and_8khz_inputs(dataset, outputs, tmp_path):
    stereo = write_speech(tmp_path / "stereo.wav", 0.7, 22050, channels=2)
    low = write_speech(tmp_path / "low.flac", 0.9, 8000)
    for wav in (stereo, low):
        assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render") == 0
        assert np.load(outputs["result"] / f"{wav.stem}.npy").shape == (frames_of(wav), 126)
    assert not outputs["output"].exists()


def test_folder_batches_equal_lengths_and_exports_meshes(dataset, outputs, tmp_path, capsys):
    from ptalker.mesh import read_mesh

    folder = tmp_path / "speech"
    folder.mkdir()
    write_speech(folder / "a.wav", 0.5, 16000, seed=1)
    write_speech(folder / "b.wav", 0.5, 44100, channels=2, seed=2)   # 0.5 s at 16 kHz too: batched with a
    write_speech(folder / "c.mp3", 0.8, 16000, seed=3)
    (folder / "notes.txt").write_text("not audio")
    assert run_demo(dataset, outputs, "--wav_path", str(folder), "--no_render", "--export", "ply",
                    "--subject", "S3") == 0
    out = capsys.readouterr().out
    assert out.count("[batch of 2]") == 2 and "total: 3 clips" in out
    assert sorted(p.name for p in outputs["result"].iterdir()) == ["a.npy", "b.npy", "c.npy"]
    for stem, frames in (("a", 15), ("b", 15), ("c", 24)):
        vertices = np.load(outputs["result"] / f"{stem}.npy")
        assert vertices.shape[0] == frames
        meshes = sorted((outputs["output"] / stem).iterdir())
        assert [p.name for p in meshes] == [f"frame_{t:05d}.ply" for t in range(frames)]
    mesh_vertices, faces = read_mesh(outputs["output"] / "c" / "frame_00007.ply")
    np.testing.assert_allclose(mesh_vertices.reshape(-1), np.load(outputs["result"] / "c.npy")[7], atol=1e-6)
    assert faces.shape == tiny_mesh()[1].shape

    # a second run replaces an exported sequence as a whole
    assert run_demo(dataset, outputs, "--wav_path", str(folder / "a.wav"), "--no_render", "--export", "obj") == 0
    assert sorted(p.suffix for p in (outputs["output"] / "a").iterdir()) == [".obj"] * 15


def test_batched_equals_one_by_one(dataset):
    from ptalker.inference import load_animator

    animator = load_animator(dataset / "save" / "tiny.pth")
    clips = [speech_like(0.4, 16000, seed)[0] for seed in (1, 2)]
    template = animator.template("S3")
    together = animator.animate(clips, template, "S2")
    alone = [animator.animate([c], template, "S2", batch_size=1)[0] for c in clips]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_style_modes(dataset, outputs, tmp_path, capsys):
    wav = write_speech(tmp_path / "speech.wav", 0.6, 16000)
    reference = np.load(dataset / "vertices_npy" / "S2_sentence01.npy")
    np.save(tmp_path / "flat.npy", reference)
    np.save(tmp_path / "grid.npy", reference.reshape(len(reference), -1, 3))
    modes = {"seen": ["--condition", "S1"], "none": ["--condition", "none"], "unseen": ["--unseen"],
             "flat": ["--reference_motion", str(tmp_path / "flat.npy")],
             "grid": ["--reference_motion", str(tmp_path / "grid.npy")],
             "both": ["--reference_motion", str(tmp_path / "flat.npy"), "--condition", "S2"],
             "retargeted": ["--reference_motion", str(tmp_path / "grid.npy"), "--reference_subject", "S2"],
             "moved": ["--reference_motion", str(tmp_path / "moved.npy")]}
    from ptalker.inference import load_animator

    animator = load_animator(dataset / "save" / "tiny.pth")   # S2's motion moved onto S3's face by hand
    moved = reference.reshape(len(reference), -1, 3) - animator.template("S2") + animator.template("S3")
    np.save(tmp_path / "moved.npy", moved)
    results = {}
    for mode, flags in modes.items():
        assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render", "--subject", "S3", *flags) == 0
        results[mode] = np.load(outputs["result"] / "speech.npy")
    out = capsys.readouterr().out
    assert "unseen speaker" in out and "reference motion" in out and "+ speaker S2" in out
    np.testing.assert_array_equal(results["none"], results["unseen"])
    np.testing.assert_array_equal(results["flat"], results["grid"])
    assert not np.array_equal(results["seen"], results["unseen"])
    assert not np.array_equal(results["flat"], results["unseen"])
    np.testing.assert_allclose(results["retargeted"], results["moved"], atol=1e-6)
    assert not np.allclose(results["retargeted"], results["grid"], atol=1e-6)


def test_stream_writes_the_offline_frames_at_full_lookahead_and_a_latency_file(dataset, outputs, tmp_path, capsys):
    wav = write_speech(tmp_path / "speech.wav", 0.7, 16000)
    assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render") == 0
    offline = np.load(outputs["result"] / "speech.npy")
    assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render", "--stream", "--lookahead_ms", "inf") == 0
    np.testing.assert_allclose(np.load(outputs["result"] / "speech.npy"), offline, atol=1e-4)
    assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render", "--stream", "--lookahead_ms", "100",
                    "--chunk_ms", "40", "--realtime") == 0
    streamed = np.load(outputs["result"] / "speech.npy")
    assert streamed.shape == offline.shape   # values: tests/test_streaming.py, on a model that moves
    report = json.loads((outputs["result"] / "speech_latency.json").read_text())
    assert (report["lookahead_ms"], report["chunk_ms"], report["realtime"], report["frames"]) == (100, 40, True, 21)
    for figures in (report["compute_ms"], report["delay_ms"]):
        assert 0 <= figures["p50"] <= figures["p99"] <= figures["max"]
    # paced in real time, nothing can come back before its speech plus the look-ahead has arrived
    assert report["first_frame_ms"] >= 100 + 1000 / FPS - 40 and report["delay_ms"]["p50"] >= 100 - 40
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("speech.wav: look-ahead 100 ms")]
    assert len(line) == 1 and "first frame" in line[0] and "p50/p99/max" in line[0]


def test_template_mesh(dataset, outputs, tmp_path):
    import trimesh

    vertices, faces = tiny_mesh()
    trimesh.Trimesh(vertices * 1.3, faces, process=False).export(tmp_path / "face.obj")
    wav = write_speech(tmp_path / "speech.wav", 0.4, 16000)
    assert run_demo(dataset, outputs, "--wav_path", str(wav), "--no_render", "--template",
                    str(tmp_path / "face.obj")) == 0
    first = np.load(outputs["result"] / "speech.npy")[0].reshape(-1, 3)
    assert np.abs(first - vertices * 1.3).max() < 0.05


def test_render_failure_leaves_nothing(dataset, outputs, tmp_path, monkeypatch, capsys):
    import ptalker.gl_context
    import ptalker.render_sequence

    def broken(vertices, faces, out_path, *args, **kwargs):
        Path(out_path).write_bytes(b"half a video")
        raise UserError("ffmpeg could not write the video")

    monkeypatch.setattr(ptalker.gl_context, "select_backend", lambda: "egl")
    monkeypatch.setattr(ptalker.render_sequence, "render_sequence", broken)
    wav = write_speech(tmp_path / "speech.wav", 0.4, 16000)
    assert run_demo(dataset, outputs, "--wav_path", str(wav), "--export", "ply") == 2
    assert capsys.readouterr().err.strip() == "error: ffmpeg could not write the video"
    assert written(outputs) == [] and not list(outputs["output"].iterdir())


def test_bundled_defaults(dataset, outputs, tmp_path, monkeypatch, capsys):
    model, wav = tmp_path / "models" / "synthtalk.pth", tmp_path / "wav" / "synthtalk_sample.wav"
    monkeypatch.setattr(demo, "BUNDLED_MODEL", model)
    monkeypatch.setattr(demo, "BUNDLED_WAV", wav)
    flags = ["--result_path", str(outputs["result"]), "--output_path", str(outputs["output"]), "--no_render"]
    assert demo.main(flags) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and str(model) in error and str(wav) in error
    model.parent.mkdir()
    model.write_bytes((dataset / "save" / "tiny.pth").read_bytes())
    wav.parent.mkdir()
    write_speech(wav, 0.5, 16000)
    assert demo.main(flags) == 0
    assert np.load(outputs["result"] / "synthtalk_sample.npy").shape == (15, 126)


def _bad_inputs(dataset: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = write_speech(tmp / "good.wav", 0.5, 16000)
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "garbage.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    soundfile.write(tmp / "short.wav", np.zeros(100, np.float32), 16000)
    folder = tmp / "folder"
    folder.mkdir()
    write_speech(folder / "a.wav", 0.5, 16000)
    (folder / "b.wav").write_bytes(b"")
    (tmp / "nothing").mkdir()
    (tmp / "same").mkdir()
    write_speech(tmp / "same" / "x.wav", 0.3, 16000)
    write_speech(tmp / "same" / "x.flac", 0.3, 16000)
    (tmp / "corrupt.pth").write_bytes(b"not a checkpoint")
    np.save(tmp / "bad_reference.npy", np.zeros((10, 99), np.float32))
    import trimesh

    trimesh.creation.icosphere(subdivisions=2).export(tmp / "other.ply")
    wav = ["--wav_path", str(good)]
    return {
        "missing audio": (["--wav_path", str(tmp / "missing.wav")], "audio file not found"),
        "empty audio": (["--wav_path", str(tmp / "empty.wav")], "audio file is empty"),
        "undecodable audio": (["--wav_path", str(tmp / "garbage.wav")], "cannot decode audio"),
        "too short": (["--wav_path", str(tmp / "short.wav")], "at least 25 ms"),
        "bad file in folder": (["--wav_path", str(folder)], "audio file is empty"),
        "empty folder": (["--wav_path", str(tmp / "nothing")], "no audio files"),
        "clashing names": (["--wav_path", str(tmp / "same")], "share the output name x"),
        "unknown condition": ([*wav, "--condition", "S3"], "unknown condition 'S3': choose a training subject"),
        "unseen and condition": ([*wav, "--unseen", "--condition", "S1"], "contradict"),
        "unknown subject": ([*wav, "--subject", "S9"], "holds templates of S1, S2, S3"),
        "subject and template": ([*wav, "--subject", "S1", "--template", str(tmp / "other.ply")], "give one"),
        "template mismatch": ([*wav, "--template", str(tmp / "other.ply")], "has 162 vertices"),
        "vertice_dim mismatch": ([*wav, "--vertice_dim", "15069"], "--vertice_dim 15069 does not match"),
        "feature_dim mismatch": ([*wav, "--feature_dim", "64"], "(feature_dim 16)"),
        "train_subjects mismatch": ([*wav, "--train_subjects", "S1 S9"], "trained on S1 S2"),
        "bad reference": ([*wav, "--reference_motion", str(tmp / "bad_reference.npy")], "reference motion"),
        "missing reference": ([*wav, "--reference_motion", str(tmp / "nope.npy")], "not found"),
        "reference subject alone": ([*wav, "--reference_subject", "S2"], "give both"),
        "corrupt checkpoint": ([*wav, "--checkpoint", str(tmp / "corrupt.pth")], "corrupt or not a checkpoint"),
        "no checkpoint": ([*wav, "--model_name", "other"], "no checkpoint"),
        "negative look-ahead": ([*wav, "--stream", "--lookahead_ms", "-5"], "--lookahead_ms"),
        "zero chunks": ([*wav, "--stream", "--chunk_ms", "0"], "--chunk_ms must be > 0"),
    }


def test_bad_inputs_one_line_error_and_no_output(dataset, outputs, tmp_path, capsys):
    for case, (flags, message) in _bad_inputs(dataset, tmp_path).items():
        with warnings.catch_warnings(record=True) as caught:   # a warning would print a second line
            warnings.simplefilter("always")
            assert run_demo(dataset, outputs, "--no_render", *flags) == 2, case
        assert [str(w.message) for w in caught] == [], case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (case, err)
        assert written(outputs) == [], case
