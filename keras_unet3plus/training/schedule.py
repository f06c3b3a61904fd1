"""The learning-rate schedules of a run (constant, exponential, warm-up + cosine).

Apart from the trainer because the schedule is a pure function of the config and the step, with
one piece of run state: where the cosine ends (``total_steps``), which the trainer shortens when a
time budget will stop the run early and which the checkpoint stores (``RunState.planned_steps``).
"""

from __future__ import annotations

import numpy as np

from .config import TrainConfig


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int, total_steps=None):
    """The Keras schedule for ``cfg.lr_schedule`` over ``cfg.epochs`` epochs (with linear warm-up).

    ``total_steps``: a variable holding where the cosine ends (the trainer shortens it when a time
    budget will stop the run early, and checkpoints it); default ``epochs x steps_per_epoch``.
    """
    import keras

    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.lr_schedule == "constant":
        return float(cfg.learning_rate)
    if cfg.lr_schedule == "exponential":
        rate = cfg.min_lr_ratio ** (1.0 / max(1, cfg.epochs)) if cfg.min_lr_ratio > 0 else 0.5
        return keras.optimizers.schedules.ExponentialDecay(
            cfg.learning_rate, decay_steps=steps_per_epoch, decay_rate=rate
        )
    if total_steps is None:
        total_steps = max(1, cfg.epochs * steps_per_epoch)
    return WarmupCosine(cfg.learning_rate, total_steps, warmup, cfg.min_lr_ratio)


def steps_within_budget(
    seconds_left: float,
    seconds_per_step: float,
    steps_per_epoch: int,
    epochs_left: int,
    validation_seconds: float = 0.0,
    val_every: int = 1,
) -> int:
    """How many more optimizer steps fit in ``seconds_left``: whole and partial epochs of
    ``steps_per_epoch`` steps, each ``val_every``-th paying for a validation, at most ``epochs_left``.
    Where the trainer ends a budgeted run's schedule (only the validations inside the budget count)."""
    per_epoch = steps_per_epoch * max(seconds_per_step, 1e-9) + validation_seconds / max(1, val_every)
    return int(min(max(0.0, seconds_left) / per_epoch, max(0, epochs_left)) * steps_per_epoch)


class WarmupCosine:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak * alpha`` at
    ``total_steps`` (a number or a variable read at every step), flat after it."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __init__(self, peak, total_steps, warmup, alpha):
                self.peak, self.total_steps, self.warmup, self.alpha = (
                    float(peak),
                    total_steps,
                    int(warmup),
                    float(alpha),
                )

            def __call__(self, step):
                from keras import ops

                step = ops.cast(step, "float32")
                total = ops.cast(self.total_steps, "float32")
                warm = float(max(1, self.warmup))
                decay_len = ops.maximum(total - self.warmup, 1.0)
                progress = ops.clip((step - self.warmup) / decay_len, 0.0, 1.0)
                cosine = self.peak * (self.alpha + (1 - self.alpha) * 0.5 * (1 + ops.cos(np.pi * progress)))
                if self.warmup <= 0:
                    return cosine
                return ops.where(step < self.warmup, self.peak * step / warm, cosine)

            def get_config(self):
                return {
                    "peak": self.peak,
                    "total_steps": int(np.asarray(self.total_steps)),
                    "warmup": self.warmup,
                    "alpha": self.alpha,
                }

        return _Schedule(*args, **kwargs)
