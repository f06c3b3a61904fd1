"""Each fact once: the defaults of `unet3plus train` / `unet3plus predict` agree between the command
line, the YAML keys and the Python keywords, because all of them come from one dataclass field
(keras_unet3plus.options). No TensorFlow work."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from keras_unet3plus import options
from keras_unet3plus.commands import predict as predict_cmd
from keras_unet3plus.commands import train as train_cmd
from keras_unet3plus.inference.predictor import PredictOptions
from keras_unet3plus.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _parser(command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser


def test_train_defaults_agree_between_cli_yaml_and_python(tmp_path):
    python = TrainConfig()
    assert train_cmd.config_from_args(_parser(train_cmd).parse_args([])) == python  # no flags
    saved = python.save(tmp_path)  # every key
    import yaml

    assert set(yaml.safe_load(saved.read_text())) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert TrainConfig.from_sources(saved) == python
    # every field has its flag's facts (help, type): none declared elsewhere
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help") and "type" in f.metadata, f.name


# one valid non-default value per key: a field added without a YAML value here fails the test
EVERY_KEY = dict(
    data_dir="/data",
    layout="msd",
    task="spleen",
    out_dir="runs/x",
    image_size=64,
    context=2,
    hu_window=[-100, 200],
    resize_mode="crop",
    negative_fraction=0.2,
    augment=False,
    cache_dir="/cache",
    cache_dtype="uint8",
    n_test=3,
    val_fraction=0.25,
    split_seed=4,
    folds=3,
    fold="all",
    splits_file="/runs/splits.json",
    max_val_cases=2,
    architecture="unet",
    backbone="resnet101",
    weights="imagenet",
    filters=[4, 8, 16, 32, 64],
    cat_channels=4,
    deep_supervision=False,
    cgm=False,
    decoder="efficient",
    cgm_dropout=0.25,
    freeze_backbone=True,
    bn_momentum=0.9,
    loss="dice_ce",
    focal_weight=0.5,
    ms_ssim_weight=0.0,
    iou_weight=2.0,
    side_weight=0.5,
    cls_weight=0.25,
    epochs=3,
    batch_size=2,
    steps_per_epoch=5,
    learning_rate=0.01,
    lr_schedule="constant",
    warmup_epochs=0.5,
    min_lr_ratio=0.1,
    clipnorm=None,
    mixed_precision=True,
    jit_compile=True,
    fused_decoder=False,
    seed=7,
    val_every=2,
    val_batch_size=4,
    patience=None,
    min_delta=0.01,
    max_minutes=1.5,
    keep_checkpoints=1,
    checkpoint_every_steps=10,
    resume=False,
    strategy="mirrored",
    devices=["/cpu:0"],
    verbose=0,
)


def test_a_yaml_file_with_every_key_loads(tmp_path):
    import yaml

    assert set(EVERY_KEY) == {f.name for f in dataclasses.fields(TrainConfig)}
    path = tmp_path / "every.yaml"
    path.write_text(yaml.safe_dump(EVERY_KEY))
    cfg = TrainConfig.from_sources(path)
    defaults = TrainConfig()
    for key, value in EVERY_KEY.items():
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
        assert got != getattr(defaults, key), f"{key}: pick a non-default value"
    assert TrainConfig.from_sources(cfg.save(tmp_path / "again")) == cfg


def test_a_config_saved_before_the_loss_setting_still_loads(tmp_path):
    """Run folders written before `loss` existed: the key is absent, the hybrid loss is meant."""
    from keras_unet3plus.training.run_folder import check_resume_config

    old = TrainConfig(image_size=64, filters=(4, 8, 16, 32, 64)).to_dict()
    del old["loss"]
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = TrainConfig.from_sources(tmp_path / "config.yaml")
    assert cfg.loss == "hybrid" and cfg.image_size == 64
    check_resume_config(cfg, tmp_path)  # same model settings: resumes
    with pytest.raises(ValueError, match="image_size"):
        check_resume_config(TrainConfig(), tmp_path)


def test_layouts_are_the_readers_list():
    from keras_unet3plus.data.layouts import Layout

    assert options.spec(TrainConfig, "layout")["choices"] == get_args(Layout)
    TrainConfig(layout="images").validate()  # accepted; training refuses unlabelled cases by name
    with pytest.raises(ValueError, match="layout"):
        TrainConfig(layout="dicom-zoo").validate()


def test_loss_weights_declared_once():
    cfg = TrainConfig(focal_weight=0.5, side_weight=0.25)
    assert cfg.loss_kwargs() == dict(
        focal_weight=0.5, ms_ssim_weight=1.0, iou_weight=1.0, side_weights=0.25, cls_weight=1.0
    )
    with pytest.raises(ValueError, match="cls_weight"):
        TrainConfig(cls_weight=-1.0).validate()


def test_predict_defaults_agree_between_cli_and_python(monkeypatch):
    args = _parser(predict_cmd).parse_args(["model.keras", "ct.nii.gz", "-o", "out.nii.gz"])
    cli = options.values_from_args(PredictOptions, args)
    python = options.defaults(PredictOptions)
    # where the command line differs, the field says so (and only there): bars on a terminal
    differs = {
        f.name for f in dataclasses.fields(PredictOptions) if f.metadata["cli_default"] is not dataclasses.MISSING
    }
    assert differs == {"progress", "formats"}
    assert cli["formats"] == python["formats"] and cli["progress"] is True and python["progress"] is False
    assert {k: v for k, v in cli.items() if k != "progress"} == {k: v for k, v in python.items() if k != "progress"}
    assert python["threshold"] is None  # one threshold default: the model's saved one

    # the one-call Python helpers pass no defaults of their own
    import keras_unet3plus.inference as inference

    seen = {}

    class Recorder:
        def __init__(self, model, info=None, *, cfg=None, **opts):
            seen.update(opts)

        def predict_volume(self, *a, **k):
            return None

    from keras_unet3plus.inference import calls

    monkeypatch.setattr(calls, "Predictor", Recorder)  # the one-call helpers live in inference/calls.py
    from keras_unet3plus.data.preprocess import PreprocessConfig

    inference.predict_volume(object(), None, PreprocessConfig())
    assert PredictOptions(**seen) == PredictOptions()


def test_predict_flags_keep_their_forms():
    args = _parser(predict_cmd).parse_args(
        [
            "m.keras",
            "ct.nii",
            "-o",
            "o",
            "--no-gate",
            "--quiet",
            "--format",
            "both",
            "--threshold",
            "0",
            "--batch-size",
            "3",
            "--largest-component",
            "--no-overlap",
            "--skip-absent",
        ]
    )
    opts = PredictOptions(**options.values_from_args(PredictOptions, args))
    assert opts == PredictOptions(
        batch_size=3,
        gate=False,
        threshold=0.0,
        largest_component=True,
        overlap=False,
        progress=False,
        formats=("nifti", "dicom-seg"),
        skip_absent=True,
    )
    with pytest.raises(SystemExit):
        _parser(predict_cmd).parse_args(["m.keras", "-o", "o", "--format", "png"])


def test_commands_import_no_tensorflow():
    """`unet3plus --help` builds every command's flags: train's and predict's come from their
    dataclasses without loading TensorFlow or Keras (the package's own __init__ aside)."""
    code = (
        "import sys, types, importlib\n"
        f"pkg = types.ModuleType('keras_unet3plus'); pkg.__path__ = [{str(REPO / 'keras_unet3plus')!r}]\n"
        "sys.modules['keras_unet3plus'] = pkg\n"
        "import argparse\n"
        "for name in ('train', 'predict'):\n"
        "    m = importlib.import_module('keras_unet3plus.commands.' + name)\n"
        "    m.add_arguments(argparse.ArgumentParser())\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", res.stdout
