"""main.py end to end on tiny datasets: the original command line, resume, checkpoints, errors."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, make_model
from ptalker.checkpoint import load_checkpoint
from synthetic import tiny_mesh, write_dataset

TINY = ["--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1", "--style_dim", "16",
        "--gat_dim", "4", "--feature_dim", "16"]


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def vocaset_like(tmp_path_factory) -> Path:
    # 60 fps capture kept every second frame, audio interpolated to 30 fps
    return write_dataset(tmp_path_factory.mktemp("data") / "VOCASET", ["S1", "S2", "S3", "S4"], range(1, 5),
                         fps=30, capture_stride=2, seconds=0.8)


@pytest.fixture(scope="module")
def biwi_like(tmp_path_factory) -> Path:
    # 25 fps, two audio steps per frame; BIWI's sentence ranges 1-32 / 33-36 / 37-40
    return write_dataset(tmp_path_factory.mktemp("data") / "BIWI", ["F2", "M3"], [1, 2, 33, 37], fps=25,
                         seconds=0.8)


def vocaset_command(root: Path, encoder: Path, *extra: str) -> list[str]:
    return ["--dataset", str(root), "--vertice_dim", "126", "--period", "30",
            "--train_subjects", "S1 S2", "--val_subjects", "S3", "--test_subjects", "S4",
            "--train_sentences", "1-4", "--val_sentences", "1-2", "--test_sentences", "3-4",
            "--audio_model", str(encoder), "--lip_mask", "regions/lve.txt", "--upper_face_mask", "regions/fdd.txt",
            *TINY, *extra]


def test_vocaset_like_train_test_and_resume(vocaset_like, tiny_wav2vec2):
    done = run_main(*vocaset_command(vocaset_like, tiny_wav2vec2, "--max_epoch", "2"))
    assert done.returncode == 0, done.stderr
    results = sorted(p.name for p in (vocaset_like / "result").glob("*.npy"))
    # the unseen test speaker is animated under every training condition
    assert results == [f"S4_sentence0{s}_condition_{c}.npy" for s in (3, 4) for c in ("S1", "S2")]
    prediction = np.load(vocaset_like / "result" / results[0])
    gt = np.load(vocaset_like / "vertices_npy" / "S4_sentence03.npy")[::2]
    assert prediction.shape == gt.shape and prediction.dtype == np.float32
    assert "LVE (x1e-5)" in done.stdout and (vocaset_like / "result" / "metrics.csv").is_file()
    (vocaset_like / "result" / "metrics.csv").unlink()
    scored = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--dataset", str(vocaset_like),
                             "--lip_mask", "regions/lve.txt", "--upper_face_mask", "regions/fdd.txt"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    # the stand-alone evaluator prints main.py's table, number for number
    assert scored.returncode == 0 and scored.stdout.strip() and scored.stdout.strip() in done.stdout
    assert "epoch 2" in done.stderr and "val" in done.stderr

    model, state = load_checkpoint(vocaset_like / "save" / "vocaset.pth")
    assert state["train_subjects"] == ["S1", "S2"] and state["config"]["vertice_dim"] == 126
    assert state["faces"].shape[1] == 3 and set(state["templates"]) == {"S1", "S2", "S3", "S4"}

    resumed = run_main(*vocaset_command(vocaset_like, tiny_wav2vec2, "--max_epoch", "3", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2" in resumed.stderr and "epoch 3" in resumed.stderr


def test_checkpoint_save_load_gives_identical_predictions(tiny_wav2vec2, tmp_path):
    from ptalker.checkpoint import save_checkpoint

    model, template = make_model(tiny_wav2vec2)   # random head: predictions depend on the weights
    audio, one_hot = torch.randn(1, 8000), torch.eye(3)[:1]
    before = model.generate(audio, template, one_hot)
    path = tmp_path / "copy.pth"
    save_checkpoint(path, model, ["S1", "S2", "S3"], tiny_mesh()[1], {"S1": template.numpy().reshape(-1, 3)})
    reloaded, state = load_checkpoint(path)
    assert state["train_subjects"] == ["S1", "S2", "S3"]
    assert torch.equal(reloaded.generate(audio, template, one_hot), before)


def test_biwi_like_pairs_alignment_and_seen_test_subjects(biwi_like, tiny_wav2vec2):
    done = run_main("--dataset", str(biwi_like), "--vertice_dim", "126", "--feature_dim", "16", "--period", "25",
                    "--train_subjects", "F2 M3", "--val_subjects", "F2 M3", "--test_subjects", "F2 M3",
                    "--max_epoch", "1", "--audio_model", str(tiny_wav2vec2), "--gat_checkpoint", "off", *TINY[:-2])
    assert done.returncode == 0, done.stderr
    # seen speakers are animated under their own condition; LVE in BIWI's units
    assert sorted(p.name for p in (biwi_like / "result").glob("*.npy")) == [
        "F2_sentence37_condition_F2.npy", "M3_sentence37_condition_M3.npy"]
    assert "LVE (x1e-4)" in done.stdout
    _, state = load_checkpoint(biwi_like / "save" / "biwi.pth")
    assert state["config"]["audio_frames_per_frame"] == 2 and state["config"]["fps"] == 25
    assert state["config"]["gat_checkpoint"] is False


@pytest.mark.parametrize("change,message", [
    (["--dataset", "/nonexistent/folder"], "dataset folder not found"),
    (["--train_subjects", "S1 S9"], "unknown subject(s) S9"),
    (["--vertice_dim", "999"], "but --vertice_dim is 999"),
])
def test_one_line_errors(vocaset_like, tiny_wav2vec2, change, message):
    command = vocaset_command(vocaset_like, tiny_wav2vec2, "--max_epoch", "1")
    flag = change[0]
    command[command.index(flag) + 1] = change[1]
    done = run_main(*command)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_probability_flags_take_values_from_zero_to_one(capsys):
    import main
    args = main.parse_args(["--self_feed", "1", "--identity_dropout", "0", "--audio_style_dropout", "0.5"])
    assert (args.self_feed, args.identity_dropout, args.audio_style_dropout) == (1.0, 0.0, 0.5)
    for bad in ("1.5", "-0.1"):
        with pytest.raises(SystemExit) as exit_:
            main.parse_args(["--self_feed", bad])
        assert exit_.value.code == 2 and f"must be in [0, 1], got {float(bad)}" in capsys.readouterr().err
    assert main.parse_args(["--ema", "0.999"]).ema == 0.999
    with pytest.raises(SystemExit):
        main.parse_args(["--ema", "1"])   # a decay of 1 would freeze the average at the random start
    assert "must be in [0, 1), got 1.0" in capsys.readouterr().err


def test_recipe_supplies_the_defaults_and_flags_win(capsys):
    import main
    public = main.parse_args([])   # the seed README's commands pass none of these flags
    # the public code's fp16 becomes auto: bf16 where the GPU has it, else fp16 with its scaler
    assert (public.lr, public.max_epoch, public.amp, public.audio_model) == (
        3e-4, 800, "auto", "facebook/hubert-large-ls960-ft")
    faceformer = main.parse_args(["--recipe", "faceformer"])
    assert (faceformer.lr, faceformer.max_epoch, faceformer.amp, faceformer.audio_model) == (
        1e-4, 100, "off", "facebook/wav2vec2-base-960h")
    explicit = main.parse_args(["--recipe", "faceformer", "--lr", "5e-4", "--amp", "bf16"])
    assert (explicit.lr, explicit.max_epoch, explicit.amp) == (5e-4, 100, "bf16")
    assert explicit.from_recipe == ("max_epoch", "audio_model")
    with pytest.raises(SystemExit) as exit_:
        main.parse_args(["--recipe", "voca"])
    assert exit_.value.code == 2 and "invalid choice: 'voca'" in capsys.readouterr().err


def test_recipe_fp16_becomes_float32_on_cpu_quietly():
    import main
    from ptalker.experiment import _amp
    assert _amp(main.parse_args([]), "cpu") == "off" and _amp(main.parse_args([]), "cuda") == "auto"
    assert _amp(main.parse_args(["--amp", "fp16"]), "cpu") == "fp16"   # kept: train() notes it cannot be used


def test_gpu_training_flags_parse_and_reject_bad_values(capsys):
    import main
    args = main.parse_args(["--tf32", "off", "--log_every", "10", "--last_checkpoint_every", "30min"])
    assert (args.tf32, args.log_every, args.last_checkpoint_every) == ("off", 10, "30min")
    defaults = main.parse_args([])
    assert (defaults.tf32, defaults.log_every, defaults.last_checkpoint_every) == ("on", 50, "20min")
    for flag, bad, reason in (("--last_checkpoint_every", "5h", "expected N (epochs) or Nmin"),
                              ("--log_every", "0", "must be at least 1"), ("--amp", "fp8", "invalid choice")):
        with pytest.raises(SystemExit) as exit_:
            main.parse_args([flag, bad])
        assert exit_.value.code == 2 and reason in capsys.readouterr().err


@pytest.fixture
def lips_only(tmp_path) -> Path:
    """A generic dataset folder with regions/lve.txt but no regions/fdd.txt."""
    root = write_dataset(tmp_path / "mydata", ["S1", "S2"], range(1, 3), fps=30, seconds=0.5)
    (root / "regions" / "fdd.txt").unlink()
    return root


def region_command(root: Path, encoder: Path, *extra: str) -> list[str]:
    return ["--dataset", str(root), "--train_subjects", "S1", "--val_subjects", "S2", "--test_subjects", "S1",
            "--train_sentences", "1-2", "--val_sentences", "1-1", "--test_sentences", "2-2",
            "--audio_model", str(encoder), "--max_epoch", "1", *TINY, *extra]


def overall_row(stdout: str) -> list[str]:
    """The LVE, FDD and MVE cells of the table's overall row."""
    return next(line for line in stdout.splitlines() if line.startswith("all (")).split()[-3:]


def test_lip_region_alone_trains_the_mouth_loss(lips_only, tiny_wav2vec2):
    done = run_main(*region_command(lips_only, tiny_wav2vec2))
    assert done.returncode == 0, done.stderr
    lips = (lips_only / "regions" / "lve.txt").read_text().split(",")
    assert f"lip region: {lips_only / 'regions' / 'lve.txt'} ({len(lips)} vertices)" in done.stderr
    assert "note: no upper-face region" in done.stderr and "FDD is off" in done.stderr
    with open(lips_only / "save" / "mydata_log.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["mouth"]) > 0
    lve, fdd, _ = overall_row(done.stdout)
    assert float(lve) > 0 and fdd == "n/a"


def test_training_without_lip_region_needs_mouth_weight_zero(lips_only, tiny_wav2vec2):
    (lips_only / "regions" / "lve.txt").unlink()
    refused = run_main(*region_command(lips_only, tiny_wav2vec2))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the mouth loss needs a lip region") and "--loss_weight mouth=0" in last
    done = run_main(*region_command(lips_only, tiny_wav2vec2, "--loss_weight", "mouth=0"))
    assert done.returncode == 0, done.stderr
    assert "note: no lip region" in done.stderr and "LVE is off" in done.stderr
    lve, fdd, mve = overall_row(done.stdout)
    assert (lve, fdd) == ("n/a", "n/a") and float(mve) > 0


def test_wav_without_vertices_and_corrupt_checkpoint(tmp_path, tiny_wav2vec2):
    root = write_dataset(tmp_path / "VOCASET", ["S1", "S2"], range(1, 3), fps=30, capture_stride=2, seconds=0.5)
    (root / "vertices_npy" / "S1_sentence01.npy").unlink()
    command = ["--dataset", str(root), "--vertice_dim", "126", "--train_subjects", "S1", "--val_subjects", "S2",
               "--test_subjects", "S2",
               "--train_sentences", "1-2", "--val_sentences", "1-1", "--test_sentences", "2-2",
               "--audio_model", str(tiny_wav2vec2), "--max_epoch", "1", *TINY]
    done = run_main(*command)
    assert done.returncode == 2 and "S1_sentence01.wav has no vertices" in done.stderr
    (root / "wav" / "S1_sentence01.wav").unlink()
    (root / "save").mkdir()
    (root / "save" / "vocaset.pth").write_bytes(b"not a checkpoint")
    done = run_main(*command, "--test_only")
    assert done.returncode == 2 and "corrupt or not a checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content", ["empty", "truncated"])
def test_empty_or_truncated_checkpoint_is_one_line_error(tmp_path, tiny_wav2vec2, content):
    root = write_dataset(tmp_path / "VOCASET", ["S1", "S2"], range(1, 3), fps=30, capture_stride=2, seconds=0.5)
    command = ["--dataset", str(root), "--vertice_dim", "126", "--train_subjects", "S1", "--val_subjects", "S2",
               "--test_subjects", "S2", "--train_sentences", "1-2", "--val_sentences", "1-1",
               "--test_sentences", "2-2", "--audio_model", str(tiny_wav2vec2), "--max_epoch", "1",
               "--loss_weight", "mouth=0", *TINY]
    whole = tmp_path / "whole.pth"
    torch.save({"format": "ptalker-checkpoint-2", "weights": torch.zeros(4096)}, whole)
    data = b"" if content == "empty" else whole.read_bytes()[: whole.stat().st_size // 2]
    (root / "save").mkdir()
    for name, flag in (("vocaset.pth", "--test_only"), ("vocaset_last.pth", "--resume")):
        (root / "save" / name).write_bytes(data)
        done = run_main(*command, flag)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert lines[-1].startswith(f"error: cannot read checkpoint {root / 'save' / name} (corrupt or not a "
                                    f"checkpoint)"), done.stderr
