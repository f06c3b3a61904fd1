"""Training UNet 3+: the resolved configuration, strategy selection, the distributed custom loop,
crash-safe checkpoints and run logs.

    from keras_unet3plus.training import TrainConfig, train
    result = train(TrainConfig(data_dir="LiTS", out_dir="runs/liver", image_size=320))

CLI: ``unet3plus train --data-dir DIR --out-dir RUN [--config run.yaml] ...``.

The loop is :class:`~.trainer.Trainer` (a sequence of named hooks); what it calls lives beside it:
``schedule`` (learning rate), ``step`` (the distributed train step), ``validation`` (per-volume
Dice), ``run_folder`` (file names, resume checks, model info), ``checkpoints``, ``distribute``
(strategy, worker agreement), ``logs`` and ``runlock``; ``config`` and ``flags`` resolve the
settings. Code that drives training together with other stages (the demo, the recipes) is in
:mod:`keras_unet3plus.workflows`.
"""
from .config import TrainConfig, load_file
from .distribute import is_chief, select_strategy
from .schedule import learning_rate_schedule
from .trainer import FitResult, Trainer, train

__all__ = ["TrainConfig", "load_file", "select_strategy", "is_chief", "Trainer", "FitResult", "train",
           "learning_rate_schedule"]
