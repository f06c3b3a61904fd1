"""The distributed UNet 3+ trainer: one custom training loop for every tf.distribute strategy.

Why not ``model.fit``: with TensorFlow 2.21 / Keras 3.15.1, ``model.fit`` under
``MultiWorkerMirroredStrategy`` (two worker processes on 127.0.0.1, CPU) fails before the first
step with ``ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type``
(Keras calls ``strategy.reduce`` on the nested input batch in ``_maybe_symbolic_build``; keras#20585),
while a loop around ``strategy.run`` trains. So the trainer uses that loop for MirroredStrategy too:
one code path, tested on 2 logical CPUs and on two worker processes.

One step, per replica: :mod:`.step` (the explicit all-reduce, then clipping and Adam).

Per epoch: a ``keras.utils.Progbar``, validation by per-volume Dice on whole validation volumes
(:mod:`.validation`, the same path as deployment), the best model as ``best.keras`` (+ model-info
sidecar, written atomically), ``log.csv``, TensorBoard scalars, a checkpoint (model + optimizer +
epoch + best score + early-stopping state), early stopping on the validation Dice and an optional
wall-clock budget.

The trainer is the sequence of named hooks (:meth:`Trainer.fit`); the pieces it calls live beside
it: :mod:`.schedule` (learning rate), :mod:`.step` (the distributed step), :mod:`.validation`,
:mod:`.run_folder` (file names, resume checks, model info, clean-up of a failed start),
:mod:`.checkpoints`, :mod:`.distribute` (strategy, worker agreement) and :mod:`.logs`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import distribute as dist
from .config import TrainConfig
from .run_folder import (
    BEST_MODEL,
    CHECKPOINT_DIR,
    CSV_LOG,
    CURVE_PNG,
    FINAL_MODEL,
    SPLIT_JSON,
    TENSORBOARD_DIR,
    check_resume_config,
    has_checkpoint,
    model_info,
    remove_new_entries,
    sync_best_from_sidecar,
)
from .schedule import learning_rate_schedule, steps_within_budget
from .step import make_train_step, pre_reduced_adam_class
from .validation import check_cases, validation_dice, worker_share

if TYPE_CHECKING:  # the data layer is imported where it is used: a Trainer starts without it
    from ..data.cache import CaseIndex
    from ..data.layouts import Case
    from ..data.pipeline import DatasetInfo
    from ..data.preprocess import PreprocessConfig
    from ..data.splits import Split
    from ..data.tasks import TaskSpec
    from ..modelinfo import ModelInfo
    from .checkpoints import RunState
    from .logs import CSVLog, TensorBoardLog
    from .runlock import RunLock

log = logging.getLogger(__name__)
_T = TypeVar("_T")


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


class Trainer:
    """Train UNet 3+ as configured by a :class:`TrainConfig`.

    ``cases``: the labelled :class:`keras_unet3plus.data.Case` list (default: found under
    ``config.data_dir``); ``split``: a ready :class:`keras_unet3plus.data.Split` (default:
    :func:`keras_unet3plus.data.split_cases` with the config's seed / test size / validation share).
    ``strategy``: a tf.distribute strategy (default: :func:`distribute.select_strategy`).
    ``printer``: where progress lines go (default ``print``; silenced by ``verbose=0``).
    """

    def __init__(
        self,
        config: TrainConfig,
        cases: Sequence[Case] | None = None,
        split: Split | None = None,
        strategy: Any = None,
        printer: Callable[[str], None] | None = None,
    ):
        self.cfg = config.validate()
        if type(self).build_loss is Trainer.build_loss:  # a bad loss name fails before any work
            from ..losses import get_loss

            try:
                get_loss(self.cfg.loss)
            except ValueError as exc:
                raise ValueError(f"invalid training setting loss={self.cfg.loss!r}: {exc}") from None
        self._cases = cases
        self._split = split
        self._strategy = strategy
        self._print = printer or print
        # The run's state, set by the hooks (on_train_start and the pieces it assembles, then the
        # epoch hooks); declared here so that every attribute of a Trainer is listed in one place.
        # TensorFlow and Keras carry no type information: their objects are typed Any here.
        # -- the run: strategy, folder, task
        self.t_start: float = 0.0
        self.strategy: Any = None  # a tf.distribute.Strategy
        self.chief: bool = True  # until the strategy says otherwise (clean-up of a failed start)
        self.multi_worker: bool = False
        self.out: Path = Path(self.cfg.out_dir)
        self.ckpt_dir: Path = self.out / CHECKPOINT_DIR
        self.ckpt_write: str | None = None
        self._lock: RunLock | None = None
        self.spec: TaskSpec | None = None
        self.pre: PreprocessConfig | None = None
        # -- data
        self.split: Split | None = None
        self.train_cases: list[Case] = []
        self.val_cases: list[Case] = []
        self.data_info: DatasetInfo | None = None  # of the first input pipeline
        self.replicas_per_pipeline: int = 1
        self.steps: int = 0  # optimizer steps per epoch
        self._pipeline_kwargs: dict[str, Any] = {}
        self._index: list[CaseIndex] | None = None  # the training cases' slice index, built once
        self.iterator: Any = None  # over the distributed dataset
        # -- model, loss, optimizer, step
        self.build_kwargs: dict[str, Any] = {}
        self.model: Any = None  # a keras.Model
        self.out_names: list[str] = []
        self.loss: dict[str, dict[str, Any]] = {}  # what build_loss returned
        self.optimizer: Any = None  # a keras optimizer
        self._pre_reduced: bool = False
        self._fused_pairs: int = 0
        self._step_fn: Callable | None = None
        # -- checkpoints and resume
        self.state: RunState | None = None  # everything a resumed run needs
        self.ckpt: Any = None  # a tf.train.Checkpoint
        self.manager: Any = None  # its tf.train.CheckpointManager
        self.resumed: str | None = None
        # -- logs and progress
        self.csv_log: CSVLog | None = None
        self.tb: TensorBoardLog | None = None
        self.bar: Any = None  # a keras.utils.Progbar
        # -- the epoch under way, the clock, stopping
        self.epoch: int = 0
        self.t_epoch: float = 0.0
        self.step_in_epoch: int = 0
        self.deadline: float | None = None
        self.val_seconds: float | None = None
        # the clock and step count after this run's first step, which pays for tracing: the
        # time budget's schedule is fitted to the steps after it
        self._first_step_done: tuple[float, int] | None = None
        self.out_of_time: bool = False
        self.stop_reason: str = ""

    # ------------------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.cfg.verbose and self.chief:
            self._print(msg)

    def _started(self, piece: _T | None) -> _T:
        """``piece`` of the run as :meth:`on_train_start` set it up, for the hooks that run after it:
        a hook called before it fails with this message, not on a ``None``."""
        if piece is None:
            raise RuntimeError(f"{type(self).__name__}: a hook ran before on_train_start set up the run")
        return piece

    def fit(self) -> FitResult:
        """Run (or resume) training; returns a :class:`FitResult`.

        The run, as named hooks (nnU-Net's ``run_training`` shape)::

            on_train_start()                      # folder, data, model, optimizer, resume
            for epoch:  on_epoch_start(epoch)     # this epoch's dataset (part-way on a resume)
                        train_step() ...          # + mid-epoch checkpoints, time budget
                        on_epoch_end(epoch)       # validation, best model, logs, checkpoint
            on_train_end()                        # final model, curve, FitResult

        A run that fails before its first checkpoint (bad data, a wrong setting, Ctrl-C) takes back
        what it added to the run folder, so a retry starts clean and no half-made run is left behind.
        """
        out = Path(self.cfg.out_dir)
        existed = out.exists()
        before = set(out.iterdir()) if existed and out.is_dir() else set()
        try:
            return self._run()
        except BaseException as exc:
            from .runlock import RunFolderBusy

            if not isinstance(exc, RunFolderBusy) and self.chief and not has_checkpoint(out / CHECKPOINT_DIR):
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                remove_new_entries(out, existed, before)
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _run(self) -> FitResult:
        self.on_train_start()
        for epoch in range(int(self._started(self.state).epoch.numpy()), self.cfg.epochs):
            self.on_epoch_start(epoch)
            while self.step_in_epoch < self.steps and not self.out_of_time:
                self.train_step()
            self.on_epoch_end(epoch)
            if self.should_stop():
                break
        return self.on_train_end()

    # ------------------------------------------------------------------------------------------
    # hooks
    # ------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        """Strategy, lock, run folder, data index, model, optimizer, step function, resume, logs."""
        import tensorflow as tf

        cfg = self.cfg
        self.t_start = time.time()
        self.strategy = self._strategy or dist.select_strategy(cfg.strategy, cfg.devices)
        self.chief = dist.is_chief(self.strategy)
        self.multi_worker = dist.is_multi_worker(self.strategy)
        if cfg.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(
                f"batch_size {cfg.batch_size} (global) must be a multiple of the "
                f"{self.strategy.num_replicas_in_sync} replicas"
            )
        self.spec = self._task()
        self.pre = cfg.preprocess()
        has_ckpt = tf.train.latest_checkpoint(str(self.ckpt_dir)) is not None
        self.split = self._choose_split(resuming=has_ckpt and cfg.resume)  # before the run folder is touched
        self._prepare_run_folder(has_ckpt=has_ckpt)
        self._prepare_data()
        self._build_model_and_optimizer()
        self._restore()
        from .logs import CSVLog, TensorBoardLog

        epochs_done = int(self._started(self.state).epoch.numpy())
        self.csv_log = CSVLog(self.out / CSV_LOG, enabled=self.chief)
        if self.chief:
            self.csv_log.truncate(epochs_done)
        self.tb = TensorBoardLog(self.out / TENSORBOARD_DIR, enabled=self.chief)
        self.deadline = self.t_start + cfg.max_minutes * 60 if cfg.max_minutes else None
        self.stop_reason = "epochs" if epochs_done < cfg.epochs else "already complete"
        self.say(
            f"training {cfg.epochs - epochs_done} epoch(s) x {self.steps} steps, global "
            f"batch {cfg.batch_size}{', mixed precision' if cfg.mixed_precision else ''}"
            f"{', XLA' if cfg.jit_compile else ''}"
            f"{', paper decoder computed fused' if cfg.fused_decoder and self._fused_pairs else ''}"
        )

    def on_epoch_start(self, epoch: int) -> None:
        """The epoch's progress bar; its data is already queued in the run's one iterator."""
        import keras

        self.epoch = epoch
        self.t_epoch = time.time()
        self.step_in_epoch = int(self._started(self.state).step.numpy())
        if self.iterator is None:
            self.iterator = self._run_iterator(epoch, self.step_in_epoch)
        # a bar only on a terminal: Keras redraws it on every line of a log file or pipe (it takes
        # any POSIX system for an interactive one), 240 kB for the demo; the epoch line says it all
        interactive = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self.bar = keras.utils.Progbar(
            self.steps, verbose=1 if (self.cfg.verbose and self.chief and interactive) else 0, stateful_metrics=["lr"]
        )
        if self.step_in_epoch:
            self.say(f"epoch {epoch + 1}: resuming at step {self.step_in_epoch + 1} of {self.steps}")

    def _run_iterator(self, first_epoch: int, skip: int) -> Any:
        """One iterator over every remaining epoch (each a pure function of (seed, epoch)), started
        ``skip`` steps into ``first_epoch``."""
        local, steps, pipeline = self.replicas_per_pipeline, self.steps, self._pipeline_kwargs
        epochs = (first_epoch, self.cfg.epochs)
        spec, pre = self._started(self.spec), self._started(self.pre)

        def dataset_fn(ctx):
            from ..data.pipeline import build_dataset

            ds, _ = build_dataset(
                self.train_cases,
                spec,
                pre,
                input_context=ctx,
                epochs=epochs,
                batches_per_epoch=steps * local,
                index=self._index,
                **pipeline,
            )
            # one global step takes a per-replica batch for each local replica
            return ds.skip(skip * local)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def train_step(self) -> None:
        """One optimizer step on the next batch; the epoch's running sums live in the checkpoint."""
        cfg, state = self.cfg, self._started(self.state)
        loss, parts, stats = self._started(self._step_fn)(self.iterator)
        loss_v = float(loss.numpy())
        if not math.isfinite(loss_v) and not cfg.mixed_precision:
            raise FloatingPointError(
                f"training loss became {loss_v} at epoch {self.epoch + 1}, step "
                f"{self.step_in_epoch + 1}; lower --learning-rate or keep --clipnorm"
            )
        sums = np.array(
            [loss_v] + [float(parts[k].numpy()) / cfg.batch_size for k in self.out_names] + list(stats.numpy()),
            np.float64,
        )
        state.sums.assign_add(sums)
        self.step_in_epoch += 1
        if self._first_step_done is None:
            self._first_step_done = (time.time(), int(self.optimizer.iterations.numpy()))
        state.step.assign(self.step_in_epoch)
        s = stats.numpy()
        self.bar.update(
            self.step_in_epoch, [("loss", loss_v), ("dice", 2 * s[0] / (s[1] + s[2]) if s[1] + s[2] else 1.0)]
        )
        every = cfg.checkpoint_every_steps
        if every and self.step_in_epoch < self.steps and int(self.optimizer.iterations.numpy()) % every == 0:
            self.save_checkpoint()
        if self.deadline is not None and self.step_in_epoch < self.steps:
            # (a deadline means a time budget: max_minutes is set)
            reserve = self.val_seconds if self.val_seconds is not None else 0.05 * (cfg.max_minutes or 0) * 60
            late = time.time() + reserve > self.deadline
            if self.multi_worker:
                late = bool(dist.agree(self.strategy, np.array([float(late)], np.float32), "max")[0] > 0)
            self.out_of_time = late

    def on_epoch_end(self, epoch: int) -> None:
        """BN statistics across workers, validation, best model, logs, then the epoch's checkpoint."""
        import keras

        cfg, state = self.cfg, self._started(self.state)
        done = self.step_in_epoch
        train_seconds = time.time() - self.t_epoch
        if self.multi_worker:
            dist.average_non_trainable(self.strategy, self.model)
        sums = state.sums.numpy()
        n_out = len(self.out_names)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "steps": done,
            "steps_per_epoch": self.steps,
            "loss": sums[0] / max(1, done),
        }
        for k, name in enumerate(self.out_names):
            row[f"loss_{name}"] = sums[1 + k] / max(1, done)
        s = sums[1 + n_out :]
        row["dice"] = float(2 * s[0] / (s[1] + s[2])) if s[1] + s[2] else 1.0
        row["lr"] = float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))
        row["images_per_s"] = done * cfg.batch_size / max(train_seconds, 1e-9)
        last = epoch + 1 == cfg.epochs or self.out_of_time
        improved = False
        if self.val_cases and ((epoch + 1) % cfg.val_every == 0 or last):
            t_val = time.time()
            spec, pre = self._started(self.spec), self._started(self.pre)
            val_dice, per_case = self.validate(self.model, self.val_cases, spec, pre, self.multi_worker)
            self.val_seconds = time.time() - t_val
            row["val_dice"], row["val_seconds"] = val_dice, self.val_seconds
            if val_dice > float(state.best.numpy()) + cfg.min_delta:
                improved = True
                state.best.assign(val_dice)
                state.best_epoch.assign(epoch + 1)
                state.wait.assign(0)
                if self.chief:
                    from . import checkpoints as ck

                    ck.save_model_atomic(
                        self.model, self.out / BEST_MODEL, self._model_info(val_dice, epoch + 1, per_case)
                    )
            else:
                state.wait.assign_add(1)
        row["seconds"] = time.time() - self.t_epoch
        self._fit_schedule_to_budget(train_seconds, done, epoch)
        state.epoch.assign(epoch + 1)
        state.step.assign(0)
        state.sums.assign(np.zeros_like(sums))
        if self.chief:
            tb = self._started(self.tb)
            self._started(self.csv_log).append(row)
            tb.scalars(
                "train", {k: v for k, v in row.items() if k not in ("epoch", "val_dice", "val_seconds")}, epoch + 1
            )
            if "val_dice" in row:
                tb.scalars("val", {"dice": row["val_dice"]}, epoch + 1)
        self.save_checkpoint()
        msg = f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, train Dice {row['dice']:.4f}"
        if "val_dice" in row:
            msg += f", val Dice {row['val_dice']:.4f}{' (best)' if improved else ''}"
        self.say(msg + f" [{row['seconds']:.0f} s, {row['images_per_s']:.1f} img/s]")

    def should_stop(self) -> bool:
        """Time budget spent, or no validation gain for ``patience`` validations."""
        cfg = self.cfg
        if self.out_of_time:
            self.stop_reason = f"time budget ({cfg.max_minutes} min)"
            return True
        if cfg.patience is not None and self.val_cases and int(self._started(self.state).wait.numpy()) >= cfg.patience:
            self.stop_reason = f"early stopping (no val Dice gain for {cfg.patience} validations)"
            return True
        return False

    def build_loss(self, model) -> dict[str, dict[str, Any]]:
        """The loss of every output of ``model``, as ``model.compile`` takes it:
        ``{"loss": {output: Loss}, "loss_weights": {output: float}}``, each Loss giving one value per
        example. By default the registered loss ``cfg.loss`` (:data:`keras_unet3plus.losses.LOSSES`,
        ``hybrid``) with the config's weights; a subclass overrides this to train with another."""
        from ..losses import get_loss

        return get_loss(self.cfg.loss)(model, **self.cfg.loss_kwargs())

    def save_checkpoint(self) -> None:
        """Checkpoint numbered by the optimizer step: model, optimizer, run state, position in the epoch."""
        from . import checkpoints as ck

        ck.save_checkpoint(self.manager, int(self.optimizer.iterations.numpy()))

    def on_train_end(self) -> FitResult:
        """Final model (the best one, or the last weights), the training curve, the result."""
        from . import checkpoints as ck
        from .logs import plot_history

        self._started(self.tb).close()
        dist.cleanup_write_dir(self._started(self.ckpt_write), self.ckpt_dir, self.strategy)
        state, out, csv_log = self._started(self.state), self.out, self._started(self.csv_log)
        model_path = best_path = None
        if self.chief:
            best_file = out / BEST_MODEL
            if best_file.exists():
                best_path = best_file
                model_path = ck.copy_model_atomic(best_file, out / FINAL_MODEL)
            else:
                model_path = ck.save_model_atomic(
                    self.model, out / FINAL_MODEL, self._model_info(None, int(state.epoch.numpy()), {})
                )
            plot_history(csv_log.rows, out / CURVE_PNG, title=f"UNet 3+ {self._started(self.spec).name}")
        best = float(state.best.numpy())
        result = FitResult(
            out_dir=out,
            model_path=model_path,
            best_path=best_path,
            best_val_dice=best if best >= 0 else None,
            best_epoch=int(state.best_epoch.numpy()) or None,
            epochs_done=int(state.epoch.numpy()),
            stop_reason=self.stop_reason,
            history=list(csv_log.rows),
            resumed_from=self.resumed,
            seconds=time.time() - self.t_start,
            split=self._started(self.split).to_dict(),
        )
        self.say(
            f"done ({self.stop_reason}): {result.epochs_done} epochs, best val Dice "
            f"{'n/a' if result.best_val_dice is None else f'{result.best_val_dice:.4f}'}"
            f"{f' at epoch {result.best_epoch}' if result.best_epoch else ''}; model {model_path}"
        )
        return result

    # ------------------------------------------------------------------------------------------
    # the pieces on_train_start assembles
    # ------------------------------------------------------------------------------------------
    def _task(self) -> TaskSpec:
        from ..data import get_task

        cfg = self.cfg
        if cfg.data_dir and self._cases is None and self._split is None:
            from ..data.layouts import task_for_dataset

            return task_for_dataset(cfg.data_dir, cfg.task, cfg.layout)  # nnU-Net: labels by name
        return get_task(cfg.task)

    def _prepare_run_folder(self, has_ckpt: bool) -> None:
        cfg, out = self.cfg, self.out
        if self.chief:  # one trainer per run folder (released by the kernel if this process dies)
            from .runlock import RunLock

            self._lock = RunLock(out).acquire()
        if has_ckpt and cfg.resume:
            check_resume_config(self.cfg, out)
        if self.chief:
            out.mkdir(parents=True, exist_ok=True)
            if has_ckpt and not cfg.resume:
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                for name in (CSV_LOG, BEST_MODEL, BEST_MODEL + ".unet3plus.json"):
                    (out / name).unlink(missing_ok=True)
            cfg.save(out)
            for stale in out.glob(".*.tmp*"):  # temporaries of a killed run (never referenced)
                stale.unlink(missing_ok=True)
        self.say(f"run folder {out} ({dist.describe(self.strategy)})")

    def _fold_split(self, cases: Sequence[Case], folds: int) -> Split:
        """This run's fold of the data set's ``folds`` folds table (made once, then reused by every fold)."""
        from ..data.splits import cross_validation_split

        cfg = self.cfg
        if cfg.fold is None:
            raise ValueError(
                f"folds={folds} without fold: a run trains one fold (--fold 0..{folds - 1} "
                f"or all); recipes/train_*.py --folds {folds} trains every fold"
            )
        path = cfg.splits_path()
        split = cross_validation_split(
            cases, folds, cfg.fold, path, seed=cfg.split_seed, n_test=cfg.n_test, write=self.chief
        )
        self.say(f"fold {cfg.fold} of {folds} ({path})")
        return split

    def _check_resumed_split(self, split: Split) -> None:
        """A resumed run keeps its cases: checkpoints of one split (or fold) never continue on another."""
        old_path = self.out / SPLIT_JSON
        if not old_path.is_file():
            return
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except ValueError:
            return
        new = split.to_dict()
        changed = [k for k in ("train", "val") if sorted(old.get(k, [])) != sorted(new[k])]
        if changed:
            raise ValueError(
                f"{self.out}: cannot resume, the checkpoints were trained on another split "
                f"({' and '.join(changed)} cases differ from {old_path}); use the same fold / split "
                f"settings, another --out-dir, or --no-resume to start over in this folder"
            )

    def _choose_split(self, resuming: bool) -> Split:
        """The run's cases: the split given, a fold of the data set's folds table, or the seeded split;
        a resumed run must find the split its checkpoints were trained on."""
        from ..data import find_cases, split_cases

        cfg = self.cfg
        split = self._split
        if split is None:
            cases = self._cases
            if cases is None:
                if not cfg.data_dir:
                    raise ValueError("no data: set data_dir (--data-dir) or pass cases")
                cases = find_cases(cfg.data_dir, cfg.layout)
                unlabelled = [c for c in cases if c.label_path is None]
                if unlabelled:
                    raise ValueError(
                        f"{cfg.data_dir}: {len(unlabelled)} case(s) without a label file (first: "
                        f"{unlabelled[0].image_path}); training needs labelled cases "
                        f"(layout {cfg.layout})"
                    )
                from ..data.checks import require_clean_headers

                require_clean_headers(cases, cfg.data_dir)  # every header problem at once, before any work
            if cfg.folds is not None:
                split = self._fold_split(cases, cfg.folds)
            else:
                split = split_cases(cases, seed=cfg.split_seed, n_test=cfg.n_test, val_fraction=cfg.val_fraction)
        if resuming:
            self._check_resumed_split(split)
        return split

    def _prepare_data(self) -> None:
        from ..data.cache import SliceCache, plan_cache
        from ..data.pipeline import build_dataset, index_cases

        cfg, split, spec, pre = self.cfg, self._started(self.split), self._started(self.spec), self._started(self.pre)
        self.train_cases, self.val_cases = list(split.train), list(split.val)
        if cfg.max_val_cases is not None:
            self.val_cases = self.val_cases[: cfg.max_val_cases]
        if not self.train_cases:
            raise ValueError("no training cases after the split")
        if cfg.cache_dir:  # what the cache takes, and whether the disk holds it, before anything is built
            plan = plan_cache(cfg.cache_dir, spec, pre, self.train_cases, cfg.cache_dtype)
            self.say(plan.summary())
            plan.require_space()
        if self.chief:
            from ..modelinfo import atomic_write_text

            atomic_write_text(self.out / SPLIT_JSON, json.dumps(split.to_dict(), indent=2))
        self.say(f"cases: {len(self.train_cases)} train, {len(self.val_cases)} validation, {len(split.test)} test")
        self._pipeline_kwargs = dict(
            batch_size=cfg.batch_size,
            training=True,
            negative_fraction=cfg.negative_fraction,
            augment=cfg.augment,
            cache_dir=cfg.cache_dir,
            seed=cfg.seed,
            cache_dtype=cfg.cache_dtype,
        )
        cache = SliceCache(cfg.cache_dir, spec, pre.for_task(spec), cfg.cache_dtype) if cfg.cache_dir else None
        shard = (dist.worker_rank(self.strategy), dist.cluster_size()) if self.multi_worker else (0, 1)
        self._index = index_cases(self.train_cases, spec, cache, shard=shard)  # once, not per epoch
        infos: list[DatasetInfo] = []

        def probe(ctx):  # the per-replica geometry (steps per epoch) of the first input pipeline
            ds, info = build_dataset(
                self.train_cases,
                spec,
                pre,
                input_context=ctx,
                epoch=0,
                index=self._index,
                **self._pipeline_kwargs,
            )
            infos.append(info)
            return ds

        self.strategy.distribute_datasets_from_function(probe)
        self.data_info = data_info = infos[0]
        pipelines = dist.cluster_size() if self.multi_worker else 1
        self.replicas_per_pipeline = max(1, self.strategy.num_replicas_in_sync // pipelines)
        self.steps = int(cfg.steps_per_epoch or max(1, data_info.steps_per_epoch // self.replicas_per_pipeline))
        self.say(f"training data: {data_info.summary()}")
        # the validation volumes are read (and checked: label values, NaN voxels) now, not after
        # the first epoch: a bad validation case stops the run before any training time is spent
        check_cases(worker_share(self.val_cases, self.strategy if self.multi_worker else None), spec)

    def _build_model_and_optimizer(self) -> None:
        import keras

        from ..model import build
        from . import checkpoints as ck

        cfg, strategy, spec = self.cfg, self.strategy, self._started(self.spec)
        keras.utils.set_random_seed(cfg.seed)
        self.build_kwargs = cfg.build_kwargs(spec.num_classes)
        old_policy = keras.mixed_precision.global_policy()
        with strategy.scope():
            if cfg.mixed_precision:
                keras.mixed_precision.set_global_policy("mixed_float16")
            try:
                model = build(**self.build_kwargs)
            finally:
                keras.mixed_precision.set_global_policy(old_policy)
            if cfg.bn_momentum is not None:
                # short runs: with 0.99 the moving statistics lag far behind the batch statistics after a
                # few hundred steps, and the inference-mode model (validation, deployment) is poor
                for layer in _all_layers(model):
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = float(cfg.bn_momentum)
            adam_cls, self._pre_reduced = pre_reduced_adam_class()
            self.out_names = list(model.output_names)
            self.state = state = ck.RunState.create(n_sums=1 + len(self.out_names) + 3)
            state.planned_steps.assign(max(1, cfg.epochs * self.steps))
            schedule = learning_rate_schedule(cfg, self.steps, state.planned_steps)
            optimizer = adam_cls(learning_rate=schedule, global_clipnorm=cfg.clipnorm, name="adam")
            if cfg.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            self.loss = self.build_loss(model)
        self.model, self.optimizer = model, optimizer
        from ..fused_decoder import fusible_pairs

        self._fused_pairs = len(fusible_pairs(model))
        self._step_fn = make_train_step(
            model, optimizer, strategy, cfg, self.out_names, spec.binary, self._pre_reduced, self.loss
        )

    def _restore(self) -> None:
        from . import checkpoints as ck

        cfg, state = self.cfg, self._started(self.state)
        self.ckpt_write = dist.write_dir(self.ckpt_dir, self.strategy)
        self.ckpt, self.manager = ck.make_manager(
            self.model, self.optimizer, state, self.ckpt_write, cfg.keep_checkpoints
        )
        if cfg.resume:
            self.resumed = ck.restore_newest_good(
                self.ckpt, self.ckpt_dir, say=self._print if self.chief else (lambda _m: None)
            )
        if self.multi_worker:
            it = float(self.optimizer.iterations.numpy())
            agreed = dist.agree(self.strategy, np.array([it, -it], np.float32), "max")
            if agreed[0] != -agreed[1]:
                raise RuntimeError(
                    f"workers restored different checkpoints (steps {int(-agreed[1])}..{int(agreed[0])}); "
                    f"'{self.ckpt_dir}' must be on a file system every worker can read"
                )
        if self.resumed:
            sync_best_from_sidecar(state, self.out / BEST_MODEL)
            self.say(
                f"resumed from {self.resumed}: {int(state.epoch.numpy())} epochs"
                f"{f' and {int(state.step.numpy())} steps' if int(state.step.numpy()) else ''} done, "
                f"optimizer step {int(self.optimizer.iterations.numpy())}, "
                f"best val Dice {float(state.best.numpy()):.4f}"
            )

    def _seconds_per_step(self, train_seconds: float, done: int) -> float:
        """This epoch's time per step, without the run's first step (tracing) where it had others."""
        if self._first_step_done is not None:
            t0, step0 = self._first_step_done
            after = int(self.optimizer.iterations.numpy()) - step0
            if after >= 2 and t0 >= self.t_epoch:
                return (self.t_epoch + train_seconds - t0) / after
        return train_seconds / max(1, done)

    def _fit_schedule_to_budget(self, train_seconds: float, done_in_epoch: int, epoch: int) -> None:
        """With a time budget, end the learning-rate schedule where the budget will end training, not
        at ``epochs`` that will never be reached: the steps that fit in the time left once each
        validation still to come inside it is paid for. Fitted after every epoch, only ever earlier
        (the learning rate keeps falling), because the first epoch's estimate may still carry start-up
        costs (the first validation's tracing)."""
        if self.deadline is None:  # no time budget
            return
        state = self._started(self.state)
        done = int(self.optimizer.iterations.numpy())
        reachable = done + steps_within_budget(
            self.deadline - time.time(),
            self._seconds_per_step(train_seconds, done_in_epoch),
            self.steps,
            self.cfg.epochs - (epoch + 1),
            self.val_seconds or 0.0,
            self.cfg.val_every,
        )
        planned = int(state.planned_steps.numpy())
        if self.multi_worker:
            reachable = int(-dist.agree(self.strategy, np.array([-reachable], np.float32), "max")[0])
        if planned - reachable > 0.02 * (planned - done):  # not for a step or two of clock noise
            state.planned_steps.assign(max(done + 1, reachable))
            self.say(
                f"time budget: the learning-rate schedule now ends at step {int(state.planned_steps.numpy())} "
                f"(of {planned} planned)"
            )

    # ------------------------------------------------------------------------------------------
    def validate(
        self, model, val_cases: Sequence[Case], spec: TaskSpec, pre: PreprocessConfig, multi_worker: bool = False
    ) -> tuple[float, dict[str, float]]:
        """Mean per-volume Dice over whole validation volumes (each worker takes a share of the cases)."""
        return validation_dice(
            model,
            val_cases,
            spec,
            pre,
            batch_size=self.cfg.val_batch_size,
            strategy=self.strategy if multi_worker else None,
        )

    def _model_info(self, val_dice: float | None, epoch: int, per_case: dict[str, float]) -> ModelInfo:
        return model_info(self.cfg, self.spec, self.pre, self.build_kwargs, val_dice, epoch, per_case)


def _all_layers(model) -> Iterator[Any]:
    """Every layer, nested models (keras.applications encoders) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def train(config: TrainConfig, **kwargs: Any) -> FitResult:
    """Convenience: ``Trainer(config, **kwargs).fit()``."""
    return Trainer(config, **kwargs).fit()
