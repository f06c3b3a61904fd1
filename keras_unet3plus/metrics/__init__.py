"""Segmentation metrics.

* `keras_unet3plus.metrics.training`: streaming `keras.metrics.Metric`s for `model.compile`
  (`DiceScore`, `IoUScore`; correct under tf.distribute).
* `keras_unet3plus.metrics.volume`: per-volume numpy/scipy metrics (Dice, Jaccard, VOE, RVD,
  ASSD, MSSD, HD95, global Dice, `evaluate_case`, `summarize`), voxel-spacing aware.
"""
from .training import DiceScore, IoUScore
from .volume import (
    GlobalDice,
    assd,
    dice,
    evaluate_case,
    global_dice,
    hd95,
    jaccard,
    label_dice,
    mssd,
    rvd,
    summarize,
    surface_distances,
    voe,
)

__all__ = [
    "DiceScore",
    "IoUScore",
    "GlobalDice",
    "assd",
    "dice",
    "evaluate_case",
    "global_dice",
    "hd95",
    "jaccard",
    "label_dice",
    "mssd",
    "rvd",
    "summarize",
    "surface_distances",
    "voe",
]
