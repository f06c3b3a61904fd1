"""The distributed UNet 3+ trainer: one custom training loop for every tf.distribute strategy.

Why not ``model.fit``: with TensorFlow 2.21 / Keras 3.15.1, ``model.fit`` under
``MultiWorkerMirroredStrategy`` (two worker processes on 127.0.0.1, CPU) fails before the first
step with ``ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type``
(Keras calls ``strategy.reduce`` on the nested input batch in ``_maybe_symbolic_build``; keras#20585),
while a loop around ``strategy.run`` trains. So the trainer uses that loop for MirroredStrategy too:
one code path, tested on 2 logical CPUs and on two worker processes.

One step, per replica (``strategy.run``):

1. forward + loss + gradients (optionally XLA-compiled, ``jit_compile``): every output gets its loss
   from :func:`keras_unet3plus.losses.for_model` (hybrid loss on ``seg`` and ``side_*``, CGM BCE on
   ``cls``), evaluated *per example*; the replica's loss is ``sum(per-example) / global batch``
   (``tf.nn.compute_average_loss``) plus regularisation losses divided by the replica count, so
   that the all-reduced SUM of gradients is the gradient of the global-batch mean;
2. the gradients are all-reduced (SUM) explicitly, *then* unscaled (mixed precision), clipped by
   their global norm and applied by Adam. Clipping after the all-reduce clips the true global
   gradient (Keras would clip each replica's partial gradient), and the loss-scale optimizer's
   finite check sees identical gradients on every replica, so replicas can never diverge.

Per epoch: a ``keras.utils.Progbar``, validation by per-volume Dice on whole validation volumes
(:func:`keras_unet3plus.inference.predict_volume`, the same path as deployment), the best model as
``best.keras`` (+ model-info sidecar, written atomically), ``log.csv``, TensorBoard scalars, a
checkpoint (model + optimizer + epoch + best score + early-stopping state), early stopping on the
validation Dice and an optional wall-clock budget.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .config import BUILD_FIELDS, CONFIG_NAME, TrainConfig
from . import distribute as dist

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_MODEL = "best.keras"
FINAL_MODEL = "model.keras"
CSV_LOG = "log.csv"
TENSORBOARD_DIR = "tensorboard"
CURVE_PNG = "training_curve.png"
SPLIT_JSON = "split.json"


@dataclass
class FitResult:
    """What a finished (or stopped) run produced."""

    out_dir: Path
    model_path: Path | None
    best_path: Path | None
    best_val_dice: float | None
    best_epoch: int | None
    epochs_done: int
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    seconds: float = 0.0
    split: dict[str, list[str]] = field(default_factory=dict)


def _prefer_adam_class():
    """Adam that does not all-reduce gradients again (the trainer has done it, see module doc)."""
    import keras

    class _PreReducedAdam(keras.optimizers.Adam):
        def _all_reduce_sum_gradients(self, grads_and_vars):  # noqa: D401 - Keras hook
            return list(grads_and_vars)

    # guard: if a future Keras renames the hook, fall back to dividing by the replica count
    from keras.src.backend.tensorflow.optimizer import TFOptimizer
    if hasattr(TFOptimizer, "_all_reduce_sum_gradients"):
        return _PreReducedAdam, True
    return keras.optimizers.Adam, False


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The Keras schedule for ``cfg.lr_schedule`` over ``cfg.epochs`` epochs (with linear warm-up)."""
    import keras

    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.lr_schedule == "constant":
        return float(cfg.learning_rate)
    if cfg.lr_schedule == "exponential":
        rate = cfg.min_lr_ratio ** (1.0 / max(1, cfg.epochs)) if cfg.min_lr_ratio > 0 else 0.5
        return keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, decay_steps=steps_per_epoch,
                                                           decay_rate=rate)
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - warmup),
                                                      alpha=cfg.min_lr_ratio, warmup_target=cfg.learning_rate,
                                                      warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total, alpha=cfg.min_lr_ratio)


class Trainer:
    """Train UNet 3+ as configured by a :class:`TrainConfig`.

    ``cases``: the labelled :class:`keras_unet3plus.data.Case` list (default: found under
    ``config.data_dir``); ``split``: a ready :class:`keras_unet3plus.data.Split` (default:
    :func:`keras_unet3plus.data.split_cases` with the config's seed / test size / validation share).
    ``strategy``: a tf.distribute strategy (default: :func:`distribute.select_strategy`).
    ``printer``: where progress lines go (default ``print``; silenced by ``verbose=0``).
    """

    def __init__(self, config: TrainConfig, cases=None, split=None, strategy=None,
                 printer: Callable[[str], None] | None = None):
        self.cfg = config.validate()
        self._cases = cases
        self._split = split
        self._strategy = strategy
        self._print = printer or print

    # ------------------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.cfg.verbose and self.chief:
            self._print(msg)

    def fit(self) -> FitResult:
        """Run (or resume) training; returns a :class:`FitResult`.

        A run that fails before its first checkpoint (bad data, a wrong setting, Ctrl-C) takes back
        what it added to the run folder, so a retry starts clean and no half-made run is left behind.
        """
        out = Path(self.cfg.out_dir)
        existed = out.exists()
        before = set(out.iterdir()) if existed and out.is_dir() else set()
        self._lock = None
        try:
            return self._fit()
        except BaseException as exc:
            from .runlock import RunFolderBusy

            if (not isinstance(exc, RunFolderBusy) and getattr(self, "chief", True)
                    and not _has_checkpoint(out / CHECKPOINT_DIR)):
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                _remove_new_entries(out, existed, before)
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _fit(self) -> FitResult:
        import keras
        import tensorflow as tf

        from ..data import find_cases, get_task, split_cases
        from ..losses import for_model
        from ..model import build
        from . import checkpoints as ck
        from .logs import CSVLog, TensorBoardLog, plot_history

        t_start = time.time()
        cfg = self.cfg
        strategy = self._strategy or dist.select_strategy(cfg.strategy, cfg.devices)
        self.strategy = strategy
        self.chief = dist.is_chief(strategy)
        multi_worker = dist.is_multi_worker(strategy)
        n_rep = strategy.num_replicas_in_sync
        out = Path(cfg.out_dir)
        spec = get_task(cfg.task)
        if cfg.data_dir and self._cases is None and self._split is None:
            from ..data.layouts import task_for_dataset
            spec = task_for_dataset(cfg.data_dir, cfg.task, cfg.layout)  # nnU-Net: labels by name
        pre = cfg.preprocess()
        if cfg.batch_size % n_rep:
            raise ValueError(f"batch_size {cfg.batch_size} (global) must be a multiple of the {n_rep} replicas")

        # ---------------- run folder, config, resume check ----------------
        ckpt_dir = out / CHECKPOINT_DIR
        has_ckpt = tf.train.latest_checkpoint(str(ckpt_dir)) is not None
        if self.chief:  # one trainer per run folder (released by the kernel if this process dies)
            from .runlock import RunLock
            self._lock = RunLock(out).acquire()
        if has_ckpt and cfg.resume:
            self._check_resume_config(out)
        if self.chief:
            out.mkdir(parents=True, exist_ok=True)
            if has_ckpt and not cfg.resume:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                for name in (CSV_LOG, BEST_MODEL, BEST_MODEL + ".unet3plus.json"):
                    (out / name).unlink(missing_ok=True)
                has_ckpt = False
            cfg.save(out)
            for stale in out.glob(".*.tmp*"):  # temporaries of a killed run (never referenced)
                stale.unlink(missing_ok=True)
        self.say(f"run folder {out} ({dist.describe(strategy)})")

        # ---------------- data ----------------
        split = self._split
        if split is None:
            cases = self._cases
            if cases is None:
                if not cfg.data_dir:
                    raise ValueError("no data: set data_dir (--data-dir) or pass cases")
                cases = find_cases(cfg.data_dir, cfg.layout)
                from ..data.checks import require_clean_headers
                require_clean_headers(cases, cfg.data_dir)  # every header problem at once, before any work
            split = split_cases(cases, seed=cfg.split_seed, n_test=cfg.n_test, val_fraction=cfg.val_fraction)
        train_cases, val_cases = list(split.train), list(split.val)
        if cfg.max_val_cases is not None:
            val_cases = val_cases[: cfg.max_val_cases]
        if not train_cases:
            raise ValueError("no training cases after the split")
        if self.chief:
            from ..modelinfo import atomic_write_text
            atomic_write_text(out / SPLIT_JSON, json.dumps(split.to_dict(), indent=2))
        self.say(f"cases: {len(train_cases)} train, {len(val_cases)} validation, {len(split.test)} test")

        from ..data.pipeline import build_dataset
        infos = []

        def dataset_fn(ctx):
            ds, info = build_dataset(train_cases, spec, pre, batch_size=cfg.batch_size, training=True,
                                     negative_fraction=cfg.negative_fraction, augment=cfg.augment,
                                     cache_dir=cfg.cache_dir, seed=cfg.seed, input_context=ctx)
            infos.append(info)
            return ds.repeat()

        dist_ds = strategy.distribute_datasets_from_function(dataset_fn)
        info = infos[0]
        steps = int(cfg.steps_per_epoch or info.steps_per_epoch)
        self.say(f"training data: {info.summary()}")

        # ---------------- model, optimizer ----------------
        keras.utils.set_random_seed(cfg.seed)
        build_kwargs = cfg.build_kwargs(spec.num_classes)
        old_policy = keras.mixed_precision.global_policy()
        with strategy.scope():
            if cfg.mixed_precision:
                keras.mixed_precision.set_global_policy("mixed_float16")
            try:
                model = build(**build_kwargs)
            finally:
                keras.mixed_precision.set_global_policy(old_policy)
            if cfg.bn_momentum is not None:
                # short runs: with 0.99 the moving statistics lag far behind the batch statistics after a
                # few hundred steps, and the inference-mode model (validation, deployment) is poor
                for layer in _all_layers(model):
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = float(cfg.bn_momentum)
            adam_cls, pre_reduced = _prefer_adam_class()
            schedule = learning_rate_schedule(cfg, steps)
            optimizer = adam_cls(learning_rate=schedule, global_clipnorm=cfg.clipnorm, name="adam")
            if cfg.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
        self.model, self.optimizer = model, optimizer
        losses = for_model(model, **cfg.loss_kwargs())
        loss_fns, loss_w = losses["loss"], losses["loss_weights"]
        out_names = list(model.output_names)
        binary = spec.binary
        global_batch = cfg.batch_size
        tvars = model.trainable_variables

        # ---------------- checkpoint / resume ----------------
        state = ck.RunState.create()
        ckpt_write = dist.write_dir(ckpt_dir, strategy)
        ckpt, manager = ck.make_manager(model, optimizer, state, ckpt_write, cfg.keep_checkpoints)
        resumed = None
        if cfg.resume:
            resumed = ck.restore_newest_good(ckpt, ckpt_dir, say=self._print if self.chief else (lambda _m: None))
        if multi_worker:
            ep = self._agree(np.array([state.epoch.numpy(), -state.epoch.numpy()], np.float32), "max")
            if ep[0] != -ep[1]:
                raise RuntimeError(f"workers restored different checkpoints (epochs {int(-ep[1])}..{int(ep[0])}); "
                                   f"'{ckpt_dir}' must be on a file system every worker can read")
        if resumed:
            best_path = out / BEST_MODEL
            self._sync_best_from_sidecar(state, best_path)
            self.say(f"resumed from {resumed}: {int(state.epoch.numpy())} epochs done, "
                     f"optimizer step {int(optimizer.iterations.numpy())}, best val Dice {float(state.best.numpy()):.4f}")
        csv_log = CSVLog(out / CSV_LOG, enabled=self.chief)
        if self.chief:
            csv_log.truncate(int(state.epoch.numpy()))
        tb = TensorBoardLog(out / TENSORBOARD_DIR, enabled=self.chief)

        # ---------------- the step ----------------
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
                outs = model(x, training=True)
                per_ex, parts = per_example_loss(y, outs)
                loss = tf.nn.compute_average_loss(per_ex, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(v, tf.float32) for v in model.losses]))
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, tvars)
            return loss, parts, dice_stats(y, outs["seg"]), grads

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

        # ---------------- the loop ----------------
        iterator = iter(dist_ds)
        start_epoch = int(state.epoch.numpy())
        deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes else None
        val_seconds = None
        stop_reason = "epochs"
        if start_epoch >= cfg.epochs:
            stop_reason = "already complete"
        self.say(f"training {cfg.epochs - start_epoch} epoch(s) x {steps} steps, global batch {global_batch}"
                 f"{', mixed precision' if cfg.mixed_precision else ''}{', XLA' if cfg.jit_compile else ''}")
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.time()
            bar = keras.utils.Progbar(steps, verbose=1 if (cfg.verbose and self.chief) else 0,
                                      stateful_metrics=["lr"])
            sums = {"loss": 0.0, **{f"loss_{k}": 0.0 for k in out_names}}
            stats_sum = np.zeros(3)
            done = 0
            out_of_time = False
            for step in range(steps):
                loss, parts, stats = train_step(iterator)
                done += 1
                loss_v = float(loss.numpy())
                if not math.isfinite(loss_v) and not cfg.mixed_precision:
                    raise FloatingPointError(f"training loss became {loss_v} at epoch {epoch + 1}, step {step + 1}; "
                                             f"lower --learning-rate or keep --clipnorm")
                sums["loss"] += loss_v
                for k, v in parts.items():
                    sums[f"loss_{k}"] += float(v.numpy()) / global_batch
                s = stats.numpy()
                stats_sum += s
                bdice = 2 * s[0] / (s[1] + s[2]) if (s[1] + s[2]) > 0 else 1.0
                bar.update(step + 1, [("loss", loss_v), ("dice", bdice)])
                if deadline is not None:
                    reserve = val_seconds if val_seconds is not None else 0.05 * cfg.max_minutes * 60
                    late = time.time() + reserve > deadline
                    if multi_worker:
                        late = bool(self._agree(np.array([float(late)], np.float32), "max")[0] > 0)
                    if late and step + 1 < steps:
                        out_of_time = True
                        break
            train_seconds = time.time() - t_epoch
            if multi_worker:
                self._average_non_trainable(model)
            row: dict[str, Any] = {"epoch": epoch + 1, "steps": done}
            row["loss"] = sums["loss"] / max(1, done)
            for k in out_names:
                row[f"loss_{k}"] = sums[f"loss_{k}"] / max(1, done)
            row["dice"] = float(2 * stats_sum[0] / (stats_sum[1] + stats_sum[2])) if stats_sum[1] + stats_sum[2] else 1.0
            row["lr"] = float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))
            row["images_per_s"] = done * global_batch / max(train_seconds, 1e-9)

            # ---- validation ----
            last = epoch + 1 == cfg.epochs or out_of_time
            improved = False
            if val_cases and ((epoch + 1) % cfg.val_every == 0 or last):
                t_val = time.time()
                val_dice, per_case = self.validate(model, val_cases, spec, pre, multi_worker)
                val_seconds = time.time() - t_val
                row["val_dice"] = val_dice
                row["val_seconds"] = val_seconds
                if val_dice > float(state.best.numpy()) + cfg.min_delta:
                    improved = True
                    state.best.assign(val_dice)
                    state.best_epoch.assign(epoch + 1)
                    state.wait.assign(0)
                    if self.chief:
                        ck.save_model_atomic(model, out / BEST_MODEL,
                                             self._info(pre, build_kwargs, spec, val_dice, epoch + 1, per_case))
                else:
                    state.wait.assign_add(1)
            row["seconds"] = time.time() - t_epoch
            state.epoch.assign(epoch + 1)
            if self.chief:
                csv_log.append(row)
                tb.scalars("train", {k: v for k, v in row.items() if k not in ("epoch", "val_dice", "val_seconds")},
                           epoch + 1)
                if "val_dice" in row:
                    tb.scalars("val", {"dice": row["val_dice"]}, epoch + 1)
            ck.save_checkpoint(manager, epoch + 1)  # every worker (collectives); non-chief into a temp dir
            msg = f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, train Dice {row['dice']:.4f}"
            if "val_dice" in row:
                msg += f", val Dice {row['val_dice']:.4f}{' (best)' if improved else ''}"
            self.say(msg + f" [{row['seconds']:.0f} s, {row['images_per_s']:.1f} img/s]")

            if out_of_time:
                stop_reason = f"time budget ({cfg.max_minutes} min)"
                break
            if cfg.patience is not None and val_cases and int(state.wait.numpy()) >= cfg.patience:
                stop_reason = f"early stopping (no val Dice gain for {cfg.patience} validations)"
                break
        tb.close()
        dist.cleanup_write_dir(ckpt_write, ckpt_dir, strategy)

        # ---------------- final model ----------------
        model_path = best_path = None
        if self.chief:
            best_file = out / BEST_MODEL
            if best_file.exists():
                best_path = best_file
                model_path = ck.copy_model_atomic(best_file, out / FINAL_MODEL)
            else:
                model_path = ck.save_model_atomic(model, out / FINAL_MODEL,
                                                  self._info(pre, build_kwargs, spec, None, int(state.epoch.numpy()), {}))
            plot_history(csv_log.rows, out / CURVE_PNG, title=f"UNet 3+ {spec.name}")
        best = float(state.best.numpy())
        result = FitResult(out_dir=out, model_path=model_path, best_path=best_path,
                           best_val_dice=best if best >= 0 else None,
                           best_epoch=int(state.best_epoch.numpy()) or None, epochs_done=int(state.epoch.numpy()),
                           stop_reason=stop_reason, history=list(csv_log.rows), resumed_from=resumed,
                           seconds=time.time() - t_start, split=split.to_dict())
        self.say(f"done ({stop_reason}): {result.epochs_done} epochs, best val Dice "
                 f"{'n/a' if result.best_val_dice is None else f'{result.best_val_dice:.4f}'}"
                 f"{f' at epoch {result.best_epoch}' if result.best_epoch else ''}; model {model_path}")
        return result

    # ------------------------------------------------------------------------------------------
    def validate(self, model, val_cases: Sequence, spec, pre, multi_worker: bool = False) -> tuple[float, dict]:
        """Mean per-volume Dice over whole validation volumes (each worker takes a share of the cases)."""
        from ..data import load_case
        from ..inference import predict_volume
        from ..metrics import dice

        cases = list(val_cases)
        if multi_worker:
            n = dist.cluster_size()
            k = self._worker_rank()
            cases = cases[k::n]
        per_case: dict[str, float] = {}
        for case in cases:
            vol = self._volume(case, spec)
            labels = predict_volume(model, vol.image, pre, batch_size=self.cfg.val_batch_size, threshold=0.5)
            per_case[case.case_id] = float(dice(labels > 0, vol.label > 0))
        total = np.array([sum(per_case.values()), len(per_case)], np.float32)
        if multi_worker:
            total = self._agree(total, "sum")
        return (float(total[0] / total[1]) if total[1] else float("nan")), per_case

    _VOLUME_CACHE_BYTES = 1 << 30

    def _volume(self, case, spec):
        from ..data import load_case

        cache = self.__dict__.setdefault("_vol_cache", {})
        if case.case_id in cache:
            return cache[case.case_id]
        vol = load_case(case, spec)
        used = sum(v.image.nbytes for v in cache.values())
        if used + vol.image.nbytes <= self._VOLUME_CACHE_BYTES:
            cache[case.case_id] = vol
        return vol

    def _worker_rank(self) -> int:
        task_type, task_id = dist.task_info(self.strategy)
        cluster = dist.tf_config().get("cluster") or {}
        n_chief = len(cluster.get("chief", []))
        return int(task_id) if task_type == "chief" else n_chief + int(task_id)

    def _agree(self, values: np.ndarray, op: str) -> np.ndarray:
        """Combine a small vector across workers (sum or max); identical result on every worker."""
        import tensorflow as tf

        strategy = self.strategy
        local = max(1, len(strategy.extended.worker_devices))
        v = tf.constant(values / local if op == "sum" else values, tf.float32)
        per = strategy.experimental_distribute_values_from_function(lambda ctx: v)
        if op == "max":  # ReduceOp has no MAX: all-gather, then max
            gathered = strategy.gather(per, axis=0)
            return np.asarray(tf.reshape(gathered, (-1, values.size)).numpy().max(axis=0))
        return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None).numpy())

    def _average_non_trainable(self, model) -> None:
        """Average BatchNorm moving statistics over workers. Each worker updates them from its own
        batches only; averaging keeps every worker's model identical (validation and checkpoints)."""
        import keras

        variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
        if not variables:
            return
        values = [np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in variables]
        flat = np.concatenate([a.ravel() for a in values])
        mean = self._agree(flat, "sum") / dist.cluster_size()
        offset = 0
        for v, a in zip(variables, values):
            v.assign(mean[offset: offset + a.size].reshape(a.shape).astype(a.dtype))
            offset += a.size

    def _info(self, pre, build_kwargs, spec, val_dice, epoch, per_case):
        from ..modelinfo import ModelInfo

        kwargs = dict(build_kwargs)
        kwargs["input_shape"] = list(kwargs["input_shape"])
        kwargs["filters"] = list(kwargs["filters"])
        extra = {"trained_by": "keras_unet3plus.training", "epoch": epoch, "run_dir": str(Path(self.cfg.out_dir)),
                 "mixed_precision": self.cfg.mixed_precision}
        if val_dice is not None:
            extra["val_dice"] = float(val_dice)
            extra["val_dice_per_case"] = per_case
        return ModelInfo(task=spec.name, preprocess=pre.to_dict(), num_classes=spec.num_classes, threshold=0.5,
                         build=kwargs, extra=extra)

    def _check_resume_config(self, out: Path) -> None:
        path = out / CONFIG_NAME
        if not path.exists():
            return
        from .config import load_file
        try:
            old = load_file(path)
        except ValueError:
            return
        cur = self.cfg.to_dict()
        changed = [k for k in BUILD_FIELDS if k in old and _norm(old[k]) != _norm(cur[k])]
        if changed:
            raise ValueError(
                f"{out}: cannot resume, the checkpoints were made with different model settings "
                + ", ".join(f"{k}={old[k]!r} (now {cur[k]!r})" for k in changed)
                + "; use another --out-dir, or --no-resume to start over in this folder")

    @staticmethod
    def _sync_best_from_sidecar(state, best_path: Path) -> None:
        """A crash between saving best.keras and the checkpoint leaves a better best.keras than the
        checkpoint knows about: take its score so a worse model never replaces it."""
        from ..modelinfo import load_info, sidecar_path
        if not sidecar_path(best_path).exists():
            return
        try:
            extra = load_info(best_path).extra
        except (ValueError, FileNotFoundError):
            return
        score = extra.get("val_dice")
        if score is not None and float(score) > float(state.best.numpy()):
            state.best.assign(float(score))
            state.best_epoch.assign(int(extra.get("epoch", 0)))


def _has_checkpoint(ckpt_dir: Path) -> bool:
    import tensorflow as tf

    return ckpt_dir.is_dir() and tf.train.latest_checkpoint(str(ckpt_dir)) is not None


def _remove_new_entries(out: Path, existed: bool, before: set) -> None:
    """Delete what a failed run added to ``out`` (the whole folder if the run created it)."""
    if not out.exists():
        return
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in set(out.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _all_layers(model):
    """Every layer, nested models (keras.applications encoders) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def train(config: TrainConfig, **kwargs) -> FitResult:
    """Convenience: ``Trainer(config, **kwargs).fit()``."""
    return Trainer(config, **kwargs).fit()
