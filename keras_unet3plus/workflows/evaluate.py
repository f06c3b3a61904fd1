"""Held-out evaluation of a model: predict the labelled cases, then score the masks.

It drives two stages, inference (:mod:`keras_unet3plus.inference`) and scoring
(:mod:`keras_unet3plus.evaluation` for files, :mod:`keras_unet3plus.metrics` for arrays), so it
sits above both:

- :func:`evaluate_model`: every labelled case of a dataset folder predicted into
  ``out_dir/predictions``, then the per-case table, summary and overlays of
  :func:`keras_unet3plus.evaluation.evaluate_pairs` (``unet3plus evaluate --model M --data-dir D``);
- :func:`evaluate_cross_validation`: every fold's model on the cases its fold held out, scored
  together (``unet3plus evaluate --cv RUN_0 ... RUN_4``, nnU-Net's cross-validation summary);
- :func:`evaluate_held_out`: the demo's and the recipes' per-volume metrics of a trained model on
  its held-out test cases, in memory, with one overlay of the median case (``metrics.json``, written
  with :func:`json_default`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.volume import DataError
from ..data.tasks import get_task
from ..evaluation import EvaluationReport, evaluate_pairs, summarize_cases, write_reports

__all__ = ["evaluate_model", "evaluate_cross_validation", "evaluate_held_out", "json_default"]


def evaluate_model(
    model: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    task: str | None = None,
    overlays: int = 0,
    batch_size: int = 8,
    largest_component: bool = False,
    gate: bool = True,
    progress: bool = False,
    layout: str = "auto",
    empty_distance: float = float("inf"),
) -> EvaluationReport:
    """Predict every labelled case of a dataset folder with ``model`` (a path, or a
    :class:`~keras_unet3plus.inference.Predictor` / runtime with its ModelInfo) into
    ``out_dir/predictions`` and evaluate them. ``task`` defaults to the model's."""
    from ..data.layouts import find_cases
    from ..inference import Predictor

    predictor = Predictor(
        model, batch_size=batch_size, gate=gate, largest_component=largest_component, progress=progress
    )
    _ = predictor.cfg  # raises for a model object without its ModelInfo (its preprocessing)
    task_name = task or predictor.info.task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in find_cases(data_dir, layout=layout, unpaired="skip") if c.label_path is not None]
    if not cases:
        raise DataError(f"{data_dir}: no labelled cases to evaluate")
    pairs, errors = _predict_cases(predictor, cases, Path(out_dir) / "predictions")
    from ..data.layouts import task_for_dataset

    spec = task_for_dataset(data_dir, task_name, layout)  # nnU-Net datasets: the organ's label by name
    rows = _score(pairs, spec, out_dir, overlays, progress, errors, empty_distance)
    report = EvaluationReport(get_task(task_name).name, rows, summarize_cases(rows, task_name))
    report.summary["model"] = str(predictor.path) if predictor.path else None
    write_reports(report, out_dir)
    return report


def _predict_cases(predictor, cases, pred_dir: Path) -> tuple[list, dict[str, str]]:
    """Every case predicted into ``pred_dir/<case>.nii.gz``: the (case, prediction, label, image)
    pairs to score, and the errors of the cases that failed."""
    ids = {Path(c.image_path): c.case_id for c in cases}
    results = predictor.predict_folder(
        [c.image_path for c in cases], pred_dir, output_name=lambda p: f"{ids[Path(p)]}.nii.gz"
    )
    errors = {ids[r.image_path]: r.error for r in results if not r.ok}
    pairs = [(c.case_id, pred_dir / f"{c.case_id}.nii.gz", Path(c.label_path), Path(c.image_path)) for c in cases]
    return pairs, errors


def evaluate_cross_validation(
    runs,
    out_dir: str | os.PathLike,
    *,
    overlays: int = 0,
    batch_size: int = 8,
    largest_component: bool = False,
    gate: bool = True,
    progress: bool = False,
    empty_distance: float = float("inf"),
) -> EvaluationReport:
    """Each fold's run folder (``train --folds N --fold K``: its ``config.yaml``, ``split.json`` and
    ``model.keras``) predicts the cases its fold held out into ``out_dir/predictions``; every
    out-of-fold prediction is scored together (per-case table with its fold, mean / std) and per
    fold. The runs must be of one data set and task, and their held-out cases disjoint."""
    from ..data.layouts import task_for_dataset
    from ..evaluation import summarize_folds
    from ..inference import Predictor
    from ..training.run_folder import FINAL_MODEL

    folds, fold_of = _read_fold_runs(runs)
    cfg = folds[0].cfg
    cases = _cases_by_id(cfg.data_dir, cfg.layout)
    missing = sorted(set(fold_of) - set(cases))
    if missing:
        raise DataError(f"{cfg.data_dir}: held-out case(s) not found (first: {missing[0]})")
    pairs, errors = [], {}
    for fold in folds:
        predictor = Predictor(
            fold.run / FINAL_MODEL,
            batch_size=batch_size,
            gate=gate,
            largest_component=largest_component,
            progress=progress,
        )
        fold_pairs, fold_errors = _predict_cases(
            predictor, [cases[i] for i in sorted(fold.held_out)], Path(out_dir) / "predictions"
        )
        pairs += fold_pairs
        errors.update(fold_errors)
    pairs.sort(key=lambda p: p[0])
    spec = task_for_dataset(cfg.data_dir, cfg.task, cfg.layout)
    rows = _score(pairs, spec, out_dir, overlays, progress, errors, empty_distance)
    report = EvaluationReport(get_task(cfg.task).name, rows, summarize_cases(rows, cfg.task), folds=fold_of)
    run_of = {fold.label: str(fold.run) for fold in folds}
    report.summary["folds"] = [dict(row, run=run_of[row["fold"]]) for row in summarize_folds(rows, fold_of, cfg.task)]
    write_reports(report, out_dir)
    return report


@dataclass
class _FoldRun:
    """One fold's finished run folder as cross-validation reads it: its settings and the cases it held out."""

    run: Path
    cfg: Any  # TrainConfig, imported where used: this module loads no training code at import
    held_out: list[str]

    @property
    def label(self) -> str:
        """The fold's name in the report: its number, or the run folder's name for a run without one."""
        return str(self.cfg.fold) if self.cfg.fold is not None else self.run.name


def _read_fold_runs(runs) -> tuple[list[_FoldRun], dict[str, str]]:
    """Every run read and checked in the order given, before any model runs (so a bad run is refused
    at once): one data set and task, each case held out by one fold. Also the fold of each case."""
    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("--cv needs the run folders of the folds")
    folds: list[_FoldRun] = []
    fold_of: dict[str, str] = {}
    for run in runs:
        fold = _read_fold_run(run)
        first = folds[0] if folds else fold
        if (fold.cfg.data_dir, fold.cfg.task) != (first.cfg.data_dir, first.cfg.task):
            raise ValueError(
                f"{run} and {first.run} are runs of different data ({fold.cfg.data_dir}, {fold.cfg.task} vs "
                f"{first.cfg.data_dir}, {first.cfg.task})"
            )
        for case in fold.held_out:
            if case in fold_of:
                raise ValueError(
                    f"{run}: case {case} is also held out by the run of fold {fold_of[case]}; give each fold's run once"
                )
            fold_of[case] = fold.label
        folds.append(fold)
    return folds, fold_of


def _read_fold_run(run: Path) -> _FoldRun:
    """One run folder, refused unless training finished there and its fold held cases out."""
    import json

    from ..training.config import CONFIG_NAME, TrainConfig
    from ..training.run_folder import FINAL_MODEL, SPLIT_JSON

    for name in (CONFIG_NAME, SPLIT_JSON, FINAL_MODEL):
        if not (run / name).is_file():
            raise DataError(f"{run}: not a finished training run ({name} missing)")
    cfg = TrainConfig.from_sources(run / CONFIG_NAME)
    held_out = json.loads((run / SPLIT_JSON).read_text(encoding="utf-8")).get("val", [])
    if not held_out:
        raise ValueError(
            f"{run}: holds no cases out (fold {cfg.fold}); cross-validation scores the folds 0..N-1, not `all`"
        )
    return _FoldRun(run, cfg, held_out)


def _cases_by_id(data_dir, layout: str) -> dict[str, Any]:
    """The data set's cases by id; the layouts' warnings about unpaired files silenced (those are skipped)."""
    from ..data.layouts import find_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.case_id: c for c in find_cases(data_dir, layout=layout, unpaired="skip")}


def _score(pairs, spec, out_dir, overlays: int, progress: bool, errors: dict[str, str], empty_distance: float):
    """The per-case rows of the predictions in ``pairs`` (+ ``overlays`` overlay slices per case
    in ``out_dir/overlays``): what a single model's and a cross-validation's evaluation share."""
    overlay_dir = Path(out_dir) / "overlays" if overlays > 0 else None
    return evaluate_pairs(
        pairs,
        spec,
        overlay_dir=overlay_dir,
        overlay_slices=overlays,
        progress=progress,
        errors=errors,
        empty_distance=empty_distance,
    )


def evaluate_held_out(model_path: Path, cases, spec, out: Path, printer=print) -> tuple[dict, Path | None]:
    """Per-volume metrics of ``model_path`` on ``cases`` (+ an overlay PNG of the median case)."""
    from ..data import load_case
    from ..inference import Predictor
    from ..metrics import evaluate_case, summarize

    predictor = Predictor.from_path(model_path, batch_size=16)  # the model's saved threshold
    cfg = predictor.cfg
    rows, per_case, keep = {}, {}, {}
    for case in cases:
        vol = load_case(case, spec)
        pred = predictor.predict_volume(vol.image)
        row = evaluate_case(pred > 0, vol.label > 0, spacing=vol.spacing)
        rows[case.case_id] = row
        per_case[case.case_id] = float(row["dice"])
        keep[case.case_id] = (vol.image, vol.label, pred)
        printer(f"  {case.case_id}: Dice {row['dice']:.4f}, ASSD {row['assd']:.2f} mm, HD95 {row['hd95']:.2f} mm")
    summary = summarize(list(rows.values()))
    overlay_path = None
    try:
        from ..overlays import save_case_montage

        order = sorted(per_case, key=per_case.get)
        median = order[len(order) // 2]
        image, label, pred = keep[median]
        overlay_path = out / "overlay.png"
        save_case_montage(
            image,
            label > 0,
            pred > 0,
            overlay_path,
            window=cfg.window(),
            title=f"{median}: Dice {per_case[median]:.3f} (pink TP, yellow FN, green FP)",
        )
    except ImportError:  # overlays module missing
        overlay_path = None
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("dice", "jaccard", "voe", "rvd", "assd", "hd95")}
    return {
        "task": spec.name,
        "n_cases": len(rows),
        "mean": mean,
        "per_case_dice": per_case,
        "per_case": rows,
        "summary": summary,
    }, overlay_path


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for metrics: numpy numbers as Python numbers, paths as text."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
