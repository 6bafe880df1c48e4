"""Training at scale: length-bucketed batches, the optimiser step's guards, schedules, the epoch log,
exact resumption after a kill -9, and data-parallel training with torchrun (gloo, CPU processes)."""
from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from models.config import PTalkerConfig
from ptalker.augmentation import TrainStep
from ptalker.batches import batch_losses, one_hot
from ptalker.checkpoint import build_model, read_checkpoint
from ptalker.data import LengthBatchSampler, TalkingFaceDataset, collate, load_splits, parse_sentences
from ptalker.datasets import resolve_dataset
from ptalker.errors import UserError
from ptalker.layout import sentence_of
from ptalker.mesh import load_templates, read_mesh
from ptalker.metrics import lip_vertex_error
from ptalker.trainer import TrainConfig, lr_factor, train
from ptalker.validation import validation_lip_error, validation_loss
from ptalker.weight_average import WeightAverage
from synthetic import write_dataset

TINY = ["--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1", "--style_dim", "16",
        "--gat_dim", "4", "--feature_dim", "16"]
SUBJECTS = ["S1", "S2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "talk", ["S1", "S2", "S3"], range(1, 5), fps=30,
                         seconds=0.6)


def command(root: Path, encoder: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", str(root), "--vertice_dim", "126", "--train_subjects", "S1 S2", "--val_subjects", "S3",
            "--test_subjects", "S3", "--train_sentences", "1-4", "--val_sentences", "1-2",
            "--test_sentences", "3-3", "--audio_model", str(encoder), "--lip_mask", "regions/lve.txt",
            "--upper_face_mask", "regions/fdd.txt", "--save_path", str(out / "save"),
            "--result_path", str(out / "result"), "--lr", "1e-3", *TINY, *extra]


def quiet_env() -> dict:
    # one thread per process: the runs share two cores, and results must not depend on scheduling
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def splits_and_model(root: Path, encoder: Path):
    preset = resolve_dataset(root)
    data = load_splits(preset, 126, SUBJECTS, {"train": (SUBJECTS, range(1, 5)), "val": (["S3"], range(1, 3))})
    sets = {k: TalkingFaceDataset(v, preset.capture_stride) for k, v in data.items()}
    _, faces = read_mesh(root / "templates" / "mesh.ply")
    config = PTalkerConfig(vertice_dim=126, feature_dim=16, n_subjects=2, audio_model=str(encoder), decoder_layers=1,
                           motion_layers=1, motion_conv_layers=1, style_dim=16, gat_dim=4)
    torch.manual_seed(0)
    model = build_model(config, faces)
    meta = {"train_subjects": SUBJECTS, "faces": faces, "templates": load_templates(root / "templates.pkl")}
    return sets, model, meta


# ---------------------------------------------------------------- batches


def test_sentence_ranges_parse_one_range_or_several():
    assert parse_sentences("1-40") == range(1, 41)
    joined = parse_sentences("1-2,41-43")
    assert tuple(joined) == (1, 2, 41, 42, 43) and sentence_of("synth01_sentence42") in joined
    assert 3 not in joined and parse_sentences(range(3, 5)) == range(3, 5)
    # a sentence number is all the digits that end the name, however many
    assert [sentence_of(n) for n in ("FaceTalk_170725_00137_TA_sentence07", "F2_e37", "synth01_sentence105",
                                      "synth01_intro")] == [7, 37, 105, None]
    for bad in ("1-x", "1-2,", "7"):
        with pytest.raises(UserError, match="must look like 1-40"):
            parse_sentences(bad)


def test_sampler_buckets_by_length_and_splits_batches_over_ranks():
    lengths = [50, 12, 31, 12, 47, 30, 90, 11, 29, 48, 13]
    single = LengthBatchSampler(lengths, 3, seed=5)
    single.set_epoch(1)
    batches = list(single)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))   # buckets do not overlap
    assert list(single) == batches                       # the epoch alone decides the order
    single.set_epoch(2)
    assert list(single) != batches

    ranks = [LengthBatchSampler(lengths, 3, seed=5, rank=r, world=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(1)
    # 4 batches padded to 6 by repeating the first ones: the same number of steps on every rank
    assert [list(s) for s in ranks] == [[batches[0], batches[3]], [batches[1], batches[0]], [batches[2], batches[1]]]
    assert [len(s) for s in ranks] == [2, 2, 2]


def test_equal_length_batch_loss_is_the_mean_of_single_clip_losses(dataset, tiny_wav2vec2):
    sets, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    model.eval()                                       # no dropout: the same network for every call
    torch.nn.init.normal_(model.head.weight, std=0.05)
    items = [sets["train"][i] for i in (0, 1, 4, 5)]     # two clips of each speaker, all 18 frames
    step = TrainStep(model, torch.arange(10))         # what train() runs on every batch
    with torch.no_grad():
        batched = step(collate(items))
        singles = [step(collate([x])) for x in items]
    w = model.config.losses
    for name in batched:
        if name.startswith("infonce"):                 # other clips of a batch add negatives by design
            continue
        mean = torch.stack([s[name] for s in singles]).mean()
        if name == "total":
            infonce = lambda t: w.contrastive * (w.infonce_audio * t["infonce_audio"]     # noqa: E731
                                                 + w.infonce_motion * t["infonce_motion"])
            mean = torch.stack([s["total"] - infonce(s) for s in singles]).mean() + infonce(batched)
        assert batched[name].item() == pytest.approx(mean.item(), rel=1e-4, abs=1e-9), name


def test_identity_dropout_trains_clips_as_unseen_speakers_or_from_reference_motion(dataset, tiny_wav2vec2):
    sets, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    model.eval()                                                 # no dropout inside the network
    torch.nn.init.normal_(model.head.weight, std=0.05)
    batch = collate([sets["train"][i] for i in (0, 4)])
    no_one_hot = torch.full_like(batch["subject"], -1)
    unseen = batch_losses(model, batch, None, no_one_hot)["rec"]
    seen = batch_losses(model, batch, None)["rec"]
    assert not torch.isclose(unseen, seen)                       # the one-hot matters
    torch.manual_seed(1)
    torch.rand(2)
    motion_only = torch.rand(2) < 0.5                            # the draws TrainStep makes after seed 1
    assert motion_only.tolist() == [True, False]                 # one clip in each mode
    mixed = batch_losses(model, batch, None, no_one_hot, motion_style_only=motion_only)["rec"]
    assert not torch.isclose(mixed, unseen)                      # so does the audio style
    always, never = TrainStep(model, None, 0.999999), TrainStep(model, None, 0.0)
    always.training = never.training = True                      # the wrappers only
    torch.manual_seed(1)
    assert torch.isclose(always(batch)["rec"], mixed) and torch.isclose(never(batch)["rec"], seen)
    always.training = False                                      # evaluation never drops it
    assert torch.isclose(always(batch)["rec"], seen)


def test_audio_style_dropout_decodes_clips_from_their_one_hot_without_the_audio_style(dataset, tiny_wav2vec2):
    sets, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    model.eval()                                                 # no dropout inside the network
    torch.nn.init.normal_(model.head.weight, std=0.05)
    batch = collate([sets["train"][i] for i in (0, 4)])
    seen = batch_losses(model, batch, None)["rec"]
    silenced = batch_losses(model, batch, None, motion_style_only=torch.tensor([True, True]))["rec"]
    assert not torch.isclose(silenced, seen)                     # the audio style matters
    step = TrainStep(model, None, audio_style_dropout=0.999999)
    step.training = True                                         # the wrapper only
    assert torch.isclose(step(batch)["rec"], silenced)           # one-hot kept, audio style dropped
    # a clip already without its one-hot (identity dropout) keeps its own mode: only the kept ones drop
    both = TrainStep(model, None, identity_dropout=0.5, audio_style_dropout=0.999999)
    both.training = True
    torch.manual_seed(1)
    dropped = torch.rand(2) < 0.5                                # the draws TrainStep makes after seed 1
    reference_mode = dropped & (torch.rand(2) < 0.5)
    assert dropped.tolist() == [False, True] and not reference_mode.any()   # clip 1 trains as unseen
    condition = batch["subject"].masked_fill(dropped, -1)
    expected = batch_losses(model, batch, None, condition, motion_style_only=~dropped | reference_mode)["rec"]
    torch.manual_seed(1)
    assert torch.isclose(both(batch)["rec"], expected)
    step.training = False                                        # evaluation keeps the audio style
    assert torch.isclose(step(batch)["rec"], seen)


def test_self_feed_trains_on_a_past_mixed_from_predictions_and_captured_frames(dataset, tiny_wav2vec2):
    sets, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    model.eval()                                                 # no dropout: predictions are repeatable
    torch.nn.init.normal_(model.head.weight, std=0.05)
    batch = collate([sets["train"][i] for i in (0, 4)])
    step = TrainStep(model, None, self_feed=0.5)
    step.training = True                                         # the wrapper only
    torch.manual_seed(3)
    mixed = step._mix_in_predictions(batch, None)
    predicted = model(batch["audio"], batch["vertices"], batch["template"],
                      one_hot(batch["subject"], 2)).vertices
    from_prediction = (mixed == predicted).all(-1)
    from_capture = (mixed == batch["vertices"]).all(-1)
    assert (from_prediction | from_capture).all()                # every frame is one or the other
    assert from_prediction.float().mean().item() == pytest.approx(0.5, abs=0.2) and not from_capture.all()
    torch.manual_seed(3)
    fed = step(batch)["rec"]                                     # the same draw inside the training step
    assert torch.isclose(fed, batch_losses(model, batch, None, fed_back=mixed)["rec"])
    assert not torch.isclose(fed, batch_losses(model, batch, None)["rec"])
    unseen = step._mix_in_predictions(batch, torch.tensor([-1, int(batch["subject"][1])]))
    assert torch.equal(unseen[0], batch["vertices"][0])          # trained as unseen: the captured past
    assert not torch.equal(unseen[1], batch["vertices"][1])
    step.training = False                                        # validation stays teacher-forced
    assert torch.isclose(step(batch)["rec"], batch_losses(model, batch, None)["rec"])


class Shortened(TalkingFaceDataset):
    """Clip i keeps its first (18 - 3i) frames and their speech: clips of different lengths."""

    def frames(self, i: int) -> int:
        return super().frames(i) - 3 * i

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        frames = self.frames(i)
        return {**item, "vertices": item["vertices"][:frames], "audio": item["audio"][: round(frames * 16000 / 30)]}


def test_lip_error_validation_scores_generation_as_the_test_does(dataset, tiny_wav2vec2):
    _, model, _ = splits_and_model(dataset, tiny_wav2vec2)
    model.eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    preset = resolve_dataset(dataset)
    val = Shortened(load_splits(preset, 126, SUBJECTS, {"val": (["S1", "S3"], range(1, 3))})["val"])
    lips = torch.arange(0, 42, 3)
    errors = []          # each clip alone, as the test animates it: own condition, or every one if unseen
    for i in range(len(val)):
        item = val[i]
        conditions = [item["subject"]] if item["subject"] >= 0 else range(2)
        for c in conditions:
            pred = model.generate(item["audio"][None], item["template"][None], one_hot(torch.tensor([c]), 2),
                                  frames=len(item["vertices"]))[0]
            errors.append(lip_vertex_error(pred.numpy(), item["vertices"].numpy(), lips.numpy()))
    expected = np.concatenate(errors).mean()
    assert len(errors) == 6 and len({len(e) for e in errors}) == 4
    for batch_size in (1, 4):        # padded batches of different lengths score as clips alone
        assert validation_lip_error(model, val, lips, "cpu", batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- schedule and guards


def test_learning_rate_schedules():
    constant = lr_factor("constant", 4, 20)
    assert [constant(s) for s in (0, 1, 3, 4, 19)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    cosine = lr_factor("cosine", 0, 10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert lr_factor("cosine", 2, 12)(7) == pytest.approx(0.5)


def test_weight_average_follows_the_weights_and_swaps_in_and_out():
    layer = torch.nn.Linear(2, 1)
    start = layer.weight.detach().clone()
    average = WeightAverage(layer, 0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update()     # warm-up horizon: decay min(0.5, 1/10)
    assert torch.allclose(average.average["weight"], 0.1 * start + 0.9 * (start + 1))
    for _ in range(30):
        average.update()  # decay 0.5 from the 9th update on: the average converges to the weights
    assert torch.allclose(average.average["weight"], start + 1, atol=1e-4)
    with torch.no_grad():
        layer.weight.add_(2.0)
    average.update()
    expected = average.average["weight"].clone()
    with average.swapped_in():
        assert torch.equal(layer.weight, expected)
    assert torch.equal(layer.weight, start + 1 + 2)   # the raw weights, rounded as they were updated
    copy = WeightAverage(torch.nn.Linear(2, 1), 0.5)
    copy.load_state_dict(average.state_dict())
    assert copy.updates == 32 and torch.equal(copy.average["weight"], expected)


def test_moving_average_is_what_validation_and_the_best_checkpoint_use(dataset, tiny_wav2vec2, tmp_path):
    sets, model, meta = splits_and_model(dataset, tiny_wav2vec2)
    settings = TrainConfig(max_epoch=1, lr=1e-3, batch_size=2, best_path=tmp_path / "m.pth",
                             last_path=tmp_path / "m_last.pth", ema=0.9)
    train(model, sets["train"], sets["val"], None, settings, meta)
    best, last = read_checkpoint(settings.best_path), read_checkpoint(settings.last_path)
    average = last["extra"]["ema"]["average"]
    assert last["extra"]["ema"]["updates"] == 4
    assert all(torch.equal(best["state_dict"][k], v) for k, v in average.items())
    assert not torch.equal(best["state_dict"]["head.weight"], last["state_dict"]["head.weight"])
    # the raw weights go on training
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.load_state_dict(best["state_dict"])
        val = validation_loss(model, sets["val"], None, "cpu")
    assert val == pytest.approx(best["extra"]["val_loss"], rel=1e-6)
    settings.max_epoch, settings.resume, settings.ema = 2, True, 0.99
    with pytest.raises(UserError, match="averaged its weights with --ema 0.9, not 0.99"):
        train(model, sets["train"], sets["val"], None, settings, meta)


def test_non_finite_states_stop_before_any_checkpoint_is_written(dataset, tiny_wav2vec2, tmp_path, capsys,
                                                                  monkeypatch):
    sets, model, meta = splits_and_model(dataset, tiny_wav2vec2)
    settings = TrainConfig(max_epoch=1, lr=1e-3, batch_size=2, best_path=tmp_path / "m.pth",
                             last_path=tmp_path / "m_last.pth", log_path=tmp_path / "m_log.csv", amp="bf16",
                             lr_schedule="cosine", warmup_steps=1, grad_clip=1.0)
    train(model, sets["train"], sets["val"], None, settings, meta)
    assert "--amp bf16 needs CUDA" in capsys.readouterr().err
    saved = {p: p.read_bytes() for p in (settings.best_path, settings.last_path)}
    settings.max_epoch, settings.resume = 2, True

    # a gradient turns NaN while the loss stays finite
    hook = model.head.weight.register_hook(lambda g: g * math.nan)
    with pytest.raises(UserError, match=r"non-finite gradients at epoch 2, step 5 \(S\d_sentence0\d"):
        train(model, sets["train"], sets["val"], None, settings, meta)
    hook.remove()
    # an optimiser step that overflows a parameter
    adam_step = torch.optim.Adam.step

    def overflowing_step(self, *args, **kwargs):
        adam_step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.fill_(math.inf)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", overflowing_step)
        # parameters are checked with the losses, every --log_every steps and at the epoch's end
        with pytest.raises(UserError, match="non-finite parameters after the optimiser step at epoch 2, step 8 "
                                            r"\(the check after step 4 found none\)"):
            train(model, sets["train"], sets["val"], None, settings, meta)
    # a clip whose motion holds a NaN
    sets["train"].sequences[0].template = sets["train"].sequences[0].template * math.nan
    name = sets["train"].sequences[0].name
    with pytest.raises(UserError, match=rf"non-finite loss at epoch 2, step \d, batch \d \(.*{name}"):
        train(model, sets["train"], sets["val"], None, settings, meta)
    assert {p: p.read_bytes() for p in saved} == saved
    assert read_checkpoint(settings.last_path)["extra"]["epoch"] == 1
    # the best checkpoint so far was chosen by another measure
    settings.val_metric = "lve"
    with pytest.raises(UserError, match="needs the lip region"):
        train(model, sets["train"], sets["val"], None, settings, meta)
    with pytest.raises(UserError, match="chose its best checkpoint by validation loss, not lve"):
        train(model, sets["train"], sets["val"], torch.arange(10), settings, meta)


# ---------------------------------------------------------------- main.py runs


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          env=quiet_env(), timeout=600)


def log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_checkpoints(dataset, tiny_wav2vec2, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # the resumable state after every epoch, and the running loss on the bar after every step
    often = ("--max_epoch", "3", "--ema", "0.5", "--last_checkpoint_every", "1", "--log_every", "1")
    done = run_main(*command(dataset, tiny_wav2vec2, whole, *often))
    assert done.returncode == 0, done.stderr

    stderr = tmp_path / "killed.err"
    with open(stderr, "w") as err:
        process = subprocess.Popen([sys.executable, str(ROOT / "main.py"),
                                    *command(dataset, tiny_wav2vec2, killed, *often)],
                                   stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=quiet_env())
    try:
        deadline = time.time() + 300
        # a step of epoch 2 is done once its bar shows a loss (its step counter may lag: tqdm's
        # refresh interval is longer than a whole epoch of this tiny model)
        while not re.search(r"epoch 2/3:[^\r\n]*loss=", stderr.read_text()):
            assert process.poll() is None and time.time() < deadline, stderr.read_text()
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert read_checkpoint(killed / "save" / "talk_last.pth")["extra"]["epoch"] == 1

    resumed = run_main(*command(dataset, tiny_wav2vec2, killed, *often, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    for name in ("talk.pth", "talk_last.pth"):
        a, b = (read_checkpoint(run / "save" / name) for run in (whole, killed))
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)
        assert a["extra"]["epoch"] == b["extra"]["epoch"]
    best = read_checkpoint(whole / "save" / "talk.pth")["extra"]
    assert best["epoch"] >= 2, "the best epoch should come after the interruption"

    rows = log_rows(whole / "save" / "talk_log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and [r["steps"] for r in rows] == ["8", "16", "24"]
    assert {"rec", "vel", "total", "val", "lr"} <= set(rows[0])
    assert log_rows(killed / "save" / "talk_log.csv") == rows
    assert re.search(r"epoch 3: train rec=\S+ .*total=\S+ \| val \S+.* \| lr 0\.001 \| 24 steps", done.stderr)


LAUNCH = """
import os, runpy, sys
import torch
import ptalker.experiment as experiment
import ptalker.trainer as trainer

trained = experiment.train

def train(model, *args, **kwargs):
    path = trained(model, *args, **kwargs)
    torch.save(model.state_dict(), os.path.join({out!r}, "rank" + os.environ["RANK"] + ".pt"))
    return path

experiment.train = train

built = experiment.build_model
def build_model(*args, **kwargs):   # no layerdrop: every parameter gets a gradient in every step
    model = built(*args, **kwargs)
    model.audio.model.config.layerdrop = 0.0
    return model

experiment.build_model = build_model
wrapped = trainer.DistributedDataParallel
def ddp(*args, **kwargs):   # each rank's settings in a file of its own (the ranks share one stderr)
    settings = {{k: kwargs[k] for k in ("broadcast_buffers", "find_unused_parameters")}}
    with open(os.path.join({out!r}, "ddp" + os.environ["RANK"] + ".txt"), "w") as f:
        f.write(repr(settings))
    return wrapped(*args, **kwargs)

trainer.DistributedDataParallel = ddp
sys.argv[0] = {main!r}
runpy.run_path({main!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_replicas(dataset, tiny_wav2vec2, tmp_path):
    launch = tmp_path / "launch.py"    # main.py, plus each rank saving its trained weights
    launch.write_text(LAUNCH.format(out=str(tmp_path), main=str(ROOT / "main.py")))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(launch), *command(dataset, tiny_wav2vec2, tmp_path, "--max_epoch", "1",
                                                 "--batch_size", "2", "--gradient_accumulation_steps", "2",
                                                 "--val_metric", "lve")],
                          capture_output=True, text=True, cwd=ROOT, env=quiet_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    # no buffers broadcast by DDP, and no search for unused parameters where none can be unused
    assert [(tmp_path / f"ddp{r}.txt").read_text() for r in (0, 1)] == \
        ["{'broadcast_buffers': False, 'find_unused_parameters': False}"] * 2
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # weights and the InfoNCE queue alike: rank 0's queue goes to the other ranks after every
    # forward pass (DDP itself broadcasts no buffers)
    assert {k for k in ranks[0] if "queue" in k} == {"clip_heads.queue", "clip_heads.queued"}
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    best = read_checkpoint(tmp_path / "save" / "talk.pth")["state_dict"]
    weights = [k for k in ranks[0] if not k.startswith("clip_heads.queue")]
    assert all(torch.equal(best[k], ranks[0][k]) for k in weights)
    assert re.search(r"validation lve \d", done.stderr)      # the clips' generation errors, gathered from both ranks
    # 8 clips in 4 batches, 2 per rank, one accumulated step; rank 0 alone logs and tests
    assert log_rows(tmp_path / "save" / "talk_log.csv")[0]["steps"] == "1"
    assert done.stderr.count("epoch 1: train") == 1 and done.stderr.count("wrote 2 predictions") == 1
    assert sorted(p.name for p in (tmp_path / "result").glob("*.npy")) == [
        "S3_sentence03_condition_S1.npy", "S3_sentence03_condition_S2.npy"]
