"""What makes training faithful on the real datasets: BIWI's speech cut (not stretched) to the
capture, losses that do not depend on the vertex unit, InfoNCE negatives from other clips, and a
short training run on the real FLAME topology that beats the static template."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import ROOT, make_model, shared_file, tiny_config
from models import PTalker
from models.audio import load_speech_model
from models.losses import compute_losses, info_nce, topk_contrast
from ptalker.data import Sequence, TalkingFaceDataset
from ptalker.layout import split_result_stem, subject_of
from ptalker.mesh import load_templates, mesh_edges, read_mesh
from ptalker.metrics import _read_ids_text, lip_vertex_error
from synthetic import tiny_mesh, write_dataset

RATE = 16000


def click_speech(seconds: float, click_at: float) -> np.ndarray:
    """Silence with one loud click."""
    audio = np.zeros(int(seconds * RATE), dtype=np.float32)
    audio[int(click_at * RATE)] = 1.0
    return audio


def public_cut(conv: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
    """The public code's BIWI alignment, written from its description: native CNN steps (B, L, C)
    made even, cut to 2 * frames; when shorter, the motion is cut to steps // 2 frames."""
    if conv.shape[1] % 2:
        conv = conv[:, :-1]
    if conv.shape[1] > 2 * frames:
        conv = conv[:, : 2 * frames]
    return conv, min(frames, conv.shape[1] // 2)


def biwi_clip(tmp_path: Path, seconds: float, frames: int, template: np.ndarray) -> TalkingFaceDataset:
    motion = np.repeat(template.reshape(1, -1), frames, axis=0)
    np.save(tmp_path / f"clip{frames}.npy", motion)
    sequence = Sequence(f"F2_e{frames}", "F2", tmp_path / f"clip{frames}.npy", click_speech(seconds, 1.0),
                        template.reshape(-1), 0)
    return TalkingFaceDataset([sequence])


def test_biwi_speech_is_cut_to_the_capture_so_a_click_drives_its_own_frame(tiny_wav2vec2, tmp_path):
    model, template = make_model(tiny_wav2vec2, ratio=2)
    encoder = model.audio
    for frames in (60, 90):   # a 3 s wav with a 2.4 s capture, and with a 3.6 s one
        dataset = biwi_clip(tmp_path, 3.0, frames, template.numpy())
        dataset.speech_frames = model.speech_frames
        item = dataset[0]
        used = len(item["vertices"])
        audio = item["audio"][None]
        aligned = encoder._aligned_conv(audio, 2 * used)                               # (1, C, 2T)
        normalised = (audio - audio.mean()) / (audio.std() + 1e-7)
        reference, public_frames = public_cut(encoder.conv_features(normalised).transpose(1, 2), frames)
        assert used == public_frames == dataset.frames(0)
        torch.testing.assert_close(aligned.transpose(1, 2), reference)
        # the steps whose receptive field holds the click belong to frame 1.0 s * 25 fps
        deviation = (aligned[0] - aligned[0].median(dim=1, keepdim=True).values).abs().sum(0)
        clicked = torch.nonzero(deviation > 0.5 * deviation.max()).flatten() // 2
        assert set(clicked.tolist()) <= {24, 25}
    assert model.speech_frames(3 * RATE) == 74 == (((3 * RATE - 400) // 320 + 1) // 2)


def test_biwi_generation_defaults_to_the_frames_the_speech_drives(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2, ratio=2)
    audio = torch.randn(1, 2 * RATE)
    assert model.generate(audio, template).shape[1] == model.speech_frames(2 * RATE) == 49


def test_losses_and_their_gradients_do_not_depend_on_the_vertex_unit(tiny_wav2vec2):
    """Scaling every vertex by 1000 (metres -> millimetres) with the offset scale measured on the data
    gives the same loss terms and the same gradients, so the balance of auxiliary and reconstruction
    gradients is the one at every scale."""
    vertices, faces = tiny_mesh()
    edges = torch.from_numpy(mesh_edges(faces, len(vertices)))
    g = torch.Generator().manual_seed(3)
    audio = torch.randn(2, RATE // 2, generator=g)
    offsets = 0.004 * torch.randn(2, 15, vertices.size, generator=g)
    template = torch.from_numpy(vertices.reshape(1, -1)).repeat(2, 1)
    results = []
    for unit in (1.0, 1000.0):
        scale = float((offsets * unit).square().mean().sqrt())
        torch.manual_seed(0)
        config = tiny_config(vertices, tiny_wav2vec2, motion_scale=scale)
        model = PTalker(config, load_speech_model(str(tiny_wav2vec2)), edges).train()
        torch.nn.init.normal_(model.head.weight, std=0.05)
        torch.manual_seed(1)   # the same dropout draws
        target = unit * (template.unsqueeze(1) + offsets)
        out = model(audio, target, unit * template, torch.eye(3)[:2])
        terms = compute_losses(out, target, config, torch.tensor([0, 1]), torch.arange(10), None,
                               model.contrast_scale)
        params = [p for p in model.parameters() if p.requires_grad]
        auxiliary = terms["total"] - terms["reconstruction"]
        grads = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True,
                                                                      allow_unused=True) if g is not None])
                 for loss in (terms["reconstruction"], auxiliary)]
        results.append(({k: v.item() for k, v in terms.items()}, grads))
    (terms_m, grads_m), (terms_mm, grads_mm) = results
    for name in terms_m:
        assert np.isclose(terms_m[name], terms_mm[name], rtol=1e-3, atol=1e-6), name
    for small, large in zip(grads_m, grads_mm):
        torch.testing.assert_close(small, large, rtol=1e-3, atol=1e-7)
    ratio = lambda grads: float(grads[1].norm() / grads[0].norm())   # noqa: E731
    assert np.isclose(ratio(grads_m), ratio(grads_mm), rtol=1e-3)


def test_offset_scale_is_the_rms_of_the_captured_offsets(tmp_path):
    vertices, _ = tiny_mesh()
    clips = []
    for k, amplitude in enumerate((0.001, 0.003)):
        np.save(tmp_path / f"c{k}.npy", vertices.reshape(1, -1) + np.full((5, vertices.size), amplitude, np.float32))
        clips.append(Sequence(f"S1_sentence0{k}", "S1", tmp_path / f"c{k}.npy", np.zeros(RATE, np.float32),
                              vertices.reshape(-1), 0))
    assert np.isclose(TalkingFaceDataset(clips).offset_rms(), np.sqrt((0.001 ** 2 + 0.003 ** 2) / 2), rtol=1e-4)


def test_infonce_takes_negatives_from_other_clips_only():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    assert info_nce(a, b).item() == 0.0                       # one clip and nothing queued: no negatives
    queue_a, queue_b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert info_nce(a, b, queue_a, queue_b).item() > 0
    # matching summaries score lower than mismatched ones, against the same negatives
    assert info_nce(a, a, queue_a, queue_a) < info_nce(a, -a, queue_a, queue_a)
    # rows marked unfilled count as absent: the same as leaving them out
    valid = torch.tensor([True, False, True, False, False])
    torch.testing.assert_close(info_nce(a, b, queue_a, queue_b, valid), info_nce(a, b, queue_a[valid], queue_b[valid]))
    assert info_nce(a, b, queue_a, queue_b, torch.zeros(5, dtype=torch.bool)).item() == 0.0


def test_clip_queue_fills_in_training_and_rests_in_evaluation(tiny_wav2vec2):
    model, template = make_model(tiny_wav2vec2)
    audio, motion = torch.randn(1, RATE // 2), template.unsqueeze(1).repeat(1, 15, 1)
    model.eval()
    model(audio, motion, template, torch.eye(3)[:1])
    assert int(model.clip_heads.queued) == 0
    model.train()
    first = model(audio, motion, template, torch.eye(3)[:1])
    second = model(audio, motion, template, torch.eye(3)[:1])
    assert first.clips.negatives_valid.sum() == 0 and second.clips.negatives_valid.tolist()[:2] == [True, False]
    torch.testing.assert_close(second.clips.negatives[:, 0], first.clips.stacked()[:, 0])
    assert "clip_heads.queue" in model.state_dict()   # resumed runs continue with the same negatives


def test_topk_contrast_rewards_the_frame_correspondence():
    """Each audio frame's positive is its own motion frame: shuffling the motion frames raises the
    loss (the public form, whose positives are the row's own top-k values, would not change)."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(40, 16, generator=g)
    motion = audio + 0.1 * torch.randn(40, 16, generator=g)
    scale = torch.tensor(np.log(1 / 0.07))
    shuffled = motion[torch.randperm(40, generator=g)]
    assert topk_contrast(audio, motion, scale, 0.15) < 0.5 * topk_contrast(audio, shuffled, scale, 0.15)


@pytest.mark.slow
def test_default_weights_train_below_the_static_template_on_the_flame_topology(tiny_wav2vec2, tmp_path):
    """VOCASET's scale: metres, lips opening by millimetres, default loss weights, no override."""
    vertices, faces = read_mesh(shared_file("flame/FLAME_sample.ply"))
    lips = _read_ids_text(shared_file("flame/ptalker_vocaset_lve.txt"))
    root = write_dataset(tmp_path / "flame", ["S1", "S2", "S3"], range(1, 7), fps=30, seconds=1.0,
                         mesh=(vertices, faces, lips), amplitude=0.003)
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--dataset", str(root), "--train_subjects", "S1 S2 S3",
         "--val_subjects", "S1 S2 S3", "--test_subjects", "S1 S2 S3", "--train_sentences", "1-5",
         "--val_sentences", "5-5", "--test_sentences", "6-6", "--audio_model", str(tiny_wav2vec2),
         "--decoder_layers", "1", "--motion_layers", "1", "--motion_conv_layers", "1", "--style_dim", "16",
         "--gat_dim", "4", "--feature_dim", "32", "--lr", "3e-3", "--max_epoch", "6"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
    templates = load_templates(root / "templates.pkl")
    predicted, static = [], []
    for path in sorted((root / "result").glob("*.npy")):
        name, _ = split_result_stem(path.stem)
        gt = np.load(root / "vertices_npy" / f"{name}.npy")
        predicted.append(lip_vertex_error(np.load(path), gt, lips))
        static.append(lip_vertex_error(np.repeat(templates[subject_of(name)].reshape(1, -1), len(gt), 0), gt, lips))
    assert len(predicted) == 3
    ratio = np.concatenate(predicted).mean() / np.concatenate(static).mean()
    assert ratio < 0.5, ratio


def test_dataset_check_lists_clips_whose_speech_and_capture_lengths_differ(tmp_path):
    from ptalker.dataset_check import check_dataset, format_report

    root = write_dataset(tmp_path / "BIWI", ["F2"], [1, 2, 3], fps=25, seconds=1.0)
    soundfile.write(root / "wav" / "F2_sentence02.wav", np.zeros(int(1.2 * RATE), np.float32), RATE)   # +5 frames
    soundfile.write(root / "wav" / "F2_sentence03.wav", np.zeros(int(1.03 * RATE), np.float32), RATE)  # +0.75
    report = check_dataset(root, fps=25)
    assert [m.split(":")[0] for m in report.length_mismatches] == ["F2_sentence02"]
    assert report.ok and "F2_sentence02: speech 1.20 s = 30.0 frames, capture 25 frames" in format_report(report)


def test_a_checkpoint_of_the_earlier_network_is_refused_in_one_line(tmp_path):
    from ptalker.checkpoint import read_checkpoint
    from ptalker.errors import UserError

    torch.save({"format": "ptalker-checkpoint-1", "config": {}}, tmp_path / "old.pth")
    try:
        read_checkpoint(tmp_path / "old.pth")
    except UserError as exc:
        assert "earlier version" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("an earlier checkpoint was accepted")


def test_self_feeding_queues_each_clip_once(tiny_wav2vec2):
    """The self-feed pass predicts the past without gradients and leaves the InfoNCE queue alone, so
    the trained pass never finds its own clips among the negatives."""
    from ptalker.augmentation import TrainStep

    model, template = make_model(tiny_wav2vec2)
    audio, motion = torch.randn(2, RATE // 2), template.unsqueeze(1).repeat(2, 15, 1)
    batch = {"audio": audio, "vertices": motion, "template": template.repeat(2, 1), "subject": torch.tensor([0, 1]),
             "audio_lengths": torch.tensor([RATE // 2] * 2), "frame_lengths": torch.tensor([15, 15])}
    step = TrainStep(model, None, self_feed=1.0).train()
    step(batch)
    assert int(model.clip_heads.queued) == 2
    step(batch)
    assert int(model.clip_heads.queued) == 4
