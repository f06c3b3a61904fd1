"""Choosing the tf.distribute strategy, who writes files, and what the workers agree on.

- No ``TF_CONFIG`` cluster (the usual case): ``MirroredStrategy`` over the local devices (all GPUs,
  or the CPU; ``devices=[...]`` picks them, e.g. two logical CPUs in tests).
- ``TF_CONFIG`` names a cluster with workers: ``MultiWorkerMirroredStrategy`` (one process per
  machine, synchronous all-reduce). This is how training goes beyond one machine; every worker runs
  the same command with its own ``TF_CONFIG`` ``task``.

The trainer uses one custom loop (``strategy.run``) for every strategy: with TF 2.21 / Keras 3.15
``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (see :mod:`keras_unet3plus.training.trainer`).

Files under ``MultiWorkerMirroredStrategy``: only the chief (task ``chief``, or ``worker`` 0 when
the cluster has no chief) writes into the run folder. Checkpoint saving may run collective ops, so
every worker saves; the others write into a private temporary folder (:func:`write_dir`) that is
deleted afterwards, as the TensorFlow multi-worker guide prescribes.

Agreement (:func:`agree`, :func:`average_non_trainable`): the few numbers every worker must see
alike (the time budget, the restored step, the validation Dice, BatchNorm statistics) are combined
across workers, so their models and decisions never drift apart.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "default")


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset); a clear error when malformed."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}): {raw[:200]!r}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {raw[:200]!r}")
    return cfg


def cluster_size() -> int:
    """Number of chief + worker tasks named by ``TF_CONFIG`` (0 without a cluster)."""
    cluster = tf_config().get("cluster") or {}
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def select_strategy(kind: str = "auto", devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The strategy for ``kind``.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster, else
    ``MirroredStrategy`` over ``devices`` (default: every local GPU, else the CPU).
    ``mirrored`` / ``multiworker`` force one; ``default`` is the no-op default strategy.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        kind = "multiworker" if cluster_size() > 0 else "mirrored"
    if kind == "multiworker":
        if cluster_size() == 0:
            raise ValueError(
                "strategy 'multiworker' needs TF_CONFIG with a cluster "
                '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}})'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind == "default":
        return tf.distribute.get_strategy()
    if devices:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # one CPU device: MirroredStrategy still gives the same code path (replica context, all-reduce)
    return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()  # noqa: SLF001 (public equivalent does not exist)


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    """(task type, task id) of this process; (None, None) outside a multi-worker cluster."""
    if not is_multi_worker(strategy):
        return None, None
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes the run's files (always True on one machine)."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    cluster = tf_config().get("cluster") or {}
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def write_dir(path: str | os.PathLike, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes what it would write to ``path``: ``path`` on the chief, a
    private temporary folder on the other workers (remove it with :func:`cleanup_write_dir`)."""
    path = os.fspath(path)
    if is_chief(strategy):
        return path
    _, task_id = task_info(strategy)
    return tempfile.mkdtemp(prefix=f"unet3plus_worker{task_id}_")


def cleanup_write_dir(path: str | os.PathLike, target: str | os.PathLike, strategy: tf.distribute.Strategy) -> None:
    """Delete a non-chief worker's temporary folder made by :func:`write_dir`."""
    if not is_chief(strategy) and os.fspath(path) != os.fspath(target):
        shutil.rmtree(path, ignore_errors=True)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for logs: strategy, replicas, devices / cluster task."""
    name = type(strategy).__name__
    task_type, task_id = task_info(strategy)
    where = f", task {task_type}:{task_id} of {cluster_size()}" if task_type is not None else ""
    try:
        devices = ", ".join(strategy.extended.worker_devices)
    except RuntimeError:  # the default (no-op) strategy: wherever TensorFlow places the ops
        devices = "the default device"
    return f"{name} with {strategy.num_replicas_in_sync} replica(s){where} on {devices}"


# ------------------------------------------------------------------------------------------------
# what the workers of a multi-worker run agree on
# ------------------------------------------------------------------------------------------------


def worker_rank(strategy: tf.distribute.Strategy) -> int:
    """This process's place among the cluster's tasks: the chief(s) first, then the workers."""
    task_type, task_id = task_info(strategy)
    if task_id is None:
        raise ValueError("worker_rank needs a multi-worker strategy: this process is in no TF_CONFIG cluster")
    cluster = tf_config().get("cluster") or {}
    n_chief = len(cluster.get("chief", []))
    return int(task_id) if task_type == "chief" else n_chief + int(task_id)


def agree(strategy: tf.distribute.Strategy, values: np.ndarray, op: str) -> np.ndarray:
    """Combine a small vector across workers (sum or max); identical result on every worker."""
    local = max(1, len(strategy.extended.worker_devices))
    v = tf.constant(values / local if op == "sum" else values, tf.float32)
    per = strategy.experimental_distribute_values_from_function(lambda ctx: v)
    if op == "max":  # ReduceOp has no MAX: all-gather, then max
        gathered = strategy.gather(per, axis=0)
        return np.asarray(tf.reshape(gathered, (-1, values.size)).numpy().max(axis=0))
    return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None).numpy())


def average_non_trainable(strategy: tf.distribute.Strategy, model) -> None:
    """Average BatchNorm moving statistics over workers. Each worker updates them from its own
    batches only; averaging keeps every worker's model identical (validation and checkpoints)."""
    import keras

    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables:
        return
    values = [np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in variables]
    flat = np.concatenate([a.ravel() for a in values])
    mean = agree(strategy, flat, "sum") / cluster_size()
    offset = 0
    for v, a in zip(variables, values):
        v.assign(mean[offset : offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size
