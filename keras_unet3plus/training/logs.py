"""Run logs: CSV (rewritten atomically each epoch), TensorBoard scalars, training-curve PNG.

An epoch a time budget cut short (``steps`` below ``steps_per_epoch``) is marked ``partial`` in the
CSV (and the history a run returns) and drawn apart in the curve, at the training progress it
reached: its loss is a mean over a few batches, not an epoch's, and must not read as one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

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
        """Add an epoch's row; one with ``steps_per_epoch`` gets ``partial`` (1: cut short) after it."""
        out = {}
        for k, v in row.items():
            out[k] = v
            if k == "steps_per_epoch":
                out["partial"] = int(is_partial(row))
        self.rows.append(out)
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


def is_partial(row: Mapping[str, Any]) -> bool:
    """An epoch that ran fewer steps than planned (a time budget stopped it); rows of logs that
    do not record ``steps_per_epoch`` count as full."""
    planned = _int(row.get("steps_per_epoch"))
    return planned > 0 and _int(row.get("steps")) < planned


def _progress(row: Mapping[str, Any]) -> float:
    """Where an epoch's row stands in epochs trained: its number, less what a partial epoch missed."""
    if is_partial(row):
        return float(row["epoch"]) - 1 + _int(row.get("steps")) / _int(row.get("steps_per_epoch"))
    return float(row["epoch"])


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
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    tf.summary.write(tag=name, tensor=tf.constant(value, tf.float32), step=step, metadata=metadata.SerializeToString())


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
        with self._writers[split].as_default(step=int(step)):
            for k, v in values.items():
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    _scalar(k, float(v), int(step))
        self._writers[split].flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def curve_series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[tuple[list, list], tuple[list, list]]:
    """``((x, y) of full epochs, (x, y) of partial ones)`` for column ``key``; x is the training
    progress in epochs (a partial epoch's number, less the share of steps it missed)."""
    full: tuple[list, list] = ([], [])
    cut: tuple[list, list] = ([], [])
    for r in rows:
        v = r.get(key, "")
        if str(r.get("epoch", "")).strip() and v not in ("", None):
            xs, ys = cut if is_partial(r) else full
            xs.append(_progress(r))
            ys.append(float(v))
    return full, cut


def plot_history(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """Training curve PNG: training loss and validation per-volume Dice per epoch. A partial epoch
    is drawn apart (hollow markers, not joined to the lines, named in the legend) at
    the progress it reached, never as a full epoch."""
    rows = [r for r in rows if str(r.get("epoch", "")).strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(ax, key, fmt, color, label) -> bool:
        (x, y), (px, py) = curve_series(rows, key)
        if x:
            ax.plot(x, y, fmt, color=color, label=label)
        if px:
            ax.plot(px, py, fmt[0], color=color, markerfacecolor="white", linestyle="none", label="_partial")
        return bool(x or px)

    fig, ax1 = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    draw(ax1, "loss", "o-", "tab:blue", "training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (sum over outputs)", color="tab:blue")
    ax2 = ax1.twinx()
    if draw(ax2, "val_dice", "s-", "tab:red", "validation Dice (per volume)"):
        ax2.set_ylim(0, 1)
    draw(ax2, "dice", ".--", "tab:orange", "training Dice (batches)")
    ax2.set_ylabel("Dice", color="tab:red")
    lines = [ln for ln in ax1.get_lines() + ax2.get_lines() if not str(ln.get_label()).startswith("_")]
    cut = "; ".join(
        f"epoch {r['epoch']}: {_int(r['steps'])} of {_int(r['steps_per_epoch'])} steps" for r in rows if is_partial(r)
    )
    if cut:  # one legend entry for the hollow markers of every series
        from matplotlib.lines import Line2D

        lines.append(
            Line2D(
                [],
                [],
                marker="o",
                color="gray",
                markerfacecolor="white",
                linestyle="none",
                label=f"partial (time budget): {cut}",
            )
        )
    ax1.legend(
        lines,
        [str(ln.get_label()) for ln in lines],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
        fontsize=8,
        frameon=False,
    )  # below the axes: the twin axes' lines stay visible
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
