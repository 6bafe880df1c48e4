"""The standard layout's file conventions (ptalker/layout.py): clip names, result stems, vertex files."""
from __future__ import annotations

import numpy as np
import pytest

from ptalker.errors import UserError
from ptalker.layout import load_vertices, result_stem, sentence_of, split_result_stem, subject_of


def test_clip_names_give_subject_and_sentence():
    assert subject_of("FaceTalk_170725_00137_TA_sentence01") == "FaceTalk_170725_00137_TA"
    assert subject_of("F2_e37") == "F2" and subject_of("nosentence") == "nosentence"
    assert [sentence_of(n) for n in ("F2_e37", "synth01_sentence105", "intro")] == [37, 105, None]


def test_result_stems_round_trip_with_underscores_in_both_parts():
    name, condition = "FaceTalk_170809_00138_TA_sentence21", "FaceTalk_170728_03272_TA"
    stem = result_stem(name, condition)
    assert stem == "FaceTalk_170809_00138_TA_sentence21_condition_FaceTalk_170728_03272_TA"
    assert split_result_stem(stem) == (name, condition)
    assert result_stem("F2_e37") == result_stem("F2_e37", "") == "F2_e37"      # no condition: the clip name
    assert split_result_stem("F2_e37") == ("F2_e37", "")


@pytest.mark.parametrize("shape", [(4, 15), (4, 5, 3), (1, 4, 15), (1, 4, 5, 3)])
def test_vertex_files_of_every_accepted_shape_open_as_frames_vertices_xyz(tmp_path, shape):
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.save(tmp_path / "v.npy", array)
    vertices = load_vertices(tmp_path / "v.npy")
    assert isinstance(vertices, np.memmap) and vertices.shape == (4, 5, 3)
    np.testing.assert_array_equal(vertices, array.reshape(4, 5, 3))


@pytest.mark.parametrize("content,message", [
    (None, "prediction file not found"),
    (b"garbage", "cannot read prediction"),
    (np.zeros((4, 5), np.float32), "has 5 values per frame, not 3 per vertex"),
    (np.zeros(15, np.float32), r"has shape \(15,\)"),
    (np.zeros((2, 4, 15), np.float32), r"has shape \(2, 4, 15\)"),
    (np.zeros((0, 15), np.float32), "holds no frames"),
    (np.array([["a", "b", "c"]]), "not numbers"),
    (np.array([[None, 1, 2]], dtype=object), "cannot read prediction"),   # pickled: never loaded
])
def test_bad_vertex_files_are_one_user_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "p.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(UserError, match=message) as info:
        load_vertices(path, "prediction")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
