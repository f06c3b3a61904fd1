"""Crash-safe checkpoints and model files.

- Per-epoch checkpoints: ``tf.train.Checkpoint`` of the model, the optimizer (Adam moments,
  iteration count, loss scale) and the run state (epochs done, best validation Dice, early-stopping
  wait), managed by ``tf.train.CheckpointManager``. TensorFlow writes the data files first and only
  then rewrites the small ``checkpoint`` index file (itself via a temporary file + rename), so a
  process killed at any moment (``kill -9``) leaves the index pointing at the last complete
  checkpoint; a half-written data file of the next one is never referenced.
- Models (``best.keras``, ``model.keras``): saved to a temporary ``.keras`` file in the same folder,
  then ``os.replace``d, then their :mod:`~keras_unet3plus.modelinfo` sidecar (also atomic).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..atomic import atomic_path
from ..modelinfo import ModelInfo, save_info, sidecar_path


@dataclass
class RunState:
    """Counters that a resumed run continues from (saved in every checkpoint).

    ``step`` and ``sums`` place a mid-epoch checkpoint inside its epoch (steps done, the epoch's
    running loss / Dice sums), so a resumed epoch continues with the batches and the log row an
    uninterrupted run would have had; ``planned_steps`` is where the learning-rate schedule ends.
    """

    epoch: tf.Variable  # completed epochs
    best: tf.Variable  # best validation per-volume Dice so far (-1: none yet)
    best_epoch: tf.Variable  # epoch (1-based) that reached it (0: none)
    wait: tf.Variable  # validations since the last improvement (early stopping)
    step: tf.Variable  # steps done in the current epoch
    sums: tf.Variable  # the current epoch's running sums (loss, per-output losses, Dice stats)
    planned_steps: tf.Variable  # where the LR schedule ends (shortened by a time budget)

    @classmethod
    def create(cls, n_sums: int = 8) -> RunState:
        # plain (non-distributed) variables, created outside any strategy scope: the Python loop
        # updates them between steps
        with tf.init_scope():
            return cls(
                epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
                best=tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_dice"),
                best_epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch"),
                wait=tf.Variable(0, dtype=tf.int64, trainable=False, name="wait"),
                step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch"),
                sums=tf.Variable(np.zeros(n_sums), dtype=tf.float64, trainable=False, name="epoch_sums"),
                planned_steps=tf.Variable(1, dtype=tf.int64, trainable=False, name="planned_steps"),
            )

    def trackables(self) -> dict[str, tf.Variable]:
        return dict(
            epoch=self.epoch,
            best=self.best,
            best_epoch=self.best_epoch,
            wait=self.wait,
            step=self.step,
            sums=self.sums,
            planned_steps=self.planned_steps,
        )


def make_manager(
    model: keras.Model, optimizer, state: RunState, directory: str | os.PathLike, max_to_keep: int = 3
) -> tuple[tf.train.Checkpoint, tf.train.CheckpointManager]:
    """Checkpoint of (model, optimizer, run state) and its manager in ``directory``.

    The random-number states of the model's layers (dropout's ``SeedGenerator``) are saved too:
    Keras tracks them as model variables but ``tf.train.Checkpoint(model=...)`` does not reach them,
    and without them a resumed run draws other dropout masks than an uninterrupted one.
    """
    seeds = [v for v in model.variables if "seed_generator_state" in v.path]
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, seeds=seeds, **state.trackables())
    manager = tf.train.CheckpointManager(
        ckpt, directory=os.fspath(directory), max_to_keep=max_to_keep, checkpoint_name="ckpt"
    )
    return ckpt, manager


def checkpoint_candidates(directory: str | os.PathLike) -> list[str]:
    """Checkpoint prefixes in ``directory``, newest first (from the index file, then the data files)."""
    directory = Path(directory)
    found: list[str] = []
    state = tf.train.get_checkpoint_state(str(directory)) if directory.is_dir() else None
    if state is not None:
        found += [str(p) for p in reversed(list(state.all_model_checkpoint_paths))]
    on_disk = (
        sorted(
            directory.glob("ckpt-*.index"),
            key=lambda p: int(p.name[5:-6]) if p.name[5:-6].isdigit() else -1,
            reverse=True,
        )
        if directory.is_dir()
        else []
    )
    for idx in on_disk:
        prefix = str(idx)[: -len(".index")]
        if prefix not in found:
            found.append(prefix)
    return [p if os.path.isabs(p) else str(directory / p) for p in found]


def restore_newest_good(ckpt: tf.train.Checkpoint, directory: str | os.PathLike, say=print) -> str | None:
    """Restore the newest checkpoint that reads back whole; an unreadable newer one (truncated by a
    full disk, a killed copy) is reported and skipped, never deleted. None when there is none."""
    candidates = checkpoint_candidates(directory)
    for k, prefix in enumerate(candidates):
        try:
            ckpt.restore(prefix).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError, OSError, IndexError) as exc:  # IndexError: short read
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            more = "the previous one" if k + 1 < len(candidates) else "nothing (starting over)"
            say(f"checkpoint {prefix} is unreadable ({reason}); falling back to {more}")
            continue
        return prefix
    return None


def save_checkpoint(manager: tf.train.CheckpointManager, number: int) -> str:
    """Write checkpoint ``number``; a failed write names the folder and leaves the older ones."""
    try:
        return manager.save(checkpoint_number=number)
    except (OSError, tf.errors.OpError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            getattr(exc, "errno", None) or 0,
            f"{manager.directory}: could not write checkpoint {number} ({reason}); the previous "
            "checkpoints are intact and a rerun resumes from the newest of them",
        ) from exc


def save_model_atomic(model: keras.Model, path: str | os.PathLike, info: ModelInfo | None = None) -> Path:
    """Save ``model`` as a ``.keras`` file atomically (keras_unet3plus.atomic), then its sidecar."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got '{path}'")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    if info is not None:
        save_info(path, info)
    return path


def copy_model_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a model file and its sidecar atomically (e.g. ``best.keras`` -> ``model.keras``)."""
    src, dst = Path(src), Path(dst)
    for a, b in ((src, dst), (sidecar_path(src), sidecar_path(dst))):
        if a.exists():
            with atomic_path(b) as tmp:
                shutil.copyfile(a, tmp)
    return dst
