"""The end-to-end demo: phantom data -> training -> held-out evaluation -> export, in minutes on a CPU.

:func:`run_demo` generates a synthetic CT data set (LiTS layout for liver, MSD layout for spleen;
:mod:`keras_unet3plus.data.phantom`), trains a small UNet 3+ with the paper's ingredients (3-slice
input, hybrid loss, full-scale deep supervision, CGM) under a wall-clock budget, evaluates the
best model on held-out phantom cases with per-volume metrics, and exports it. Everything lands in
one folder::

    OUT/data/                 the phantom data set (NIfTI)
    OUT/run/                  the training run (checkpoints, log.csv, TensorBoard, config.yaml)
    OUT/model.keras           the best model (+ model.keras.unet3plus.json: preprocessing, task)
    OUT/metrics.json          per-case and mean metrics on the held-out cases
    OUT/training_curve.png    loss and validation Dice per epoch
    OUT/overlay.png           TP / FN / FP overlay of a held-out case (paper colours)
    OUT/model.onnx            the deploy graph (SavedModel folder when ONNX tools are missing)
    OUT/real_scan_overlay.png with ``reference_scan``: the model on a labelled real scan (never
                              trained on; :mod:`.reference_scan`), its Dice in metrics.json, also
                              on acquisition variants of it (3 mm voxels, cropped, low dose)
    OUT/real_scan_worst_overlay.png  the variant with the lowest Dice
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from ..training.config import TrainConfig

#: the demo's small configuration (paper ingredients, CPU-sized). The efficient full-scale decoder
#: (convolve, then upsample) trained 2.6x faster per step than the paper's on a 2-core AVX2 CPU
#: (0.97 s vs 2.49 s for a batch of 8; measured before the trainer computed the paper decoder fused,
#: which about halves its step), so the 10-minute budget buys 2.6x the steps
DEMO_PRESET: dict[str, Any] = dict(
    image_size=96,
    context=1,
    filters=(16, 32, 64, 128, 256),
    cat_channels=16,
    decoder="efficient",
    deep_supervision=True,
    cgm=True,
    architecture="unet3plus",
    backbone="unet",
    bn_momentum=0.9,
    batch_size=8,
    learning_rate=3e-3,
    lr_schedule="cosine",
    warmup_epochs=0.3,
    min_lr_ratio=0.02,
    clipnorm=1.0,
    epochs=12,
    negative_fraction=0.1,
    augment=True,
    val_every=1,
    val_batch_size=16,
    patience=None,
    keep_checkpoints=2,
    verbose=1,
)
#: more patients rather than more passes over few: generating a case takes ~0.15 s, and a model that
#: saw 54 phantom patients (with augmentation) transfers to real CT better than one that saw 24
DEMO_CASES = 60
DEMO_TEST = 6
DEMO_SHAPE = (128, 128, 32)


@dataclass
class DemoResult:
    out_dir: Path
    model_path: Path
    metrics_path: Path
    curve_path: Path | None
    overlay_path: Path | None
    export_path: Path | None
    mean_dice: float
    per_case: dict[str, float]
    seconds: float
    stage_seconds: dict[str, float]


def run_demo(
    out_dir: str | os.PathLike = "unet3plus-demo",
    minutes: float = 10.0,
    task: str = "liver",
    n_cases: int = DEMO_CASES,
    n_test: int = DEMO_TEST,
    shape: tuple[int, int, int] = DEMO_SHAPE,
    overrides: dict[str, Any] | None = None,
    export: bool = True,
    seed: int = 0,
    reference_scan: str | os.PathLike | None = None,
    printer: Callable[[str], None] = print,
) -> DemoResult:
    """Generate, train, evaluate and export within ``minutes`` of wall time (see module doc)."""
    from ..data import find_cases, get_task, split_cases
    from ..training import train
    from ..training.checkpoints import copy_model_atomic
    from .evaluate import evaluate_held_out

    t0 = time.time()
    stages: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_task(task)
    layout = _layout_of(spec)

    # 1. data
    data_dir = _demo_data(out / "data", n_cases, layout, spec, shape, seed, printer)
    split = split_cases(find_cases(data_dir, layout), seed=seed, n_test=n_test, val_fraction=0.12)
    stages["data"] = time.time() - t0

    # 2. training: the budget is what remains after data, minus evaluation and export
    reserve = 1.6 if export else 0.8  # minutes kept for evaluation (+ ONNX export and its check)
    budget = max(0.5, minutes - (time.time() - t0) / 60 - reserve)
    cfg = _demo_config(out, data_dir, spec, n_test, seed, budget, overrides)
    printer(_training_line(cfg))
    t1 = time.time()
    result = train(cfg, split=split, printer=printer)
    stages["train"] = time.time() - t1

    # 3. held-out evaluation (+ the labelled real scan, when one is named)
    t2 = time.time()
    model_path = out / "model.keras"
    copy_model_atomic(result.model_path, model_path)
    metrics, overlay_path = evaluate_held_out(model_path, split.test, spec, out, printer)
    curve = _copy_training_curve(result.out_dir, out)
    metrics.update(training=_training_record(result, stages["train"]), split=split.to_dict(), config=cfg.to_dict())
    measures = measure_reference_scan(model_path, reference_scan, out, printer) if reference_scan else None
    if measures:
        metrics["reference_scan"] = _reference_scan_record(measures)
    stages["evaluate"] = time.time() - t2

    # 4. export
    export_path = None
    if export:
        t3 = time.time()
        export_path = export_demo_model(model_path, data_dir, out, printer)
        stages["export"] = time.time() - t3
    seconds = time.time() - t0
    metrics_path = _write_metrics(out, metrics, stages, seconds, export_path)
    curve_path = curve if curve.exists() else None
    mean, per_case = metrics["mean"]["dice"], metrics["per_case_dice"]
    res = DemoResult(
        out, model_path, metrics_path, curve_path, overlay_path, export_path, mean, per_case, seconds, stages
    )
    _report(printer, res, split, spec, measures, result.out_dir)
    return res


def _layout_of(spec) -> str:
    """The layout the demo writes a task's phantom in: the spleen's data set is MSD's, the liver's LiTS'."""
    return "msd" if spec.organ == "spleen" else "lits"


def _demo_config(
    out: Path,
    data_dir: Path,
    spec,
    n_test: int,
    seed: int,
    budget: float,
    overrides: dict[str, Any] | None,
) -> TrainConfig:
    """The demo's training settings: :data:`DEMO_PRESET` on this run's data, folders, seed and
    time budget (minutes), under the caller's ``overrides``."""
    preset = dict(
        DEMO_PRESET,
        task=spec.name,
        layout=_layout_of(spec),
        out_dir=str(out / "run"),
        data_dir=str(data_dir),
        n_test=n_test,
        seed=seed,
        split_seed=seed,
        max_minutes=round(budget, 2),
    )
    return TrainConfig.from_sources(None, overrides or {}, base=preset)


def _training_line(cfg: TrainConfig) -> str:
    """The line that says, before training starts, what is trained and for how long at most."""
    return (
        f"[demo] training for at most {cfg.max_minutes:.1f} min: {cfg.image_size}x{cfg.image_size}x3 input, "
        f"filters {tuple(cfg.filters)}, cat_channels {cfg.cat_channels}, {cfg.decoder} full-scale decoder, "
        f"hybrid loss + deep supervision + CGM"
    )


def _copy_training_curve(run_dir: Path, out: Path) -> Path:
    """The run's training curve copied beside the model (where the demo's listing points); its
    path either way (a run too short to plot one leaves none)."""
    curve = out / "training_curve.png"
    if (run_dir / "training_curve.png").exists():
        shutil.copyfile(run_dir / "training_curve.png", curve)
    return curve


def _training_record(result, train_seconds: float) -> dict[str, Any]:
    """How training went, for metrics.json: epochs, why it stopped, the best validation Dice."""
    return {
        "epochs": result.epochs_done,
        "stop_reason": result.stop_reason,
        "best_val_dice": result.best_val_dice,
        "best_epoch": result.best_epoch,
        "train_seconds": round(train_seconds, 1),
    }


def _reference_scan_record(measures) -> dict[str, Any]:
    """The real scan's entry in metrics.json: the scan as acquired, every variant, and the worst."""
    real, worst = measures[0], min(measures, key=lambda m: m.dice)
    return {
        "scan": str(real.scan),
        "organ": real.organ,
        "dice": real.dice,
        "per_slice_dice": real.per_slice_dice,
        "variants": [m.to_dict() for m in measures],
        "worst": {"variant": worst.variant, "dice": worst.dice},
    }


def _write_metrics(
    out: Path, metrics: dict, stages: dict[str, float], seconds: float, export_path: Path | None
) -> Path:
    """metrics.json, written last (the seconds of every stage and where the export went are in it),
    atomically: a demo stopped while writing leaves the previous file or none."""
    from ..modelinfo import atomic_write_text
    from .evaluate import json_default

    metrics["seconds"] = {k: round(v, 1) for k, v in stages.items()} | {"total": round(seconds, 1)}
    metrics["export"] = str(export_path) if export_path else None
    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=json_default))
    return metrics_path


def measure_reference_scan(model_path: Path, folder, out: Path, printer=print):
    """The demo model on a labelled real scan and its acquisition variants (:mod:`.reference_scan`),
    as acquired first; a missing folder is a note, not an error (the README's command names
    ``../shared/realct``, which a fresh clone may lack)."""
    from .reference_scan import measure_acquisition_variants, variants_table

    if not Path(folder).is_dir():
        printer(f"[demo] no reference scan at {folder}: skipping the real-scan measure")
        return None
    measures = measure_acquisition_variants(
        model_path, folder, overlay=out / "real_scan_overlay.png", worst_overlay=out / "real_scan_worst_overlay.png"
    )
    printer(f"  {measures[0].line()}")
    printer("  the same scan as other acquisitions would give it (derived; never trained on):")
    for line in variants_table(measures):
        printer(line)
    return measures


def export_demo_model(model_path: Path, data_dir: Path, out: Path, printer=print) -> Path | None:
    """ONNX (verified against Keras) when the ONNX tools are installed, else a SavedModel."""
    try:
        from ..export import export_model
    except ImportError:
        printer("[demo] keras_unet3plus.export is not available: skipping the export")
        return None
    for target, path in (("onnx", out / "model.onnx"), ("savedmodel", out / "savedmodel")):
        try:
            res = export_model(
                str(model_path), target, out=path, data_dir=str(data_dir), verify_slices=8, log=lambda m: None
            )
        except ImportError as exc:  # MissingExtraError is an ImportError
            printer(f"[demo] {target} export unavailable ({exc}); trying the next format")
            continue
        printer(f"[demo] exported {target}: {path} (parity check {'passed' if res.passed else 'FAILED'})")
        return path
    return None


def _demo_data(
    data_dir: Path,
    n_cases: int,
    layout: str,
    spec,
    shape: tuple[int, int, int],
    seed: int,
    printer: Callable[[str], None],
) -> Path:
    """The demo's phantom data set, written once and reused while its settings and the phantom's
    version are the same (a marker file holds them)."""
    from ..data.phantom import PHANTOM_VERSION, write_dataset

    printer(
        f"[demo] generating {n_cases} phantom {spec.organ} cases ({layout} layout, "
        f"{shape[0]}x{shape[1]}x{shape[2]}) in {data_dir}"
    )
    marker = data_dir / ".complete.json"
    want = {
        "n_cases": n_cases,
        "shape": list(shape),
        "task": spec.name,
        "seed": seed,
        "crop_fov": True,
        "phantom": PHANTOM_VERSION,
    }
    if not (marker.exists() and json.loads(marker.read_text()) == want):
        shutil.rmtree(data_dir, ignore_errors=True)
        write_dataset(data_dir, n_cases, layout=layout, task=spec.name, shape=shape, seed=seed, crop_fov=True)
        marker.write_text(json.dumps(want))
    return data_dir


def _report(printer: Callable[[str], None], res: DemoResult, split, spec, measures, run_dir: Path) -> None:
    """The demo's closing lines: time per stage, the held-out and real-scan Dice, what it wrote."""
    printer("")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in res.stage_seconds.items())
    printer(f"[demo] done in {res.seconds / 60:.1f} min ({parts})")
    printer(
        f"[demo] held-out per-volume Dice ({len(split.test)} phantom {spec.organ} cases): "
        f"mean {res.mean_dice:.4f}, min {min(res.per_case.values()):.4f}"
    )
    real, worst = (measures[0], min(measures, key=lambda m: m.dice)) if measures else (None, None)
    if measures:
        printer(
            f"[demo] real scan (never trained on): {real.organ} Dice {real.dice:.4f} ({real.scan}); "
            f"worst acquisition variant: {worst.variant} {worst.dice:.4f}"
        )
    files = {
        "model": res.model_path,
        "metrics": res.metrics_path,
        "training curve": res.out_dir / "training_curve.png",  # listed even where the run plotted none
        "overlay": res.overlay_path,
        "real-scan overlay": real.overlay if real else None,
        "worst variant": worst.overlay if worst is not None else None,
        "export": res.export_path,
        "run folder": run_dir,
    }
    for label, p in files.items():
        if p is not None:
            printer(f"[demo]   {label:15s} {p}")
