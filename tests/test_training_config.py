"""TrainConfig: file + flag merging, saved config, clear errors (no TensorFlow work)."""

from __future__ import annotations

import argparse
import json

import pytest

from keras_unet3plus.commands import train as train_cmd
from keras_unet3plus.training.config import TrainConfig, load_file


def _parse(argv):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_yaml_file_merged_under_explicit_flags(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("epochs: 7\nbatch_size: 4\nfilters: [4, 8, 16, 32, 64]\nmixed_precision: true\nlearning-rate: 0.01\n")
    args = _parse(["--config", str(f), "--epochs", "3", "--data-dir", "/data", "--no-mixed-precision"])
    cfg = train_cmd.config_from_args(args)
    assert cfg.epochs == 3  # flag beats file
    assert cfg.batch_size == 4  # file beats default
    assert cfg.filters == (4, 8, 16, 32, 64)
    assert cfg.mixed_precision is False  # explicit --no-x beats the file
    assert cfg.learning_rate == 0.01  # dashes accepted in files
    assert cfg.image_size == 320  # untouched default
    assert cfg.data_dir == "/data"


def test_json_file_and_saved_config_round_trip(tmp_path):
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"epochs": 2, "hu_window": [-100, 200], "patience": None, "task": "spleen"}))
    cfg = TrainConfig.from_sources(f)
    assert cfg.hu_window == (-100.0, 200.0) and cfg.patience is None and cfg.task == "spleen"
    saved = cfg.save(tmp_path / "run")
    assert saved.name == "config.yaml"
    again = TrainConfig.from_sources(saved)
    assert again == cfg
    assert TrainConfig.from_sources(cfg.save(tmp_path, "config.json")) == cfg


def test_unknown_key_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("epochs: 3\nlearnig_rate: 0.1\n")
    with pytest.raises(ValueError) as err:
        load_file(f)
    msg = str(err.value)
    assert str(f) in msg and "learnig_rate" in msg and "learning_rate" in msg  # did-you-mean hint


@pytest.mark.parametrize(
    "text, needle",
    [
        ("epochs: many\n", "epochs"),
        ("batch_size: 0\n", "batch_size"),
        ("lr_schedule: triangle\n", "lr_schedule"),
        ("filters: [1, 2, 3]\n", "filters"),
        ("- just\n- a list\n", "mapping"),
        ("epochs: [unclosed\n", "cannot be parsed"),
    ],
)
def test_bad_values_in_file(tmp_path, text, needle):
    f = tmp_path / "cfg.yaml"
    f.write_text(text)
    with pytest.raises(ValueError) as err:
        TrainConfig.from_sources(f)
    assert needle in str(err.value)


def test_bad_flag_values():
    with pytest.raises(SystemExit):  # argparse: not an int
        _parse(["--epochs", "lots"])
    with pytest.raises(ValueError, match="learning_rate"):
        train_cmd.config_from_args(_parse(["--learning-rate", "-1"]))
    with pytest.raises(ValueError, match="strategy"):
        train_cmd.config_from_args(_parse(["--strategy", "tpu"]))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        train_cmd.config_from_args(_parse(["--config", "nope.yaml"]))


def test_optional_flags_accept_none():
    cfg = train_cmd.config_from_args(_parse(["--patience", "none", "--clipnorm", "0", "--max-minutes", "1.5"]))
    assert cfg.patience is None and cfg.clipnorm is None and cfg.max_minutes == 1.5


def test_cli_train_without_data_dir_is_a_clear_error(capsys):
    from keras_unet3plus import cli

    assert cli.main(["train", "--epochs", "1"]) == 2
    assert "--data-dir is required" in capsys.readouterr().err
