"""Animation exports: glTF morph animations read back within the tolerance and clean under the Khronos
validator, rig weights by bounded least squares (recovering known weights of the SynthTalk ARKit rig),
Live Link CSV, one-line errors for bad rigs, and the HTML player in a real headless browser."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

import render
from conftest import ROOT
from ptalker.errors import UserError
from ptalker.export import ExportOptions, export_animation
from ptalker.glb_animation import animation_document, read_morph_mesh, read_weights_animation
from ptalker.gltf import read_glb, write_glb
from ptalker.morph_basis import MorphBasis, fit_morph_basis, max_vertex_error, reconstruct
from ptalker.rig import live_link_csv, load_rig, solve_weights, write_rig_animation
from SynthTalk.arkit_rig import arkit_targets, rig_document
from SynthTalk.face import build_face

FPS = 30


@pytest.fixture(scope="module")
def face():
    return build_face()


@pytest.fixture(scope="module")
def motion(face) -> np.ndarray:
    """(40, V, 3): speech-like motion of the SynthTalk face, head motion included."""
    t = np.arange(40) / FPS
    return face.pose({"jaw_open": 0.5 + 0.5 * np.sin(9 * t), "lip_round": np.clip(np.sin(5 * t), 0, 1),
                      "smile": 0.2 + 0.1 * np.cos(3 * t), "blink": np.exp(-((t - 0.6) / 0.08) ** 2),
                      "head_yaw": 0.03 * np.sin(2 * t)})


@pytest.fixture(scope="module")
def rig_path(face, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rig") / "synthtalk_arkit.glb"
    write_glb(path, *rig_document(face.vertices, face.faces))
    return path


def export(tmp: Path, frames, faces, formats, template=None, audio=None, truth=None, **options):
    with contextlib.ExitStack() as stack:
        return export_animation(stack, "clip", frames.reshape(len(frames), -1), faces, FPS, tmp, formats,
                                ExportOptions(**options), audio_path=audio, template=template, truth=truth)


def write_speech(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2, 16000)
    return path


# ---------------------------------------------------------------------------------------------- glb

@pytest.mark.parametrize("tolerance_mm", [0.1, 0.01])
def test_glb_reads_back_within_tolerance(face, motion, tmp_path, tolerance_mm):
    wav = write_speech(tmp_path / "speech.wav", len(motion) / FPS)
    result = export(tmp_path / "out", motion, face.faces, ["glb"], template=face.vertices, audio=wav,
                    tolerance_mm=tolerance_mm)
    assert sorted(p.name for p in result.files) == ["clip.glb", "clip.wav"]
    glb = read_glb(tmp_path / "out" / "clip.glb")
    mesh = read_morph_mesh(glb)
    node = glb.doc["nodes"][mesh.node]
    assert not {"matrix", "translation", "rotation", "scale"} & set(node)   # the prediction's own coordinates
    np.testing.assert_array_equal(mesh.base, face.vertices)
    np.testing.assert_array_equal(mesh.faces, face.faces)
    times, weights = read_weights_animation(glb, mesh.node)
    np.testing.assert_allclose(times, np.arange(len(motion)) / FPS, atol=1e-6)
    error_mm = 1000 * max_vertex_error(reconstruct(mesh.base, mesh.targets, weights), motion)
    assert error_mm <= tolerance_mm
    # the fewest targets: one fewer misses the tolerance
    k = len(mesh.targets)
    assert 2 <= k < len(motion)
    fewer = fit_morph_basis(motion, face.vertices, tolerance_mm / 1000)
    assert len(fewer.targets) == k
    u = fewer.weights[:, :k - 1]
    assert 1000 * max_vertex_error(reconstruct(face.vertices, fewer.targets[:k - 1], u), motion) > tolerance_mm
    extras = glb.doc["asset"]["extras"]
    assert extras["audio"] == "clip.wav" and extras["fps"] == FPS
    assert soundfile.info(str(tmp_path / "out" / "clip.wav")).samplerate == 16000


def test_glb_without_template_uses_mean_frame(face, motion, tmp_path):
    export(tmp_path, motion, face.faces, ["glb"])
    glb = read_glb(tmp_path / "clip.glb")
    mesh = read_morph_mesh(glb)
    np.testing.assert_allclose(mesh.base, motion.mean(axis=0), atol=1e-6)
    _, weights = read_weights_animation(glb, mesh.node)
    assert 1000 * max_vertex_error(reconstruct(mesh.base, mesh.targets, weights), motion) <= 0.1
    assert "audio" not in glb.doc["asset"].get("extras", {})


def validator() -> list[str]:
    script = ROOT / "web" / "validate.mjs"
    if shutil.which("node") is None or not (ROOT / "web" / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("the glTF validator is not installed (bash install.sh installs node and web/node_modules)")
    return ["node", str(script)]


def test_khronos_validator_finds_no_errors(face, motion, rig_path, tmp_path):
    export(tmp_path, motion, face.faces, ["glb", "arkit"], template=face.vertices, arkit_rig=rig_document)
    files = [tmp_path / "clip.glb", tmp_path / "clip_rig.glb", rig_path]
    run = subprocess.run(validator() + [str(p) for p in files], capture_output=True, text=True, timeout=120)
    reports = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["errors"] for r in reports] == [0, 0, 0], run.stdout + run.stderr
    assert run.returncode == 0


def test_validator_catches_a_broken_file(face, tmp_path):
    """The check is real: an index past the vertices is an error."""
    basis = MorphBasis(np.zeros((0, len(face.vertices), 3), np.float32), np.zeros((0, 0), np.float32), 0.0)
    doc, binary = animation_document(face.vertices, face.faces, basis, FPS, "bad")
    binary = bytearray(binary)
    view = doc["bufferViews"][doc["accessors"][doc["meshes"][0]["primitives"][0]["indices"]]["bufferView"]]
    binary[view["byteOffset"]: view["byteOffset"] + 4] = np.uint32(10 ** 6).tobytes()
    write_glb(tmp_path / "bad.glb", doc, bytes(binary))
    run = subprocess.run(validator() + [str(tmp_path / "bad.glb")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and json.loads(run.stdout)["errors"] > 0


# ---------------------------------------------------------------------------------------------- rig

def test_arkit_rig_names_and_controls(face):
    names, targets = arkit_targets(face)
    for name in ("jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight", "browInnerUp",
                 "eyeBlinkLeft", "eyeBlinkRight"):
        assert name in names
    by_name = dict(zip(names, targets))
    # the split halves add up to the control, and left is the subject's left (+x)
    neutral = face.pose({})[0]
    smile = face.pose({"smile": 1.0})[0] - neutral
    np.testing.assert_allclose(by_name["mouthSmileLeft"] + by_name["mouthSmileRight"], smile, atol=1e-6)
    moved = np.linalg.norm(by_name["eyeBlinkLeft"], axis=1) > 1e-4
    assert moved.any() and (face.vertices[moved, 0] > 0).all()
    np.testing.assert_allclose(by_name["jawOpen"], face.pose({"jaw_open": 1.0})[0] - neutral, atol=1e-6)


def synthetic_weights(names: list[str], frames: int, seed: int = 0) -> np.ndarray:
    """Random sparse weights (T, K) in [0, 1]; mouthLeft and mouthRight (opposite targets) never together."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, (frames, len(names))) * (rng.uniform(size=(frames, len(names))) < 0.5)
    left, right = names.index("mouthLeft"), names.index("mouthRight")
    w[:, right] = np.where(w[:, left] > 0, 0.0, w[:, right])
    return w


def test_rig_solve_recovers_known_weights(rig_path):
    rig = load_rig(rig_path)
    truth = synthetic_weights(rig.names, 50)
    offsets = np.einsum("tk,kvd->tvd", truth, rig.mesh.targets)
    fit = solve_weights(rig, offsets)
    assert np.abs(fit.weights - truth).max() <= 0.02
    assert fit.weights.min() >= 0 and fit.weights.max() <= 1
    assert fit.residual_max.max() < 1e-6   # metres


def test_rig_smoothing_calms_jitter(rig_path):
    rig = load_rig(rig_path)
    jaw = rig.names.index("jawOpen")
    w = np.zeros((60, len(rig.names)))
    w[:, jaw] = 0.5 + 0.2 * (np.arange(60) % 2)          # frame-to-frame flicker
    offsets = np.einsum("tk,kvd->tvd", w, rig.mesh.targets)
    plain, smooth = solve_weights(rig, offsets), solve_weights(rig, offsets, smoothing=2.0)
    assert np.abs(np.diff(smooth.weights[:, jaw])).mean() < 0.5 * np.abs(np.diff(plain.weights[:, jaw])).mean()


def test_rig_reports_residual_outside_the_rig(face, rig_path):
    rig = load_rig(rig_path)
    turned = face.pose({"head_yaw": np.linspace(0, 0.1, 10)}) - face.pose({})   # head turns: no blendshape does it
    fit = solve_weights(rig, turned)
    assert fit.residual_max[0] < 1e-7 and fit.residual_max[-1] > 1e-3
    assert np.all(np.diff(fit.residual_mean) >= -1e-9)
    line = fit.summary()
    assert re.search(r"\(mm\): mean [\d.]+ .* max [\d.]+ ", line) and "\n" not in line


def test_rig_exports_live_link_csv_and_animated_rig(face, motion, rig_path, tmp_path):
    result = export(tmp_path, motion, face.faces, [], template=face.vertices, rig=str(rig_path))
    assert sorted(p.name for p in result.files) == ["clip_rig.glb", "clip_weights.csv"]
    assert any("rig fit residual" in n for n in result.notes)
    rows = (tmp_path / "clip_weights.csv").read_text().splitlines()
    rig = load_rig(rig_path)
    header = rows[0].split(",")
    assert header[:2] == ["Timecode", "BlendShapeCount"]
    assert header[2:] == [n[0].upper() + n[1:] for n in rig.names] and "JawOpen" in header
    assert len(rows) == 1 + len(motion)
    assert rows[1].split(",")[:2] == ["00:00:00:00.000", str(len(rig.names))]
    assert rows[31].split(",")[0] == "00:00:01:00.000"   # 30 fps: frame 30 is one second in
    csv_weights = np.array([[float(x) for x in r.split(",")[2:]] for r in rows[1:]])
    # the animated rig carries the same weights on the rig's own mesh and targets
    animated = read_glb(tmp_path / "clip_rig.glb")
    mesh = read_morph_mesh(animated)
    np.testing.assert_array_equal(mesh.targets, rig.mesh.targets)
    _, weights = read_weights_animation(animated, mesh.node)
    np.testing.assert_allclose(weights, csv_weights, atol=1e-6)
    assert csv_weights[:, header.index("JawOpen") - 2].max() > 0.5


def test_live_link_timecode_rolls_over():
    text = live_link_csv(["jawOpen"], np.zeros((3700, 1)), 30)
    assert text.splitlines()[-1].startswith("00:02:03:09.000,1,")


def test_rig_written_again_keeps_its_extra_data(rig_path, tmp_path):
    rig = load_rig(rig_path)
    write_rig_animation(tmp_path / "a.glb", rig, np.full((3, len(rig.names)), 0.25), FPS, "a")
    doc = read_glb(tmp_path / "a.glb").doc
    assert doc["meshes"] == rig.glb.doc["meshes"] and len(doc["animations"]) == 1


def test_rig_with_sparse_and_interleaved_accessors(tmp_path):
    """Rigs from other tools: a sparse morph target (Blender's default) and an interleaved position view."""
    from ptalker.gltf import GlbBuilder

    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    b = GlbBuilder()
    interleaved = np.concatenate([base, np.ones((4, 1), np.float32)], axis=1)   # x y z + one unused float
    b.accessor(interleaved.reshape(-1), "SCALAR")
    b.doc["bufferViews"][-1]["byteStride"] = 16
    b.doc["accessors"][-1].update(type="VEC3", count=4, min=[0, 0, 0], max=[1, 1, 0])
    indices = b.accessor(np.array([0, 1, 2, 1, 3, 2]), "SCALAR")
    sparse_ids = b.accessor(np.array([3], np.uint32), "SCALAR")
    sparse_values = b.accessor(np.array([[0, 0, 0.5]], np.float32), "VEC3")
    b.doc["accessors"].append({"componentType": 5126, "count": 4, "type": "VEC3", "min": [0, 0, 0],
                               "max": [0, 0, 0.5], "sparse": {
                                   "count": 1, "indices": {"bufferView": b.doc["accessors"][sparse_ids]["bufferView"],
                                                           "componentType": 5125},
                                   "values": {"bufferView": b.doc["accessors"][sparse_values]["bufferView"]}}})
    b.doc.update(scenes=[{"nodes": [0]}], nodes=[{"mesh": 0}], meshes=[{
        "primitives": [{"attributes": {"POSITION": 0}, "indices": indices, "targets": [{"POSITION": 4}]}],
        "extras": {"targetNames": ["lift"]}}])
    write_glb(tmp_path / "sparse.glb", *b.finish())
    rig = load_rig(tmp_path / "sparse.glb")
    np.testing.assert_array_equal(rig.mesh.base, base)
    np.testing.assert_array_equal(rig.mesh.targets[0], [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0.5]])
    fit = solve_weights(rig, 0.3 * rig.mesh.targets)
    assert rig.names == ["lift"] and abs(fit.weights[0, 0] - 0.3) < 1e-6


# ---------------------------------------------------------------------------------------------- errors

def test_rig_errors_are_one_line(face, motion, rig_path, tmp_path):
    rig = load_rig(rig_path)
    with pytest.raises(UserError, match=r"has 4296 vertices, but the animated face has 42"):
        solve_weights(rig, np.zeros((2, 42, 3)))
    basis = MorphBasis(np.zeros((0, len(face.vertices), 3), np.float32), np.zeros((0, 0), np.float32), 0.0)
    write_glb(tmp_path / "plain.glb", *animation_document(face.vertices, face.faces, basis, FPS, "plain"))
    with pytest.raises(UserError, match="no morph targets"):
        load_rig(tmp_path / "plain.glb")
    data = rig_path.read_bytes()
    for name, corrupt in (("junk.glb", b"not a glb at all"), ("cut.glb", data[: len(data) // 2]),
                          ("json.glb", data[:20] + b"{{{{" + data[24:])):
        (tmp_path / name).write_bytes(corrupt)
        with pytest.raises(UserError) as caught:
            load_rig(tmp_path / name)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    with pytest.raises(UserError, match="not found"):
        load_rig(tmp_path / "missing.glb")


def test_demo_checks_the_rig_before_animating(rig_path, tmp_path):
    from types import SimpleNamespace

    from ptalker.demo_cli import _export_setup

    tiny = SimpleNamespace(faces=np.array([[0, 1, 2]]), num_vertices=3)
    args = SimpleNamespace(export=None, rig=str(rig_path), export_tolerance_mm=0.1, rig_smoothing=0.0)
    with pytest.raises(UserError, match="4296 vertices, but the animated face has 3"):
        _export_setup(args, tiny, np.zeros((3, 3), np.float32))
    with pytest.raises(UserError, match="SynthTalk faces"):
        _export_setup(SimpleNamespace(**{**vars(args), "rig": None, "export": ["arkit"]}), tiny,
                      np.zeros((3, 3), np.float32), rig_document)
    with pytest.raises(UserError, match="no ARKit rig for this face"):   # a caller that supplies no builder
        _export_setup(SimpleNamespace(**{**vars(args), "rig": None, "export": ["arkit"]}), tiny,
                      np.zeros((3, 3), np.float32))
    with pytest.raises(UserError, match="give one"):
        _export_setup(SimpleNamespace(**{**vars(args), "export": ["arkit"]}), tiny, np.zeros((3, 3), np.float32),
                      rig_document)
    with pytest.raises(UserError, match="tolerance_mm must be positive"):
        _export_setup(SimpleNamespace(**{**vars(args), "rig": None, "export_tolerance_mm": 0.0}), tiny, None)


# ---------------------------------------------------------------------------------------------- render.py + page

@pytest.fixture(scope="module")
def result_folder(face, tmp_path_factory) -> Path:
    """A dataset folder with a prediction whose jaw opens over a second, its truth and its speech."""
    import trimesh

    root = tmp_path_factory.mktemp("dataset") / "faces"
    for sub in ("templates", "result", "vertices_npy", "wav"):
        (root / sub).mkdir(parents=True)
    trimesh.Trimesh(face.vertices, face.faces, process=False).export(root / "templates" / "face.ply")
    jaw = np.linspace(0.0, 1.0, FPS)
    prediction = face.pose({"jaw_open": jaw})
    truth = face.pose({"jaw_open": jaw, "lip_round": 0.6 * jaw})
    np.save(root / "result" / "clip.npy", prediction.reshape(FPS, -1))
    np.save(root / "vertices_npy" / "clip.npy", truth.reshape(FPS, -1))
    write_speech(root / "wav" / "clip.wav", 1.0)
    return root


def test_render_writes_glb_and_page(result_folder, capsys):
    assert render.main(["--dataset", str(result_folder), "--fps", str(FPS), "--format", "glb", "html"]) == 0
    out = result_folder / "output"
    assert sorted(p.name for p in out.iterdir()) == ["clip.glb", "clip.html", "clip.wav"]
    assert "morph targets reproduce every vertex" in capsys.readouterr().out
    page = (out / "clip.html").read_text()
    assert "ground truth" in page and "data:audio/wav;base64," in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)   # nothing fetched from the network


def test_render_rejects_bad_tolerance(result_folder, capsys):
    code = render.main(["--dataset", str(result_folder), "--fps", str(FPS), "--format", "glb",
                        "--export_tolerance_mm", "-1", "--output_path", str(result_folder / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (result_folder / "bad").exists()


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium (bash install.sh installs Debian's chromium)")


def browse(page: Path, fragment: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Open the page in headless chromium (software WebGL) with a virtual-time budget: no racing sleeps."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
               "--enable-unsafe-swiftshader", "--force-device-scale-factor=1", "--window-size=1000,760",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--mute-audio",
               "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0",
               f"--user-data-dir={profile}", *args,
               page.as_uri() + "#" + fragment]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_page_plays_in_headless_chromium(face, result_folder, tmp_path):
    import cv2

    page = result_folder / "output" / "clip.html"
    if not page.exists():
        render.main(["--dataset", str(result_folder), "--fps", str(FPS), "--format", "html"])
    dom = browse(page, "t=0.9", tmp_path / "profile_dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr
    status = json.loads(re.search(r'<pre id="status"[^>]*>(.*?)</pre>', dom.stdout, re.S).group(1))
    assert status["ready"] and status["errors"] == [] and len(status["panels"]) == 2
    assert "<title>ready</title>" in dom.stdout

    shots = []
    for seconds in (0.0, 0.9):
        shot = tmp_path / f"shot_{seconds}.png"
        run = browse(page, f"t={seconds}", tmp_path / f"profile_{seconds}", f"--screenshot={shot}")
        assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
        shots.append(cv2.imread(str(shot)).astype(np.float64))

    panel = status["panels"][0]
    inside = shots[1][int(panel["top"]): int(panel["top"] + panel["height"]),
                      int(panel["left"]): int(panel["left"] + panel["width"])]
    assert (inside.min(axis=-1) < 200).mean() > 0.15            # the canvas shows a face, not a blank

    # the lips' box on screen, from the page's own camera, at the open pose (jaw lowest)
    lips = face.pose({"jaw_open": 1.0})[0][face.regions["lips"]]
    cam = status["camera"]
    x = panel["left"] + (lips[:, 0] - cam["centre"][0]) / cam["half"] * panel["width"] / 2 + panel["width"] / 2
    y = panel["top"] - (lips[:, 1] - cam["centre"][1]) / cam["half"] * panel["height"] / 2 + panel["height"] / 2
    box = (slice(int(y.min()) - 4, int(y.max()) + 5), slice(int(x.min()) - 4, int(x.max()) + 5))
    diff = np.abs(shots[1] - shots[0]).mean(axis=-1)
    assert diff[box].mean() > 8                                  # the mouth moved between 0 s and 0.9 s
    forehead = (slice(int(y.min()) - 200, int(y.min()) - 120), box[1])
    assert diff[forehead].mean() < 0.25 * diff[box].mean()      # ... and the rest of the face stayed
