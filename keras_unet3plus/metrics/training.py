"""Training-time Dice and IoU as streaming `keras.metrics.Metric`s.

Both metrics accumulate, per class, the sums |P & G|, |P| and |G| over every batch seen in metric
variables (aggregation "sum"), and compute the score from those totals in `result()`. That is the
pooled ("global") score over the epoch, and it is exact under `tf.distribute`: the per-replica
sums add up, whereas an average of per-batch ratios would depend on how batches are split.

Inputs follow docs/design.md: `y_true` is the shared mask `(B, H, W, 1)` (float {0, 1} for
binary, int label map for multi-class; a K-channel one-hot mask is accepted), `y_pred` the
probabilities `(B, H, W, C)`. Binary (`num_classes=1`): prediction = `y_pred >= threshold`.
Multi-class (`num_classes=K`): prediction = argmax over the K channels.

A class with no voxel in either prediction or ground truth over everything seen scores 1.0
(nothing to find, nothing predicted), so `result()` never returns NaN.

Written on `keras.ops` (TensorFlow, JAX and PyTorch alike; no TensorFlow import under the others).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["DiceScore", "IoUScore"]


class _OverlapScore(keras.metrics.Metric):
    """Shared streaming machinery of DiceScore / IoUScore."""

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        class_id: int | None = None,
        include_background: bool = False,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if int(num_classes) < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        self.class_id = None if class_id is None else int(class_id)
        self.include_background = bool(include_background)
        if self.class_id is not None and not 0 <= self.class_id < max(self.num_classes, 2):
            raise ValueError(
                f"{type(self).__name__}: class_id={class_id} is out of range for num_classes={num_classes}"
            )
        n = self.num_classes
        # For a binary task the one tracked "class" is the foreground.
        self.intersection = self.add_variable(shape=(n,), initializer="zeros", name="intersection", aggregation="sum")
        self.pred_sum = self.add_variable(shape=(n,), initializer="zeros", name="pred_sum", aggregation="sum")
        self.true_sum = self.add_variable(shape=(n,), initializer="zeros", name="true_sum", aggregation="sum")

    # -- helpers ---------------------------------------------------------------------------
    def _one_hot_pair(self, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = y_true[..., None]
        k = self.num_classes
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != k:
            raise ValueError(f"{type(self).__name__}: y_pred has {y_pred.shape[-1]} channels but num_classes={k}")
        if k == 1:
            pred = ops.cast(y_pred >= self.threshold, "float32")
            true = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
            return true, pred
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), k, dtype="float32")
        if y_true.shape[-1] == k and k > 1:
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = ops.cast(ops.round(ops.cast(y_true[..., 0], "float32")), "int32")
        true = ops.one_hot(labels, k, dtype="float32")
        return true, pred

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        true, pred = self._one_hot_pair(y_true, y_pred)
        if sample_weight is not None:
            w = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            rank = len(true.shape)
            while len(w.shape) < rank:
                w = w[..., None]
            true = true * w
            pred = pred * w
        axes = tuple(range(len(true.shape) - 1))
        self.intersection.assign_add(ops.sum(true * pred, axis=axes))
        self.pred_sum.assign_add(ops.sum(pred, axis=axes))
        self.true_sum.assign_add(ops.sum(true, axis=axes))

    def _per_class(self) -> Any:
        raise NotImplementedError

    def _selected(self, per_class: Any) -> Any:
        if self.num_classes == 1:
            return per_class[0]
        if self.class_id is not None:
            return per_class[self.class_id]
        start = 0 if self.include_background else 1
        return ops.mean(per_class[start:])

    def result(self) -> Any:
        return self._selected(self._per_class())

    def reset_state(self) -> None:
        for v in (self.intersection, self.pred_sum, self.true_sum):
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            threshold=self.threshold,
            class_id=self.class_id,
            include_background=self.include_background,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_unet3plus")
class DiceScore(_OverlapScore):
    """Streaming Dice = 2 sum|P & G| / (sum|P| + sum|G|) over all batches seen.

    `num_classes=1`: binary, thresholded at `threshold`. `num_classes=K`: argmax; `class_id=k`
    reports class k only, otherwise the mean over classes 1..K-1 (0..K-1 with
    `include_background=True`). 1.0 for a class absent from both prediction and ground truth.
    """

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        class_id: int | None = None,
        include_background: bool = False,
        name: str = "dice",
        dtype: Any = None,
    ) -> None:
        super().__init__(num_classes, threshold, class_id, include_background, name=name, dtype=dtype)

    def _per_class(self) -> Any:
        denom = self.pred_sum + self.true_sum
        return ops.where(denom > 0, 2.0 * self.intersection / ops.maximum(denom, 1e-12), ops.ones_like(denom))


@keras.saving.register_keras_serializable(package="keras_unet3plus")
class IoUScore(_OverlapScore):
    """Streaming IoU (Jaccard) = sum|P & G| / sum|P | G| over all batches seen.

    Same arguments and empty-class convention as `DiceScore`.
    """

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        class_id: int | None = None,
        include_background: bool = False,
        name: str = "iou",
        dtype: Any = None,
    ) -> None:
        super().__init__(num_classes, threshold, class_id, include_background, name=name, dtype=dtype)

    def _per_class(self) -> Any:
        union = self.pred_sum + self.true_sum - self.intersection
        return ops.where(union > 0, self.intersection / ops.maximum(union, 1e-12), ops.ones_like(union))
