"""Segmentation metrics.

* `keras_unet3plus.metrics.training`: streaming `keras.metrics.Metric`s for `model.compile`
  (`DiceScore`, `IoUScore`; correct under tf.distribute), on `keras.ops`: any Keras backend.
* `keras_unet3plus.metrics.volume`: per-volume numpy/scipy metrics (Dice, Jaccard, VOE, RVD,
  ASSD, MSSD, HD95, global Dice, `evaluate_case`, `summarize`), voxel-spacing aware; no Keras.

Neither imports TensorFlow itself: under JAX or PyTorch nothing here does.
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
