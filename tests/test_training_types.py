"""The None cases the type check of training/ (mypy.ini) made explicit: each a clear error or the
declared value, not an AttributeError on None (no TensorFlow work)."""

from __future__ import annotations

import pytest

from keras_unet3plus.training.config import TrainConfig
from keras_unet3plus.training.trainer import Trainer


def test_a_hook_before_on_train_start_names_it(tmp_path):
    trainer = Trainer(TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run")))
    with pytest.raises(RuntimeError, match="before on_train_start"):
        trainer.on_epoch_start(0)
    assert trainer.should_stop() is False  # no state needed while no patience has run out


def test_preprocess_takes_the_window_from_a_config_file_list(tmp_path):
    cfg = TrainConfig(data_dir=str(tmp_path), hu_window=[-100, 200], resize_mode="crop")
    pre = cfg.preprocess()
    assert pre.hu_window == (-100.0, 200.0) and pre.resize_mode == "crop"
    with pytest.raises(ValueError, match="unpack"):
        TrainConfig(data_dir=str(tmp_path), hu_window=[1, 2, 3]).preprocess()
