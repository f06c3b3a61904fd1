"""Run logs: an epoch a time budget cuts short is marked partial in the CSV and the history, and the
training curve never plots it as a full epoch (issue 30: the demo's last epoch, 10 of 160 steps,
made the loss curve jump at the end)."""

from __future__ import annotations

import csv
from pathlib import Path

from keras_unet3plus.training.logs import CSVLog, curve_series, is_partial, plot_history

FULL = {"steps": 160, "steps_per_epoch": 160}


def test_partial_epoch_is_marked_and_drawn_apart(tmp_path):
    """The CSV says which epoch is partial; the curve puts it where training got to, apart from the
    full epochs' line; logs written before the column existed count as full."""
    log = CSVLog(tmp_path / "log.csv")
    log.append({"epoch": 1, **FULL, "loss": 1.2, "val_dice": 0.5})
    log.append({"epoch": 2, **FULL, "loss": 1.05, "val_dice": 0.6})
    log.append({"epoch": 3, "steps": 10, "steps_per_epoch": 160, "loss": 1.32, "val_dice": 0.62})
    with open(tmp_path / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["epoch", "steps", "steps_per_epoch", "partial"]
    assert [r["partial"] for r in rows] == ["0", "0", "1"]
    again = CSVLog(tmp_path / "log.csv").rows  # what a resumed run reads back
    assert [is_partial(r) for r in again] == [False, False, True]

    (x, y), (px, py) = curve_series(again, "loss")
    assert (x, y) == ([1.0, 2.0], [1.2, 1.05])  # the line holds the full epochs only
    assert px == [2 + 10 / 160] and py == [1.32]  # the cut epoch: at 2.06 epochs, on its own
    assert curve_series([{"epoch": 1, "loss": 0.9}], "loss") == (([1.0], [0.9]), ([], []))  # older logs
    assert plot_history(again, tmp_path / "curve.png").stat().st_size > 0


def test_run_cut_by_its_time_budget_logs_a_partial_epoch(tmp_path):
    """A tiny run whose budget ends after its first step: the epoch's row (CSV and history) says
    1 of 3 steps, partial, and the curve is drawn."""
    from keras_unet3plus.data.phantom import write_dataset
    from keras_unet3plus.training import TrainConfig, Trainer

    data = tmp_path / "data"
    write_dataset(data, 4, layout="lits", task="liver", shape=(64, 64, 12), seed=1)
    cfg = TrainConfig(
        data_dir=str(data),
        out_dir=str(tmp_path / "run"),
        image_size=64,
        filters=(2, 4, 8, 16, 32),
        cat_channels=2,
        batch_size=2,
        steps_per_epoch=3,
        epochs=2,
        n_test=1,
        val_fraction=0.3,
        max_val_cases=1,
        augment=False,
        deep_supervision=False,
        verbose=0,
        max_minutes=0.005,
    )  # 0.3 s: spent before the first step has run
    result = Trainer(cfg).fit()
    assert result.stop_reason.startswith("time budget"), result.stop_reason
    [row] = result.history
    assert (row["steps"], row["steps_per_epoch"], row["partial"]) == (1, 3, 1), row
    with open(Path(cfg.out_dir) / "log.csv", newline="") as fh:
        [logged] = list(csv.DictReader(fh))
    assert logged["partial"] == "1" and logged["steps"] == "1"
    assert curve_series(result.history, "loss")[0] == ([], [])  # nothing drawn as a full epoch
    assert (Path(cfg.out_dir) / "training_curve.png").stat().st_size > 0
