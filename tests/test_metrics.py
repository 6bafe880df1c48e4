"""LVE / FDD / MVE: hand-computed values, a torchmetrics cross-check, the real region masks, and
scoring a result folder through the library and through evaluate.py."""
from __future__ import annotations

import csv
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_file
from ptalker.datasets import VOCASET, resolve_dataset
from ptalker.errors import UserError
from ptalker.metrics import (RegionMasks, Scores, SequenceScore, Units, dataset_regions, format_table,
                             lip_vertex_error, mean_vertex_error, metric_units, report,
                             score_result_folder, upper_face_dynamics,
                             upper_face_dynamics_deviation, write_csv)


def _tiny_pair():
    """3 vertices, 2 frames; ground truth at the origin, so each d(t, v) is |pred|^2."""
    gt = np.zeros((2, 3, 3))
    pred = np.array([[[1, 2, 2], [10, 0, 0], [0, 0, 2]],
                     [[0, 0, 1], [0, 0, 0], [1, 1, 1]]], dtype=np.float64)
    return pred, gt


def test_lip_vertex_error_by_hand():
    pred, gt = _tiny_pair()
    # lips = {0, 2}. frame 0: d = 1+4+4 = 9 (v0), 4 (v2); v1's 100 is not a lip -> 9.
    # frame 1: d = 1 (v0), 1+1+1 = 3 (v2) -> 3.
    np.testing.assert_allclose(lip_vertex_error(pred, gt, [0, 2]), [9.0, 3.0])
    # flattened (T, V*3) input is the same sequence
    np.testing.assert_allclose(lip_vertex_error(pred.reshape(2, 9), gt.reshape(2, 9), [0, 2]), [9.0, 3.0])


def test_mean_vertex_error_by_hand():
    pred, gt = _tiny_pair()
    # frame 0: distances 3, 10, 2 -> 15/3 = 5. frame 1: 1, 0, sqrt(3) -> (1 + sqrt 3)/3.
    np.testing.assert_allclose(mean_vertex_error(pred, gt), [5.0, (1 + np.sqrt(3)) / 3])


def test_upper_face_dynamics_and_deviation_by_hand():
    template = np.full((2, 3), 5.0)
    # gt motion: v0 (1,0,0) -> (2,0,0): L2 = 1, 4, std (ddof=0) = 1.5
    #            v1 (0,0,0) -> (0,3,0): L2 = 0, 9, std = 4.5           -> dyn_gt = 3.0
    gt_motion = np.array([[[1, 0, 0], [0, 0, 0]], [[2, 0, 0], [0, 3, 0]]], dtype=np.float64)
    # pred motion: v0 stays at (1,0,0): L2 = 1, 1, std = 0
    #              v1 (0,1,0) -> (0,2,0): L2 = 1, 4, std = 1.5           -> dyn_pred = 0.75
    pred_motion = np.array([[[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 2, 0]]], dtype=np.float64)
    assert upper_face_dynamics(gt_motion, [0, 1]) == pytest.approx(3.0)
    assert upper_face_dynamics(gt_motion, [1]) == pytest.approx(4.5)
    assert upper_face_dynamics(pred_motion) == pytest.approx(0.75)
    # motion is taken relative to the template; FDD = 3.0 - 0.75 = 2.25 (ddof=1 would give 3.18)
    fdd = upper_face_dynamics_deviation(pred_motion + template, gt_motion + template, template, [0, 1])
    assert fdd == pytest.approx(2.25)


def test_fdd_sign_less_motion_is_positive():
    rng = np.random.default_rng(0)
    template = rng.normal(size=(20, 3))
    gt = template + 0.1 * rng.normal(size=(15, 20, 3))
    damped = template + 0.5 * (gt - template)
    ids = np.arange(5, 20)
    assert upper_face_dynamics_deviation(damped, gt, template, ids) > 0
    assert upper_face_dynamics_deviation(gt, damped, template, ids) < 0
    assert upper_face_dynamics_deviation(gt, gt, template, ids) == 0


def test_lve_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.multimodal")
    rng = np.random.default_rng(1)
    lips = sorted(rng.choice(60, size=12, replace=False).tolist())
    metric = tm.LipVertexError(mouth_map=lips)
    ours = []
    for frames in (9, 4):  # pooled over frames of sequences of different lengths
        pred, gt = rng.normal(size=(2, frames, 60, 3)).astype(np.float32)
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        ours.append(lip_vertex_error(pred, gt, lips))
    expected = float(metric.compute())
    assert np.concatenate(ours).mean() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- masks

def test_real_flame_masks():
    path = shared_file("flame/FLAME_masks.pkl")
    with open(path, "rb") as f:
        table = pickle.load(f, encoding="latin1")
    masks = dataset_regions(resolve_dataset(path.parent), lip_mask=f"{path.name}:lips",
                            upper_face_mask=f"{path.name}:forehead+eye_region")
    assert len(table["lips"]) == 254
    np.testing.assert_array_equal(masks.lips, np.unique(table["lips"]))  # 250 distinct ids
    np.testing.assert_array_equal(masks.upper_face, np.union1d(table["forehead"], table["eye_region"]))
    assert len(masks.upper_face) == 827  # forehead 133 + eye_region 751, sharing 57
    masks.validate(5023)


def test_vocaset_lip_region_is_the_lineages_lve_txt(tmp_path):
    lve, flame = shared_file("flame/ptalker_vocaset_lve.txt"), shared_file("flame/FLAME_masks.pkl")
    folder = tmp_path / "VOCASET"
    (folder / "regions").mkdir(parents=True)
    (folder / "FLAME_masks.pkl").symlink_to(flame)
    preset = resolve_dataset(folder)
    # without regions/lve.txt: FLAME's lips, with a note that LVE is then not comparable
    fallback = dataset_regions(preset)
    assert fallback.lips.size == 250 and fallback.upper_face.size == 827
    note, lip_line, upper_line = fallback.describe()
    assert note.startswith("note: ") and "not comparable to published figures" in note
    assert "wangryhen/PTalker" in note
    assert lip_line == f"lip region: {folder / 'FLAME_masks.pkl'}:lips (250 vertices)"
    assert upper_line == f"upper-face region: {folder / 'FLAME_masks.pkl'}:forehead+eye_region (827 vertices)"
    # with it: the public repository's 428 ids, of which FLAME's lips share 229
    (folder / "regions" / "lve.txt").symlink_to(lve)
    lineage = dataset_regions(preset)
    assert lineage.lips.size == 428 and np.intersect1d(lineage.lips, fallback.lips).size == 229
    assert lineage.describe()[0] == f"lip region: {folder / 'regions' / 'lve.txt'} (428 vertices)"
    lineage.validate(5023)


def test_real_biwi_masks():
    regions = shared_file("biwi/regions/lve.txt").parent
    masks = dataset_regions(resolve_dataset(regions.parent))   # the folder is named biwi: BIWI's regions
    assert (len(masks.lips), len(masks.upper_face)) == (4996, 7784)
    masks.validate(23370)
    with pytest.raises(UserError, match="lip mask holds vertex id 23339 but the meshes have 5023"):
        masks.validate(5023)  # BIWI masks on FLAME meshes


def test_mask_text_tolerates_whitespace_and_pickle_errors(tmp_path):
    (tmp_path / "lips.txt").write_text("3, 1,\n 2\n\n1")
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump({"a": np.array([5, 4]), "b": [4, 6]}, f)
    folder = resolve_dataset(tmp_path)
    masks = dataset_regions(folder, "lips.txt", str(tmp_path / "m.pkl") + ":a+b")
    np.testing.assert_array_equal(masks.lips, [1, 2, 3])
    np.testing.assert_array_equal(masks.upper_face, [4, 5, 6])
    with pytest.raises(UserError, match="no region c.*regions there: a, b"):
        dataset_regions(folder, "lips.txt", "m.pkl:a+c")
    with pytest.raises(UserError, match="names a pickle but no region"):
        dataset_regions(folder, "lips.txt", "m.pkl")
    (tmp_path / "bad.txt").write_text("1, two")
    with pytest.raises(UserError, match="integer vertex ids"):
        dataset_regions(folder, "bad.txt", "lips.txt")


def test_missing_mask_says_where_to_obtain_it(tmp_path):
    with pytest.raises(UserError) as info:
        dataset_regions(resolve_dataset(tmp_path / "VOCASET"), VOCASET.lip_mask, VOCASET.upper_face_mask)
    message = str(info.value)
    assert str(tmp_path / "VOCASET" / "regions" / "lve.txt") in message and "wangryhen/PTalker" in message
    assert "flame.is.tue.mpg.de" in message and "\n" not in message


# ----------------------------------------------------------------------------- result folders

V = 4


def _toy_dataset(root):
    """Speakers `Ann_B` (an underscore inside) and `S2`, 4-vertex meshes, captured at stride 2,
    masks lips {0, 1} / upper face {2, 3}; two predictions: one longer than its ground truth
    (and conditioned on `X_Y`), one shorter and flattened without a condition."""
    rng = np.random.default_rng(7)
    templates = {"Ann_B": rng.normal(size=(V, 3)).astype(np.float32),
                 "S2": rng.normal(size=(V, 3)).astype(np.float32)}
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    (root / "vertices_npy").mkdir()
    (root / "regions").mkdir()
    (root / "regions" / "lve.txt").write_text("0, 1")
    (root / "regions" / "fdd.txt").write_text("2,\n3\n")
    captured = {"Ann_B_s01": 10, "S2_s02": 8}
    gt = {}
    for name, frames in captured.items():
        seq = templates[name.rsplit("_", 1)[0]] + 0.1 * rng.normal(size=(frames, V, 3))
        np.save(root / "vertices_npy" / f"{name}.npy", seq.reshape(frames, V * 3).astype(np.float32))
        gt[name] = seq.astype(np.float32).astype(np.float64)[::2]  # 5 and 4 frames after the stride
    result = root / "result"
    result.mkdir()
    preds = {"Ann_B_s01": rng.normal(size=(7, V, 3)), "S2_s02": rng.normal(size=(3, V, 3))}
    np.save(result / "Ann_B_s01_condition_X_Y.npy", preds["Ann_B_s01"])
    np.save(result / "S2_s02.npy", preds["S2_s02"].reshape(3, V * 3))
    (result / "notes.txt").write_text("not a prediction")
    return templates, gt, preds


def test_own_condition_ranking():
    def row(name, condition, lve):
        return SequenceScore(name, condition, 10, 10, lve, 0.0, 0.0)

    scores = Scores.from_rows([row("A_s01", "A", 1.0), row("A_s01", "B", 2.0),   # own best
                               row("B_s01", "A", 1.0), row("B_s01", "B", 3.0),   # own worse
                               row("C_s01", "A", 1.0)])                          # no own condition
    assert scores.own_condition_ranking() == (1, 2)
    table = format_table(scores, Units(0, 0, 0))
    assert "lowest LVE on 1 of 2 sequences (50%)" in table
    assert scores.own_condition.lve == 2.0 and scores.own_condition.sequences == 2     # A under A, B under B
    assert "own speaker's condition (2 seq)" in table
    assert Scores.from_rows([row("A_s01", "A", 1.0)]).own_condition is None         # nothing to compare


def test_score_result_folder(tmp_path):
    templates, gt, preds = _toy_dataset(tmp_path)
    masks = dataset_regions(resolve_dataset(tmp_path))
    scores = score_result_folder(tmp_path, tmp_path / "result", masks, capture_stride=2)
    ann, s2 = scores.rows
    # longer prediction (7 frames) cut to the 5 ground-truth frames; shorter one (3) cuts the gt
    assert (ann.name, ann.condition, ann.frames, ann.gt_frames) == ("Ann_B_s01", "X_Y", 5, 5)
    assert (s2.name, s2.condition, s2.frames, s2.gt_frames) == ("S2_s02", "", 3, 4)
    assert scores.shortened == (s2,)
    lve_frames = np.concatenate([lip_vertex_error(preds["Ann_B_s01"][:5], gt["Ann_B_s01"], [0, 1]),
                                 lip_vertex_error(preds["S2_s02"], gt["S2_s02"][:3], [0, 1])])
    mve_frames = np.concatenate([mean_vertex_error(preds["Ann_B_s01"][:5], gt["Ann_B_s01"]),
                                 mean_vertex_error(preds["S2_s02"], gt["S2_s02"][:3])])
    fdds = [upper_face_dynamics_deviation(preds["Ann_B_s01"][:5], gt["Ann_B_s01"], 
                                          templates["Ann_B"], [2, 3]),
            upper_face_dynamics_deviation(preds["S2_s02"], gt["S2_s02"][:3], templates["S2"], [2, 3])]
    # LVE and MVE pool all 8 frames; FDD averages the two sequences
    assert scores.overall.frames == 8 and scores.overall.sequences == 2
    assert scores.overall.lve == pytest.approx(lve_frames.mean(), rel=1e-12)
    assert scores.overall.mve == pytest.approx(mve_frames.mean(), rel=1e-12)
    assert scores.overall.fdd == pytest.approx(np.mean(fdds), rel=1e-12)
    assert ann.lve == pytest.approx(lve_frames[:5].mean())
    assert set(scores.by_condition) == {"", "X_Y"}
    assert scores.by_condition["X_Y"].lve == pytest.approx(ann.lve)

    # the static-template reference: the speaker's neutral face on every ground-truth frame
    static_lve = np.concatenate([lip_vertex_error(np.broadcast_to(templates[s], g.shape), g, [0, 1])
                                 for s, g in (("Ann_B", gt["Ann_B_s01"]), ("S2", gt["S2_s02"]))])
    assert scores.static.frames == 9 and scores.static.lve == pytest.approx(static_lve.mean(), rel=1e-6)
    assert scores.static.fdd == pytest.approx(np.mean([upper_face_dynamics_deviation(
        np.broadcast_to(templates[s], g.shape), g, templates[s], [2, 3])
        for s, g in (("Ann_B", gt["Ann_B_s01"]), ("S2", gt["S2_s02"]))]), rel=1e-6)

    table = format_table(scores, Units(lve=-1, fdd=-2, mve=0), per_sequence=True)
    assert "static template (2 seq)" in table
    assert "LVE (x1e-1)" in table and "FDD (x1e-2)" in table and "Ann_B_s01 [X_Y]" in table
    assert f"{scores.overall.lve * 10:.4f}" in table
    assert "shorter than the ground truth" in table and "S2_s02" in table

    write_csv(scores, tmp_path / "out" / "metrics.csv")
    with open(tmp_path / "out" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["Ann_B_s01", "S2_s02"]
    assert float(rows[1]["fdd"]) == s2.fdd and rows[1]["gt_frames"] == "4"


def test_score_result_folder_user_errors(tmp_path):
    _toy_dataset(tmp_path)
    masks = dataset_regions(resolve_dataset(tmp_path))
    result = tmp_path / "result"
    np.save(result / "S2_s02_condition_Q.npy", np.zeros((3, (V + 1) * 3)))
    with pytest.raises(UserError, match=r"S2_s02_condition_Q\.npy has 5 vertices.*has 4"):
        score_result_folder(tmp_path, result, masks, capture_stride=2)
    (result / "S2_s02_condition_Q.npy").unlink()
    np.save(result / "S9_s01.npy", np.zeros((3, V * 3)))
    with pytest.raises(UserError, match=r"no ground truth for S9_s01\.npy"):
        score_result_folder(tmp_path, result, masks, capture_stride=2)
    (result / "S9_s01.npy").unlink()
    np.save(result / "nosentence_condition_S2.npy", np.zeros((3, V * 3)))
    with pytest.raises(UserError, match=r"cannot tell the speaker from result file nosentence_condition_S2\.npy"):
        score_result_folder(tmp_path, result, masks, capture_stride=2)
    (result / "nosentence_condition_S2.npy").unlink()
    with pytest.raises(UserError, match="vertex id 4 but the meshes have 4"):
        score_result_folder(tmp_path, result, RegionMasks(np.array([0, 4]), masks.upper_face), 2)
    with pytest.raises(UserError, match="result folder not found"):
        score_result_folder(tmp_path, tmp_path / "nowhere", masks)


def test_each_region_loads_on_its_own(tmp_path):
    templates, gt, preds = _toy_dataset(tmp_path)
    (tmp_path / "regions" / "fdd.txt").unlink()
    preset = resolve_dataset(tmp_path)
    masks = dataset_regions(preset)
    np.testing.assert_array_equal(masks.lips, [0, 1])
    assert masks.upper_face is None
    assert masks.describe() == [
        f"note: no upper-face region ({tmp_path / 'regions' / 'fdd.txt'} not found; region ids come with the "
        f"dataset's evaluation protocol): FDD is off",
        f"lip region: {tmp_path / 'regions' / 'lve.txt'} (2 vertices)"]
    scores = score_result_folder(tmp_path, tmp_path / "result", masks, capture_stride=2)
    with_fdd = score_result_folder(tmp_path, tmp_path / "result", RegionMasks(masks.lips, np.array([2, 3])), 2)
    assert scores.overall.lve == with_fdd.overall.lve and np.isnan(scores.overall.fdd)
    overall = next(line for line in format_table(scores, Units(0, 0, 0)).splitlines() if line.startswith("all"))
    assert overall.split()[-3:] == [f"{scores.overall.lve:.4f}", "n/a", f"{scores.overall.mve:.4f}"]
    # without the lips too, LVE is off the same way; a region file named explicitly must exist
    (tmp_path / "regions" / "lve.txt").unlink()
    masks = dataset_regions(preset)
    assert masks.lips is None and [line.endswith("LVE is off") for line in masks.describe()] == [True, False]
    with pytest.raises(UserError, match="upper-face mask file not found"):
        dataset_regions(preset, upper_face_mask="regions/fdd.txt")


def test_metric_units():
    assert metric_units("BIWI") == Units(lve=-4, fdd=-5, mve=-3)
    assert metric_units("vocaset") == Units(lve=-5, fdd=-7, mve=-3)
    assert metric_units("mine") == Units(0, 0, 0)


def _run_evaluate(*args):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_evaluate_cli_prints_the_library_table(tmp_path):
    dataset = tmp_path / "toyset"
    dataset.mkdir()
    _toy_dataset(dataset)
    done = _run_evaluate("--dataset", dataset, "--result_dir", dataset / "result", "--per_sequence",
                         "--csv", tmp_path / "m.csv")
    assert done.returncode == 0, done.stderr
    scores = score_result_folder(dataset, dataset / "result", dataset_regions(resolve_dataset(dataset)), 1)
    assert done.stdout == report(scores, "toyset", per_sequence=True) + "\n"
    assert done.stderr.splitlines() == [f"lip region: {dataset / 'regions' / 'lve.txt'} (2 vertices)",
                                        f"upper-face region: {dataset / 'regions' / 'fdd.txt'} (2 vertices)"]
    assert (tmp_path / "m.csv").is_file()
    # generic dataset: units follow the magnitude of the values and are named in the header
    units = metric_units("toyset", scores)
    assert units.label("lve") in done.stdout.splitlines()[0]


def test_evaluate_cli_reports_user_errors_on_one_line(tmp_path):
    done = _run_evaluate("--dataset", tmp_path, "--result_dir", tmp_path / "missing")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
