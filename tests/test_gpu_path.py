"""What training and testing on a GPU rely on, checked on the CPU: the precision choices, the
device-side step guard, the DDP settings, batched test-time generation, the resumable-state
policy and the GPU benchmark's table."""
from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, clip, make_model
from models.losses import compute_losses
from ptalker import trainer as trainer_module
from ptalker.augmentation import TrainStep
from ptalker.batches import one_hot
from ptalker.checkpoint import SaveInterval, read_checkpoint, save_interval
from ptalker.data import TalkingFaceDataset, collate
from ptalker.device import autocast, batch_to_device, default_amp, resolve_amp, tf32_matmuls
from ptalker.distributed import Parallel
from ptalker.errors import UserError
from ptalker.prediction import generation_batches, write_test_predictions
from ptalker.trainer import StepGuard, TrainConfig, train
from test_training import SUBJECTS, dataset, quiet_env, splits_and_model  # noqa: F401  (dataset: a fixture)


# ---------------------------------------------------------------- precision


def test_auto_precision_is_bf16_from_ampere_on_fp16_before_and_float32_without_gpu():
    assert default_amp((8, 0)) == "bf16" and default_amp((9, 0)) == "bf16"     # A100, H100
    assert default_amp((7, 0)) == "fp16" and default_amp((7, 5)) == "fp16"     # V100, T4
    assert default_amp(None) == "off"
    assert resolve_amp("auto", "cpu") == "off"
    assert resolve_amp("fp16", "cpu") == "fp16" and resolve_amp("off", "cuda") == "off"   # explicit ones stay


def test_tf32_is_switched_for_cuda_only_and_restored_after():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    with tf32_matmuls("cpu", True):
        assert (matmul.fp32_precision, conv.fp32_precision) == saved
    with tf32_matmuls("cuda", True):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with tf32_matmuls("cuda:1", False):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    assert (matmul.fp32_precision, conv.fp32_precision) == saved    # the test phase computes as on its own


def test_losses_and_vertex_head_stay_float32_under_autocast(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2)
    audio, motion = clip(12, batch=2, template=template.expand(2, -1))
    args = (audio, motion, template.expand(2, -1), one_hot(torch.tensor([0, 1]), 3))
    with torch.no_grad():
        with autocast("cpu", "bf16"):
            mixed = model(*args)
            x = torch.randn(5, model.config.feature_dim, dtype=torch.bfloat16)
            head = model.head(x)
            terms = compute_losses(mixed, motion, model.config, torch.tensor([0, 1]), None,
                                   contrast_scale=model.contrast_scale)
        exact = compute_losses(mixed, motion, model.config, torch.tensor([0, 1]), None,
                               contrast_scale=model.contrast_scale)
    assert mixed.audio_content.dtype == torch.bfloat16          # the network itself runs in bf16
    assert mixed.vertices.dtype == torch.float32 and head.dtype == torch.float32
    assert torch.equal(head, torch.nn.functional.linear(x.float(), model.head.weight, model.head.bias))
    # the same bf16 features give the same float32 terms inside and outside autocast
    assert terms.keys() == exact.keys() and {"orth_audio", "kl", "topk", "adv"} <= set(terms)
    for name in terms:
        assert terms[name].dtype == torch.float32, name
        assert torch.equal(terms[name], exact[name]), name


# ---------------------------------------------------------------- the step guard


def test_step_guard_counts_fp16_overflows_and_remembers_the_first_bad_step():
    guard = StepGuard("cpu", fp16=True, limit=3)
    finite, overflow = torch.tensor(1.0), torch.tensor(math.inf)
    verdicts = []
    for step, norm in enumerate([finite, overflow, overflow, finite, overflow], 1):
        guard.loss(torch.tensor(0.5), step)
        verdicts.append(bool(guard.step(step, norm, Parallel())))
    assert verdicts == [False, True, True, False, True]
    state = guard.read()
    assert (state["skipped"], state["longest"], state["step"], state["loss"]) == (3, 2, 2, 0)

    guard = StepGuard("cpu", fp16=False, limit=3)
    guard.loss(torch.tensor(0.5), 7)
    guard.loss(torch.tensor(math.nan), 8)     # the step's second micro-batch
    guard.loss(torch.tensor(math.inf), 9)
    assert bool(guard.step(4, finite, Parallel()))
    guard.step(5, overflow, Parallel())
    assert {k: guard.read()[k] for k in ("step", "micro", "loss")} == {"step": 4, "micro": 8, "loss": 1}


def test_fused_adam_skips_a_step_flagged_on_the_device():
    weight = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(3)
    adam.found_inf = torch.tensor(1.0)          # what the trainer sets from StepGuard's verdict
    adam.step()
    del adam.found_inf
    assert torch.equal(weight.detach(), torch.ones(3)) and int(adam.state[weight]["step"]) == 0
    adam.step()
    assert (weight.detach() < 1).all() and int(adam.state[weight]["step"]) == 1


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """The trainer's fp16 path (a GradScaler, skip counting) on the CPU; the forward pass stays float32,
    as what is checked is what happens to overflowing gradients."""
    monkeypatch.setattr(trainer_module.Trainer, "_usable_amp", lambda self: "fp16")
    monkeypatch.setattr(trainer_module, "autocast", lambda device, amp: contextlib.nullcontext())


def fp16_settings(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(**{**dict(max_epoch=1, lr=1e-3, batch_size=2, best_path=tmp_path / "m.pth",
                                 last_path=tmp_path / "m_last.pth", log_every=1), **overrides})


def test_fp16_overflowing_steps_are_skipped_counted_and_only_a_run_of_them_stops(dataset, tiny_wav2vec2,  # noqa: F811
                                                                                 tmp_path, capsys, fp16_on_cpu):
    sets, model, meta = splits_and_model(dataset, tiny_wav2vec2)
    calls = []

    def overflow_twice(grad):   # the first two backward passes overflow
        calls.append(1)
        return grad * math.inf if len(calls) <= 2 else grad

    hook = model.head.weight.register_hook(overflow_twice)
    train(model, sets["train"], sets["val"], None, fp16_settings(tmp_path), meta)
    hook.remove()
    assert "4 steps (2 skipped: fp16 overflow)" in capsys.readouterr().err
    saved = read_checkpoint(tmp_path / "m_last.pth")["extra"]
    assert saved["scaler"]["scale"] == 2.0 ** 14        # halved twice from 2^16
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())

    hook = model.head.weight.register_hook(lambda g: g * math.nan)
    with pytest.raises(UserError, match=r"3 fp16 optimiser steps in a row up to epoch 1, step 3 had non-finite "
                                        r"gradients and were skipped"):
        train(model, sets["train"], sets["val"], None, fp16_settings(tmp_path / "b", fp16_skip_limit=3), meta)
    hook.remove()


# ---------------------------------------------------------------- data parallel


def test_unused_parameter_detection_only_where_a_setting_leaves_parameters_out(tiny_wav2vec2):
    def grads_missing(model) -> list[str]:
        model.train()
        step = TrainStep(model, None)
        audio, motion = clip(10, batch=2, template=template.expand(2, -1))
        batch = collate([{"name": f"c{i}", "audio": audio[i], "vertices": motion[i], "template": template[0],
                          "subject": i} for i in range(2)])
        step(batch)["total"].backward()
        return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]

    model, template = make_model(tiny_wav2vec2)
    assert TrainStep(model, None).may_skip_parameters()           # the speech model's layerdrop
    model.audio.model.config.layerdrop = 0.0
    assert not TrainStep(model, None).may_skip_parameters() and grads_missing(model) == []
    # without the contrastive terms, the clip heads, the adversary and the temperature get no gradient
    for change in (lambda c: c.with_loss_weights(["contrastive=0"]), lambda c: c.with_ablations(["no_feature"])):
        model, template = make_model(tiny_wav2vec2)
        model.audio.model.config.layerdrop = 0.0
        model.config = change(model.config)
        assert TrainStep(model, None).may_skip_parameters() and "contrast_scale" in grads_missing(model)


def test_batches_keep_lengths_and_subjects_on_the_host():
    batch = collate([{"name": "a", "audio": torch.zeros(8), "vertices": torch.zeros(2, 3), "template": torch.zeros(3),
                      "subject": 1}])
    moved = batch_to_device(batch, "meta")
    assert moved["audio"].device.type == "meta" and moved["vertices"].device.type == "meta"
    assert all(moved[k].device.type == "cpu" for k in ("audio_lengths", "frame_lengths", "subject"))


# ---------------------------------------------------------------- test-time generation


def test_batched_test_predictions_equal_sequential_ones(dataset, tiny_wav2vec2, tmp_path, one_thread):  # noqa: F811
    sets, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    torch.nn.init.normal_(model.head.weight, std=0.05)
    sequences = sets["val"].sequences + sets["train"].sequences[:2]     # unseen S3 (2 conditions) and seen S1
    for k, seq in enumerate(sequences):                                 # clips of different lengths
        seq.audio = seq.audio[: len(seq.audio) - 1600 * k]
    test_set = TalkingFaceDataset(sequences, speech_frames=lambda samples: samples * 30 // 16000)
    frames = [test_set.frames(i) for i in range(len(test_set))]
    assert len(set(frames)) == len(frames)
    jobs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert generation_batches(jobs, frames, 4) == [[(3, 0), (2, 0), (1, 0), (1, 1)], [(0, 0), (0, 1)]]

    one = write_test_predictions(model, test_set, SUBJECTS, tmp_path / "one", "cpu", batch_size=1)
    many = write_test_predictions(model, test_set, SUBJECTS, tmp_path / "many", "cpu", batch_size=4)
    assert sorted(p.name for p in one) == sorted(p.name for p in many) and len(one) == 6
    for path in one:
        a, b = np.load(path), np.load(tmp_path / "many" / path.name)
        assert a.shape == b.shape and a.shape[0] in frames
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the resumable state


def test_save_interval_reads_epochs_or_minutes():
    assert SaveInterval.parse("3") == SaveInterval(epochs=3) and SaveInterval.parse("20min") == SaveInterval(minutes=20)
    for bad in ("0", "min", "5h", "-1", "0min"):
        with pytest.raises(ValueError):
            SaveInterval.parse(bad)
    assert save_interval(" 2 ") == "2"
    every_two, twenty_minutes = SaveInterval(epochs=2), SaveInterval(minutes=20)
    assert [every_two.due(e, 0, 0.0) for e in (1, 2)] == [False, True] and every_two.due(5, 3, 0.0)
    assert not twenty_minutes.due(9, 0, 19.9) and twenty_minutes.due(1, 0, 20.0)


def test_last_checkpoint_every_n_epochs_and_exact_resume_from_it(dataset, tiny_wav2vec2, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    written = []
    save = trainer_module.save_checkpoint

    def recording_save(path, model, **kwargs):
        if path.name.endswith("_last.pth"):
            written.append(kwargs["extra"]["epoch"])
        save(path, model, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", recording_save)

    def run(folder, max_epoch, resume=False):
        sets, model, meta = splits_and_model(dataset, tiny_wav2vec2)
        settings = TrainConfig(max_epoch=max_epoch, lr=1e-3, batch_size=2, best_path=folder / "m.pth",
                               last_path=folder / "m_last.pth", last_checkpoint_every="2", resume=resume)
        train(model, sets["train"], sets["val"], None, settings, meta)
        return model

    whole = run(tmp_path / "whole", 3)
    assert written == [2, 3]                     # every second epoch, and the last one
    written.clear()
    run(tmp_path / "split", 2)
    resumed = run(tmp_path / "split", 3, resume=True)
    assert written == [2, 3]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# ---------------------------------------------------------------- the GPU benchmark


def test_gpu_benchmark_prints_its_table_on_the_cpu():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--quick"],
                          capture_output=True, text=True, cwd=ROOT, env=quiet_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    training = [line.split("|") for line in lines if line.startswith("train ")]
    assert len(training) == 2 * 2 * 2          # 2 configurations x 2 batch sizes (quick) x fp32/bf16
    for cells in training:
        assert len(cells) == 7 and float(cells[4]) > 0        # ... | sequences/s | peak memory | syncs
    generation = [line.split("|") for line in lines if line.startswith("generate ")]
    assert len(generation) == 2 * 2                          # 2 speech lengths x eager/captured
    assert all(re.fullmatch(r"\s*(\d+\.\d+|n/a)\s*", cells[3]) for cells in generation)
    assert any("DDP" in line and "2 GPUs" in line for line in lines)
