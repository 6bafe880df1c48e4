"""SynthTalk: the procedural face and its rig, espeak-ng driven motion, and the corpus layout."""
from __future__ import annotations

import ctypes.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ptalker.errors import UserError
from SynthTalk.face import CONTROLS, FaceShape, build_face

ROOT = Path(__file__).resolve().parent.parent
needs_espeak = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None,
                                  reason="libespeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def face():
    return build_face()


def test_face_is_deterministic_and_valid(face):
    import trimesh

    again = build_face()
    np.testing.assert_array_equal(face.vertices, again.vertices)
    np.testing.assert_array_equal(face.faces, again.faces)
    v, f = face.vertices, face.faces
    assert 2000 <= len(v) <= 5000
    assert v.dtype == np.float32 and np.isfinite(v).all()
    assert f.min() == 0 and f.max() == len(v) - 1
    size = v.max(axis=0) - v.min(axis=0)
    assert 0.12 < size[0] < 0.2 and 0.2 < size[1] < 0.35 and 0.15 < size[2] < 0.25   # metres
    mesh = trimesh.Trimesh(v, f, process=False)
    assert (mesh.area_faces > 0).all()
    for body in mesh.split(only_watertight=False):
        assert body.is_watertight and body.is_winding_consistent and body.volume > 0
    nose_tip = v[np.argmax(v[:, 2])]
    assert abs(nose_tip[0]) < 1e-3 and -0.03 < nose_tip[1] < 0.0    # faces +z, nose on the midline


def test_identities_share_topology(face):
    other = build_face(FaceShape.random(np.random.default_rng(3)))
    np.testing.assert_array_equal(other.faces, face.faces)
    assert other.vertices.shape == face.vertices.shape
    assert np.abs(other.vertices - face.vertices).max() > 1e-3
    for name, ids in face.regions.items():
        np.testing.assert_array_equal(other.regions[name], ids)


def test_regions(face):
    lips, upper = face.regions["lips"], face.regions["upper_face"]
    assert len(lips) > 100 and len(upper) > 300
    assert not np.intersect1d(lips, upper).size
    assert np.isin(face.mouth_pairs, lips).all()
    assert np.isin(face.regions["eyelids"], upper).all()
    # lips sit low and in front, the upper face high
    assert face.vertices[lips, 1].max() < face.vertices[upper, 1].min()


def _moved(face, **controls):
    return np.linalg.norm(face.pose(controls)[0] - face.vertices, axis=1)


def test_rig_controls_move_their_regions(face):
    rest = face.vertices
    upper_lip, lower_lip = face.mouth_pairs[:, 0], face.mouth_pairs[:, 1]
    forehead, lids = face.regions["forehead"], face.regions["eyelids"]

    opened = face.pose({"jaw_open": 1.0})[0]
    assert (rest[lower_lip, 1] - opened[lower_lip, 1]).max() > 0.012
    assert np.abs(opened[upper_lip] - rest[upper_lip]).max() < 0.002
    assert _moved(face, jaw_open=1.0)[forehead].max() < 1e-5
    assert _moved(face, jaw_open=1.0)[lids].max() < 1e-6

    blink = _moved(face, blink=1.0)
    assert blink[lids].max() > 0.005
    assert blink[face.regions["lips"]].max() < 1e-6

    brow = face.pose({"brow_raise": 1.0})[0]
    assert (brow[forehead, 1] - rest[forehead, 1]).max() > 0.004
    assert _moved(face, brow_raise=1.0)[face.regions["lips"]].max() < 1e-6

    for name in ("lip_round", "lip_spread", "upper_lip_raise", "lower_lip_tuck", "smile", "mouth_left"):
        moved = _moved(face, **{name: 1.0})
        assert moved[face.regions["lips"]].max() > 0.002, name
        assert moved[forehead].max() < 1e-6, name

    # pressing seals the lips whatever the jaw does; the rest pose is closed too
    assert face.lip_gap(face.pose({"jaw_open": 0.6}))[0] > 0.008
    assert face.lip_gap(face.pose({"jaw_open": 0.6, "lip_press": 1.0}))[0] < 1e-6
    assert face.lip_gap(rest[None])[0] < 1e-9

    turned = face.pose({"head_yaw": 0.2})[0]
    assert np.abs(turned - rest)[face.regions["forehead"], 0].max() > 0.01
    neck_bottom = rest[:, 1] < rest[:, 1].min() + 1e-6
    np.testing.assert_allclose(turned[neck_bottom], rest[neck_bottom], atol=1e-7)


def test_pose_checks_controls(face):
    assert face.pose({name: np.zeros(3) for name in CONTROLS}).shape == (3, len(face.vertices), 3)
    with pytest.raises(KeyError):
        face.pose({"jaw": 1.0})
    with pytest.raises(ValueError):
        face.pose({"jaw_open": np.zeros(3), "blink": np.zeros(4)})


@needs_espeak
def test_lip_opening_follows_vowels(face):
    from SynthTalk.motion import SpeakingStyle, animate
    from SynthTalk.speech import Synthesizer, Voice
    from SynthTalk.visemes import is_vowel, visemes_for

    utterance = Synthesizer().speak("Bob bought a map, but the old blue boat moved away.", Voice("en-us+m3"))
    assert utterance.sample_rate > 8000 and len(utterance.audio) > utterance.sample_rate
    assert [w.text for w in utterance.words][:3] == ["Bob", "bought", "a"]
    starts = [p.start for p in utterance.phones]
    assert starts == sorted(starts) and utterance.phones[-1].end <= utterance.duration + 1e-9

    style = SpeakingStyle()
    controls = animate(utterance, style, np.random.default_rng(0))
    gap = face.lip_gap(face.pose(controls))
    assert len(gap) == round(utterance.duration * 30)
    vowel, bilabial, label = [], [], np.zeros(len(gap))
    for phone in utterance.phones:
        frame = int(round(((phone.start + phone.end) / 2 - style.lead) * 30))
        if is_vowel(phone.symbol):
            vowel.append(gap[frame])
            label[frame] = 1
        elif visemes_for(phone.symbol) == ("PBM",):
            bilabial.append(gap[frame])
            label[frame] = -1
    assert len(bilabial) >= 6 and max(bilabial) < 0.001          # p/b/m close the lips
    assert np.mean(vowel) > 0.004                                 # vowels open them visibly
    scored = label != 0
    assert np.corrcoef(gap[scored], label[scored] > 0)[0, 1] > 0.5


@needs_espeak
def test_breath_noise_ignores_the_process_rand_state():
    """Issue 18: the breathy variants draw their noise from the C library's rand(), global to the
    process; libpulse draws 12 numbers from it in the first process after a fresh boot."""
    import ctypes

    from SynthTalk.corpus import _synthesizer
    from SynthTalk.speech import Voice

    synthesizer, text, breathy = _synthesizer(), "Bob bought a map.", Voice("en+f2")
    before = synthesizer.speak(text, breathy).audio
    libc = ctypes.CDLL(None)
    for _ in range(12):   # what libpulse does when it names its runtime folder
        libc.rand()
    assert np.array_equal(synthesizer.speak(text, breathy).audio, before)
    # the noise start decides it: another start, the same length, other breath noise
    corpus_start = synthesizer.noise_start
    try:
        synthesizer.noise_start = 0
        other = synthesizer.speak(text, breathy).audio
    finally:
        synthesizer.noise_start = corpus_start
    assert len(other) == len(before) and not np.array_equal(other, before)


def _layout_ok(out: Path, names: list[str]) -> dict[str, np.ndarray]:
    from ptalker.mesh import load_templates, read_mesh

    vertices, faces = read_mesh(out / "templates" / "face.ply")
    templates = load_templates(out / "templates.pkl")
    assert sorted(templates) == sorted({n.split("_")[0] for n in names})
    assert all(t.shape == vertices.shape for t in templates.values())
    for region in ("lve", "fdd"):
        ids = np.array([int(i) for i in (out / "regions" / f"{region}.txt").read_text().split(",")])
        assert ids.min() >= 0 and ids.max() < len(vertices)
    arrays = {}
    for name in names:
        info = soundfile.info(str(out / "wav" / f"{name}.wav"))
        motion = np.load(out / "vertices_npy" / f"{name}.npy")
        assert motion.dtype == np.float32 and motion.shape[1] == vertices.size
        assert abs(len(motion) - info.frames / info.samplerate * 30) <= 1
        arrays[name] = motion
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers
    return arrays


@needs_espeak
@pytest.mark.slow
def test_make_dataset_layout_skip_and_determinism(tmp_path):
    from SynthTalk.corpus import DEVELOPMENT_TEXTS, EXTRA_TEXTS, generate, make_speakers, synthesize

    # sentences 41-42: the texts of 1-2 in the other speaker's voice, moved in the speaker's own style;
    # 73-74: the first two further texts, likewise; 105-106: development texts in the own voice
    names = [f"synth0{s}_sentence{k:02d}" for s in (1, 2) for k in (1, 2, 41, 42, 73, 74, 105, 106)]
    out = tmp_path / "synth"
    summary = generate(out, speakers=2, sentences=2, seed=7, progress=False)
    assert (summary.written, summary.skipped) == (16, 0)
    first = _layout_ok(out, names)
    assert sorted(p.stem for p in (out / "wav").glob("*.wav")) == sorted(names)
    with open(out / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    assert np.abs(templates["synth01"] - templates["synth02"]).max() > 1e-3   # own neutral faces
    for speaker, other in (("synth01", "synth02"), ("synth02", "synth01")):
        for k in (1, 2):
            crossed, donor = f"{speaker}_sentence{40 + k}", f"{other}_sentence0{k}"
            assert (out / "wav" / f"{crossed}.wav").read_bytes() == (out / "wav" / f"{donor}.wav").read_bytes()
            # the donor's timing, the speaker's face and style
            assert len(first[crossed]) == len(first[donor])
            own_face = first[crossed][0].reshape(-1, 3) - templates[speaker]
            assert np.abs(own_face).max() < np.abs(first[crossed][0].reshape(-1, 3) - templates[other]).max()
    roster = make_speakers(2, 7)
    for sentence, voice in ((73, roster[1].voice), (105, roster[0].voice)):
        audio, rate, motion = synthesize(roster[0], 0, sentence, 7, voice)
        name = f"synth01_sentence{sentence}"
        assert np.array_equal(soundfile.read(str(out / "wav" / f"{name}.wav"), dtype="int16")[0], audio)
        assert np.array_equal(first[name], motion)
    manifest = json.loads((out / "synthtalk.json").read_text())
    assert manifest["speakers"]["synth01"]["cross_voice"] == {"41": "synth02", "42": "synth02",
                                                              "73": "synth02", "74": "synth02"}
    assert manifest["sentences"]["73"] == EXTRA_TEXTS[0] and "41" not in manifest["sentences"]
    assert manifest["sentences"]["105"] == DEVELOPMENT_TEXTS[0]
    # a single speaker has no other voice to borrow
    assert generate(tmp_path / "one", speakers=1, sentences=2, seed=7, progress=False).written == 2

    stamp = (out / "vertices_npy" / f"{names[0]}.npy").stat().st_mtime_ns
    again = generate(out, speakers=2, sentences=2, seed=7, progress=False)
    assert (again.written, again.skipped) == (0, 16)
    assert (out / "vertices_npy" / f"{names[0]}.npy").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="seed"):
        generate(out, speakers=2, sentences=2, seed=8, progress=False)
    # A folder made with other sentence texts would mix them under the same names: refused.
    manifest = json.loads((out / "synthtalk.json").read_text())
    manifest["sentences"]["02"] = "Another sentence entirely."
    (out / "synthtalk.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="sentence 02 differs"):
        generate(out, speakers=2, sentences=2, seed=7, progress=False)

    # The CLI with worker processes writes the same corpus for the same seed.
    other = tmp_path / "cli"
    result = subprocess.run([sys.executable, str(ROOT / "SynthTalk" / "make_dataset.py"), "--out", str(other),
                             "--speakers", "2", "--sentences", "2", "--seed", "7", "--workers", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    second = _layout_ok(other, names)
    for name in names:
        np.testing.assert_array_equal(first[name], second[name])
        assert (out / "wav" / f"{name}.wav").read_bytes() == (other / "wav" / f"{name}.wav").read_bytes()


def test_make_dataset_rejects_bad_flags(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "SynthTalk" / "make_dataset.py"), "--out", str(tmp_path),
                             "--sentences", "41"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--sentences" in result.stderr


@needs_espeak
@pytest.mark.slow
def test_pretrain_speech_learns_phonemes_on_a_fixed_batch(one_thread):
    import torch

    from SynthTalk.pretrain_speech import build, make_batch, synthesize, train_step

    clips = synthesize(3, seed=0, heldout=False, progress=False)
    encoder, head = build(hidden=32, layers=1, heads=2, conv_dim=32, seed=0)
    audio, labels = make_batch(clips, np.random.default_rng(0), encoder.model.config)
    assert labels.shape == (3, round(audio.shape[1] / 16000 * 30)) and len(labels.unique()) > 10
    first_conv = encoder.model.feature_extractor.conv_layers[0].conv.weight.detach().clone()
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3)
    losses = [train_step(encoder, head, optimizer, audio, labels) for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    assert not torch.equal(encoder.model.feature_extractor.conv_layers[0].conv.weight, first_conv)  # CNN learns


@needs_espeak
@pytest.mark.slow
def test_pretrain_speech_writes_a_loadable_encoder(tmp_path, one_thread):
    import json

    from transformers import AutoModel

    from SynthTalk.pretrain_speech import main

    out = tmp_path / "speech"
    assert main([str(out), "--utterances", "6", "--heldout", "2", "--epochs", "1", "--batch_size", "3",
                 "--hidden", "16", "--layers", "1", "--heads", "2", "--conv_dim", "16", "--threads", "1"]) == 0
    model = AutoModel.from_pretrained(out)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (16, 1)
    assert json.loads((out / "pretraining.json").read_text())["heldout"]["frames"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["speech"]      # no temp folder left behind
