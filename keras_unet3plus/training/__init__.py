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

The names below load on first use (PEP 562): the configuration and its flags import no
TensorFlow, so ``unet3plus train --help`` does not wait for it.
"""

from __future__ import annotations

from .._lazy import lazy_names

_WHERE = {
    "TrainConfig": "config",
    "load_file": "config",
    "select_strategy": "distribute",
    "is_chief": "distribute",
    "learning_rate_schedule": "schedule",
    "Trainer": "trainer",
    "FitResult": "trainer",
    "train": "trainer",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
