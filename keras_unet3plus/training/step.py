"""The distributed train step: what one optimizer step does on every replica.

Apart from the trainer because it is the one piece that runs inside ``strategy.run`` and
``tf.function``: it sees tensors, never the run's files or bookkeeping, and its all-reduce order is
what keeps replicas and workers identical.

One step, per replica (``strategy.run``):

1. forward + loss + gradients (optionally XLA-compiled, ``jit_compile``; the paper decoder through
   its exact fused view, ``fused_decoder``, with the model's own variables): every output gets its loss
   from what the trainer built (``Trainer.build_loss``: by default
   :func:`keras_unet3plus.losses.for_model`, hybrid loss on ``seg`` and ``side_*``, CGM BCE on
   ``cls``), evaluated *per example*; the replica's loss is ``sum(per-example) / global batch``
   (``tf.nn.compute_average_loss``) plus regularisation losses divided by the replica count, so
   that the all-reduced SUM of gradients is the gradient of the global-batch mean;
2. the gradients are all-reduced (SUM) explicitly, *then* unscaled (mixed precision), clipped by
   their global norm and applied by Adam. Clipping after the all-reduce clips the true global
   gradient (Keras would clip each replica's partial gradient), and the loss-scale optimizer's
   finite check sees identical gradients on every replica, so replicas can never diverge.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Mapping, Sequence

from .config import TrainConfig


def pre_reduced_adam_class() -> tuple[type, bool]:
    """Adam that does not all-reduce gradients again (the step has done it, see module doc), and
    whether that worked: ``(Adam subclass, True)``, or ``(keras Adam, False)`` when this Keras has
    no such hook (the step then divides the reduced gradients by the replica count)."""
    import keras

    class _PreReducedAdam(keras.optimizers.Adam):
        def _all_reduce_sum_gradients(self, grads_and_vars):  # noqa: D401 - Keras hook
            return list(grads_and_vars)

    # guard: if a future Keras renames the hook, fall back to dividing by the replica count
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    if hasattr(TFOptimizer, "_all_reduce_sum_gradients"):
        return _PreReducedAdam, True
    return keras.optimizers.Adam, False


def make_train_step(
    model,
    optimizer,
    strategy,
    cfg: TrainConfig,
    out_names: Sequence[str],
    binary: bool,
    pre_reduced: bool,
    losses: Mapping[str, Mapping[str, Any]],
) -> Callable:
    """The distributed train step ``step(iterator) -> (loss, {output: loss sum}, Dice stats)``, each
    summed over replicas (see the module docstring for why it looks like this). ``losses``: what
    ``model.compile`` would take, ``{"loss": {output: Loss}, "loss_weights": {output: float}}``;
    each Loss's ``call`` gives one value per example."""
    import tensorflow as tf

    from ..fused_decoder import fuse_upsampled_convs
    from ..output_names import SEG

    # the same function of the same variables, computed cheaper (see fused_decoder); the gradients
    # are taken with respect to `model`'s variables, which the view computes with
    forward = fuse_upsampled_convs(model, share_weights=True) if cfg.fused_decoder else model
    loss_fns, loss_w = losses["loss"], losses["loss_weights"]
    global_batch = cfg.batch_size
    tvars, n_rep = model.trainable_variables, strategy.num_replicas_in_sync

    def per_example_loss(y, outs):
        total, parts = 0.0, {}
        for name in out_names:
            value = tf.cast(loss_fns[name].call(y, outs[name]), tf.float32)  # (B,)
            parts[name] = tf.reduce_sum(value)
            total = total + loss_w[name] * value
        return total, parts

    def dice_stats(y, seg):
        seg = tf.cast(seg, tf.float32)
        if binary:
            p = tf.cast(seg > 0.5, tf.float32)
            t = tf.cast(y > 0.5, tf.float32)
        else:
            p = tf.cast(tf.argmax(seg, axis=-1) > 0, tf.float32)
            t = tf.cast(tf.reshape(y, tf.shape(p)) > 0, tf.float32)
        return tf.stack([tf.reduce_sum(p * t), tf.reduce_sum(p), tf.reduce_sum(t)])

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            outs = forward(x, training=True)
            per_ex, parts = per_example_loss(y, outs)
            loss = tf.nn.compute_average_loss(per_ex, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(v, tf.float32) for v in model.losses]))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, tvars)
        return loss, parts, dice_stats(y, outs[SEG]), grads

    forward_backward_c = tf.function(forward_backward, jit_compile=bool(cfg.jit_compile), reduce_retracing=True)

    def replica_step(x, y):
        loss, parts, stats, grads = forward_backward_c(x, y)
        pairs = [(g, v) for g, v in zip(grads, tvars) if g is not None]
        ctx = tf.distribute.get_replica_context()
        reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        if not pre_reduced:  # the optimizer will sum again: pre-divide
            reduced = [g / n_rep for g in reduced]
        optimizer.apply(reduced, [v for _, v in pairs])
        return loss, parts, stats

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        loss, parts, stats = strategy.run(replica_step, args=(x, y))
        red = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
        return red(loss), {k: red(v) for k, v in parts.items()}, red(stats)

    return train_step
