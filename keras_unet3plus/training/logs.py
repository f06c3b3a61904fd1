"""Run logs: CSV (rewritten atomically each epoch), TensorBoard scalars, training-curve PNG."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_path, atomic_write_text


class CSVLog:
    """``log.csv``: one row per epoch. Rewritten atomically (temp file + rename) after every epoch,
    so a crash never leaves a torn line; rows of epochs that the resumed checkpoint does not contain
    are dropped on resume (:meth:`truncate`)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]

    def truncate(self, epochs_done: int) -> None:
        """Keep the rows of epochs 1..``epochs_done`` (those covered by the restored checkpoint)."""
        self.rows = [r for r in self.rows if _int(r.get("epoch")) <= epochs_done]
        self._write()

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        self._write()

    def _write(self) -> None:
        if not self.enabled:
            return
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys or ["epoch"], restval="")
        writer.writeheader()
        writer.writerows([{k: _fmt(v) for k, v in r.items()} for r in self.rows])
        atomic_write_text(self.path, buf.getvalue())


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def _num(v: Any) -> Any:
    if v in ("", None):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) and "e" not in str(v).lower() else f


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar event. ``tf.summary.scalar`` needs the ``tensorboard`` package; this
    writes the very same record (scalar plugin metadata) with TensorFlow alone."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(tag=name, tensor=tf.constant(value, tf.float32), step=step,
                     metadata=metadata.SerializeToString())


class TensorBoardLog:
    """tf.summary writers ``tensorboard/train`` and ``tensorboard/val`` (chief only)."""

    def __init__(self, folder: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        self._writers = {}
        if enabled:
            import tensorflow as tf
            for split in ("train", "val"):
                self._writers[split] = tf.summary.create_file_writer(str(Path(folder) / split))

    def scalars(self, split: str, values: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        import tensorflow as tf
        with self._writers[split].as_default(step=int(step)):
            for k, v in values.items():
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    _scalar(k, float(v), int(step))
        self._writers[split].flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def plot_history(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """Training curve PNG: training loss and validation per-volume Dice per epoch."""
    rows = [r for r in rows if str(r.get("epoch", "")).strip()]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(key):
        xs, ys = [], []
        for r in rows:
            v = r.get(key, "")
            if v not in ("", None):
                xs.append(float(r["epoch"]))
                ys.append(float(v))
        return xs, ys

    fig, ax1 = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    x, y = col("loss")
    ax1.plot(x, y, "o-", color="tab:blue", label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (sum over outputs)", color="tab:blue")
    ax2 = ax1.twinx()
    x, y = col("val_dice")
    if x:
        ax2.plot(x, y, "s-", color="tab:red", label="validation Dice (per volume)")
        ax2.set_ylim(0, 1)
    x, y = col("dice")
    if x:
        ax2.plot(x, y, ".--", color="tab:orange", label="training Dice (batches)")
    ax2.set_ylabel("Dice", color="tab:red")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    ax1.set_title(title or "UNet 3+ training")
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path
