"""main.py's command line: flags built from the config dataclasses, --config files, one-line errors."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import main
from conftest import ROOT
from ptalker.cli import flag_fields
from ptalker.options import ModelFlags, RunConfig
from ptalker.trainer import TrainConfig

# the main.py line of SynthTalk/train_demo_model.sh before its recipe moved to configs/synthtalk.json
SYNTHTALK_FLAGS = shlex.split(
    "--dataset SynthTalk --audio_model SynthTalk/speech_phonemes "
    "--feature_dim 128 --period 30 --fps 30 --decoder_layers 3 --motion_layers 1 --motion_conv_layers 2 "
    "--style_dim 32 --ablation no_spatial --identity_dropout 0.2 "
    "--self_feed 0.95 --ema 0.999 --seed 8 --val_metric lve --batch_size 4 --lr 5e-4 --lr_schedule cosine "
    "--warmup_steps 100 --max_epoch 45 --test_conditions all --model_name synthtalk")


def one_line_error(capsys, argv: list[str]) -> str:
    """Parse `argv`, which must fail with status 2 and one `error:` line; returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.json"
    path.write_text(text)
    return str(path)


def test_every_config_field_with_help_is_a_flag_declared_once():
    names = [f.name for cls in (RunConfig, ModelFlags, TrainConfig) for f in flag_fields(cls)]
    assert len(names) == len(set(names))
    args = vars(main.parse_args([]))
    assert set(names) <= set(args) and "config" not in args
    # fields the program fills in are not flags
    assert {"best_path", "last_path", "log_path", "parallel"}.isdisjoint(args)
    assert args["device"] is None   # RunConfig's flag, not TrainConfig's resolved device
    help_text = " ".join(subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True,
                                        text=True, cwd=ROOT).stdout.split())
    assert "--gradient_accumulation_steps" in help_text and "one optimiser step" in help_text
    assert "--config FILE.json" in help_text


def test_config_file_sets_flags_the_command_line_overrides_and_the_recipe_fills_the_rest(tmp_path):
    config = write_config(tmp_path, json.dumps({"lr": 2e-3, "batch_size": 3, "ablation": ["no_style"],
                                                "resume": True, "gat_checkpoint": "off"}))
    args = main.parse_args(["--config", config])
    assert (args.lr, args.batch_size, args.ablation, args.resume, args.gat_checkpoint) == (
        2e-3, 3, ["no_style"], True, "off")
    assert args.max_epoch == 800 and args.from_recipe == ("max_epoch", "amp", "audio_model")
    overridden = main.parse_args(["--batch_size", "5", "--config", config, "--ablation"])
    assert (overridden.lr, overridden.batch_size, overridden.ablation) == (2e-3, 5, [])


def test_synthtalk_config_file_resolves_to_the_explicit_command():
    from_file = main.parse_args(["--config", str(ROOT / "configs" / "synthtalk.json"), "--max_epoch", "45"])
    assert from_file == main.parse_args(SYNTHTALK_FLAGS)
    assert from_file.from_recipe == ("amp",) and from_file.lr == 5e-4 and from_file.ablation == ["no_spatial"]
    assert main.parse_args(["--config", str(ROOT / "configs" / "synthtalk.json"), "--max_epoch", "3"]).max_epoch == 3
    assert '--config configs/synthtalk.json --max_epoch "$EPOCHS"' in (
        ROOT / "SynthTalk" / "train_demo_model.sh").read_text()


@pytest.mark.parametrize("text,message", [
    ('{"lr": 1e-3, "learning_rate": 1}', "unknown flag(s) learning_rate"),
    ('{"lr": 1e-3,', "is not valid JSON"),
    ('["--lr", "1e-3"]', "must hold a JSON object"),
    ('{"batch_size": "4"}', "batch_size must be an integer, got \"4\""),
    ('{"batch_size": 2.5}', "batch_size must be an integer, got 2.5"),
    ('{"lr": "fast"}', "lr must be a number"),
    ('{"resume": 1}', "resume must be true or false"),
    ('{"ablation": "no_style"}', "ablation must be a list of strings"),
    ('{"ablation": ["no_nose"]}', "invalid choice 'no_nose'"),
    ('{"amp": "fp8"}', "invalid choice 'fp8'"),
    ('{"batch_size": 0}', "batch_size must be at least 1, got 0"),
    ('{"lr": -1}', "lr must be greater than 0, got -1.0"),
    ('{"self_feed": 2}', "self_feed must be in [0, 1], got 2.0"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    assert message in one_line_error(capsys, ["--config", write_config(tmp_path, text)])


def test_missing_config_file_is_one_line_error(tmp_path, capsys):
    assert "config file not found" in one_line_error(capsys, ["--config", str(tmp_path / "none.json")])


@pytest.mark.parametrize("argv,message", [
    (["--lr=-1e-4"], "argument --lr: must be greater than 0, got -0.0001"),
    (["--lr", "0"], "argument --lr: must be greater than 0, got 0.0"),
    (["--batch_size", "0"], "argument --batch_size: must be at least 1, got 0"),
    (["--max_epoch", "-2"], "argument --max_epoch: must be at least 0, got -2"),
    (["--warmup_steps", "x"], "argument --warmup_steps: invalid integer value: 'x'"),
    (["--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
])
def test_invalid_flag_values_are_one_line_errors(capsys, argv, message):
    assert message in one_line_error(capsys, argv)


def test_values_valid_before_stay_valid():
    args = main.parse_args(["--max_epoch", "0", "--test_only", "--grad_clip", "0", "--lr", "1e-9"])
    assert (args.max_epoch, args.test_only, args.grad_clip, args.lr) == (0, True, 0.0, 1e-9)
