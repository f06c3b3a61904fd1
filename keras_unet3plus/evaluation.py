"""Evaluation of predicted masks against ground truth: the LiTS metric set per case, a summary,
CSV / JSON / markdown reports and the paper's TP / FN / FP overlays.

Predictions and ground truths are paired by case id across naming schemes: the same file name,
the image's name (``volume-N`` predicted from ``volume-N``, ground truth ``segmentation-N``), or the
case number (LiTS ``segmentation-N``, MSD ``spleen_N``). Both may be of any format the reader
registry reads (:mod:`.data.readers`: NIfTI, NRRD, MetaImage; a ``.mha`` prediction scored against
an ``.nrrd`` label), read in canonical orientation, label values mapped for the task; voxel spacing
comes from the ground truth's header. One bad case (missing prediction, shape mismatch,
unreadable file) becomes a row with its error; the others still run.

Structures: binary tasks evaluate the organ (label > 0); ``liver_tumour`` evaluates ``liver``
(label >= 1, tumour included, as LiTS does) and ``tumour`` (label == 2), columns prefixed.

This module scores masks that exist and runs no model; predicting a dataset first and then scoring
it is a workflow, :func:`keras_unet3plus.workflows.evaluate.evaluate_model`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .data.readers import case_name, find_scan_files, open_scan, read_volume
from .data.volume import DataError, DataFileNotFoundError, check_same_grid
from .data.tasks import TaskSpec, get_task
from .modelinfo import atomic_write_text

__all__ = [
    "METRICS",
    "CaseEvaluation",
    "EvaluationReport",
    "structures",
    "pair_cases",
    "evaluate_pair",
    "evaluate_folders",
    "evaluate_pairs",
    "summarize_cases",
    "summarize_folds",
    "write_reports",
    "case_number",
]

#: per-case metrics in report order (metrics.volume.evaluate_case computes them)
METRICS = ("dice", "voe", "rvd", "assd", "hd95", "mssd")
_EXTRA = ("jaccard", "n_pred", "n_gt", "tp", "fp", "fn")


def structures(task: str | TaskSpec) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """What is evaluated for a task: name -> label map to binary mask."""
    spec = get_task(task)
    if spec.num_classes > 2 and spec.organ == "liver":
        return {"liver": lambda a: a >= 1, "tumour": lambda a: a == 2}
    if spec.num_classes > 1:
        return {name: (lambda a, k=k: a == k) for k, name in enumerate(spec.class_names) if k > 0}
    return {spec.organ: lambda a: a > 0}


@dataclass
class CaseEvaluation:
    """One case: metrics per structure, or the error that stopped it."""

    case_id: str
    pred_path: Path | None
    gt_path: Path | None
    image_path: Path | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    overlay: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class EvaluationReport:
    """All cases plus the summary (mean, std, global Dice per structure)."""

    task: str
    cases: list[CaseEvaluation]
    summary: dict[str, Any]
    unmatched_predictions: list[Path] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    #: case id -> the fold that held it out (a cross-validation report); empty otherwise
    folds: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseEvaluation]:
        return [c for c in self.cases if not c.ok]


# ------------------------------------------------------------------------------------------------
# pairing
# ------------------------------------------------------------------------------------------------


def case_number(name: str) -> int | None:
    """The case number in a file name: the last integer of its stem (``segmentation-12`` -> 12,
    ``spleen_3`` -> 3), or None."""
    found = re.findall(r"(\d+)", case_name(name))
    return int(found[-1]) if found else None


def _ground_truths(gt_dir: Path, images_dir: Path | None) -> list[tuple[str, Path, Path | None]]:
    """(case id, label file, image file or None) for a dataset folder or a flat folder of labels."""
    from .data.layouts import find_cases

    if not gt_dir.is_dir():
        raise DataFileNotFoundError(f"{gt_dir}: ground-truth folder not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = [c for c in find_cases(gt_dir, unpaired="skip") if c.label_path is not None]
    except DataError:
        cases = []
    if cases:
        return [(c.case_id, Path(c.label_path), Path(c.image_path)) for c in cases]
    labels = find_scan_files(gt_dir)
    if not labels:
        raise DataError(f"{gt_dir}: no ground-truth files found (NIfTI, NRRD or MetaImage)")
    images = find_scan_files(images_dir) if images_dir is not None else []
    out = []
    for lab in labels:
        out.append((case_name(lab), lab, _match(lab, images, case_name(lab))))
    return out


def _match(gt: Path, candidates: Sequence[Path], *names: str) -> Path | None:
    """The candidate with one of ``names`` as stem, else the unique one with ``gt``'s case number."""
    by_stem = {case_name(p): p for p in candidates}
    for n in names:
        if n in by_stem:
            return by_stem[n]
    num = case_number(gt.name)
    if num is None:
        return None
    hits = [p for p in candidates if case_number(p.name) == num]
    return hits[0] if len(hits) == 1 else None


def pair_cases(
    pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, images_dir: str | os.PathLike | None = None
) -> tuple[list[tuple[str, Path | None, Path, Path | None]], list[Path]]:
    """Pair prediction files with ground truths; returns ``([(case_id, pred or None, gt, image or
    None)], unmatched prediction files)``. A ground truth without prediction gets ``pred=None``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataFileNotFoundError(f"{pred_dir}: prediction folder not found")
    preds = find_scan_files(pred_dir)
    gts = _ground_truths(Path(gt_dir), Path(images_dir) if images_dir else None)
    used: set[Path] = set()
    pairs = []
    for case_id, gt, image in gts:
        names = [case_id, case_name(gt)] + ([case_name(image)] if image is not None else [])
        pred = _match(gt, [p for p in preds if p not in used], *names)
        if pred is not None:
            used.add(pred)
        pairs.append((case_id, pred, gt, image))
    return pairs, [p for p in preds if p not in used]


# ------------------------------------------------------------------------------------------------
# one case
# ------------------------------------------------------------------------------------------------


def evaluate_pair(
    pred_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    task: str | TaskSpec = "liver",
    *,
    case_id: str | None = None,
    image_path: str | os.PathLike | None = None,
    overlay_dir: str | os.PathLike | None = None,
    overlay_slices: int = 0,
    connectivity: int | None = None,
    empty_distance: float = float("inf"),
) -> CaseEvaluation:
    """Metrics of one prediction file against its ground truth (raises DataError on bad input).

    Both must share the voxel grid (shape and affine, any orientation as long as it is the same);
    labels are mapped for ``task``. ``overlay_slices > 0`` writes ``overlay_dir/CASE.png`` (montage)
    and ``overlay_dir/CASE/slice_ZZZ.png``.
    """
    from .metrics.volume import evaluate_case

    pred_path, gt_path = Path(pred_path), Path(gt_path)
    spec = get_task(task)
    gscan, pscan = open_scan(gt_path), open_scan(pred_path)
    check_same_grid(gscan, pscan, what="prediction", of="ground truth")
    gt, pred = gscan.label(spec), pscan.label(spec)
    spacing = gscan.spacing
    result = CaseEvaluation(case_id or case_name(gt_path), pred_path, gt_path, Path(image_path) if image_path else None)
    for name, to_mask in structures(spec).items():
        result.metrics[name] = evaluate_case(
            to_mask(pred), to_mask(gt), spacing, connectivity=connectivity, empty_distance=empty_distance
        )
    if overlay_dir is not None and overlay_slices > 0:
        result.overlay = _write_overlay(result, gt, pred, spec, Path(overlay_dir), overlay_slices)
    return result


def _write_overlay(
    result: CaseEvaluation, gt: np.ndarray, pred: np.ndarray, spec: TaskSpec, out_dir: Path, n: int
) -> Path:
    from .overlays import save_case_montage

    if result.image_path is not None:
        ct = read_volume(result.image_path).image
        if ct.shape != gt.shape:
            raise DataError(
                f"{result.image_path}: image shape {ct.shape} does not match ground truth "
                f"{result.gt_path} shape {gt.shape}"
            )
    else:  # no CT known: overlay on black
        ct = np.full(gt.shape, spec.hu_window[0], dtype=np.float32)
    organ_gt, organ_pred = gt > 0, pred > 0
    d = result.metrics[next(iter(result.metrics))]["dice"]
    path = out_dir / f"{result.case_id}.png"
    save_case_montage(
        ct,
        organ_gt,
        organ_pred,
        path,
        n_slices=n,
        window=spec.hu_window,
        title=f"{result.case_id}  {spec.organ} Dice {d:.4f}",
        slice_dir=out_dir / result.case_id,
    )
    return path


# ------------------------------------------------------------------------------------------------
# many cases
# ------------------------------------------------------------------------------------------------


def evaluate_pairs(
    pairs: Iterable[tuple[str, Path | None, Path, Path | None]],
    task: str | TaskSpec = "liver",
    *,
    overlay_dir: str | os.PathLike | None = None,
    overlay_slices: int = 0,
    progress: bool = False,
    errors: dict[str, str] | None = None,
    empty_distance: float = float("inf"),
) -> list[CaseEvaluation]:
    """Evaluate ``(case_id, pred, gt, image)`` tuples; a failure becomes a row with its error.
    ``errors`` maps case ids to an error known beforehand (e.g. a failed prediction)."""
    pairs = list(pairs)
    errors = errors or {}
    it: Iterable = pairs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(pairs, unit="case", desc="evaluate", dynamic_ncols=True)
    rows = []
    for case_id, pred, gt, image in it:
        if case_id in errors:
            rows.append(CaseEvaluation(case_id, pred, gt, image, error=errors[case_id]))
            continue
        if pred is None:
            rows.append(
                CaseEvaluation(case_id, None, gt, image, error=f"{gt}: no prediction file found for case '{case_id}'")
            )
            continue
        try:
            rows.append(
                evaluate_pair(
                    pred,
                    gt,
                    task,
                    case_id=case_id,
                    image_path=image,
                    overlay_dir=overlay_dir,
                    overlay_slices=overlay_slices,
                    empty_distance=empty_distance,
                )
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
            msg = str(exc)
            if str(pred) not in msg and str(gt) not in msg:
                msg = f"{pred} / {gt}: {msg}"
            rows.append(CaseEvaluation(case_id, pred, gt, image, error=msg))
    return rows


def summarize_cases(cases: Sequence[CaseEvaluation], task: str | TaskSpec) -> dict[str, Any]:
    """Per structure: mean / std / n of every metric over the successful cases, and global Dice."""
    from .metrics.volume import summarize

    ok = [c for c in cases if c.ok]
    out: dict[str, Any] = {
        "task": get_task(task).name,
        "n_cases": len(cases),
        "n_ok": len(ok),
        "n_failed": len(cases) - len(ok),
        "failed": [{"case": c.case_id, "error": c.error} for c in cases if not c.ok],
        "structures": {},
    }
    for name in structures(task):
        if ok:
            out["structures"][name] = summarize([c.metrics[name] for c in ok])
    return out


def summarize_folds(
    cases: Sequence[CaseEvaluation], folds: dict[str, str], task: str | TaskSpec
) -> list[dict[str, Any]]:
    """Per fold of a cross-validation: its held-out cases summarised as :func:`summarize_cases` does."""
    out = []
    for fold in sorted(set(folds.values()), key=lambda f: (len(f), f)):
        mine = [c for c in cases if folds.get(c.case_id) == fold]
        row = summarize_cases(mine, task)
        row.pop("task")
        out.append({"fold": fold, **row})
    return out


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    task: str | TaskSpec = "liver",
    out_dir: str | os.PathLike | None = None,
    *,
    images_dir: str | os.PathLike | None = None,
    overlays: int = 0,
    progress: bool = False,
    empty_distance: float = float("inf"),
) -> EvaluationReport:
    """Evaluate a folder of predictions against a folder of ground truths (a LiTS / MSD dataset
    folder, or a flat folder of label files); writes the reports to ``out_dir`` when given."""
    pairs, unmatched = pair_cases(pred_dir, gt_dir, images_dir)
    overlay_dir = Path(out_dir) / "overlays" if (out_dir is not None and overlays > 0) else None
    cases = evaluate_pairs(
        pairs, task, overlay_dir=overlay_dir, overlay_slices=overlays, progress=progress, empty_distance=empty_distance
    )
    report = EvaluationReport(get_task(task).name, cases, summarize_cases(cases, task), unmatched)
    report.summary["unmatched_predictions"] = [str(p) for p in unmatched]
    if out_dir is not None:
        write_reports(report, out_dir)
    return report


# ------------------------------------------------------------------------------------------------
# reports
# ------------------------------------------------------------------------------------------------


def _columns(task: str) -> list[tuple[str, str, str]]:
    """(column name, structure, metric) for the per-case table."""
    names = list(structures(task))
    prefix = len(names) > 1
    return [((f"{s}_{m}" if prefix else m), s, m) for s in names for m in METRICS + _EXTRA]


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else None)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def per_case_csv(report: EvaluationReport) -> str:
    cols = _columns(report.task)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fold = ["fold"] if report.folds else []
    w.writerow(["case"] + fold + ["status"] + [c for c, _, _ in cols] + ["prediction", "ground_truth", "error"])
    for c in report.cases:
        vals = [_fmt(c.metrics[s][m], 6) if c.ok else "" for _, s, m in cols]
        w.writerow(
            [c.case_id]
            + ([report.folds.get(c.case_id, "")] if fold else [])
            + ["ok" if c.ok else "error"]
            + vals
            + [c.pred_path or "", c.gt_path or "", c.error]
        )
    return buf.getvalue()


def report_markdown(report: EvaluationReport) -> str:
    names = list(structures(report.task))
    prefix = len(names) > 1
    lines = [
        f"# Evaluation: task `{report.task}`",
        "",
        f"{report.summary['n_ok']} of {report.summary['n_cases']} cases evaluated"
        + (f", {report.summary['n_failed']} failed" if report.summary["n_failed"] else "")
        + ".",
        "",
        "Dice, VOE, RVD unitless; ASSD, HD95, MSSD in mm (voxel spacing of the ground truth). "
        "RVD signed: > 0 over-segmentation.",
        "",
        "## Summary",
        "",
        "| Structure | Metric | Mean | Std | n | non-finite |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in names:
        summ = report.summary["structures"].get(s)
        if not summ:
            continue
        for m in METRICS:
            e = summ[m]
            lines.append(f"| {s} | {m} | {_fmt(e['mean'])} | {_fmt(e['std'])} | {e['n']} | {e['n_nonfinite']} |")
        lines.append(f"| {s} | global dice | {_fmt(summ.get('global_dice'))} | | | |")
    head = [f"{s} {m}" if prefix else m for s in names for m in METRICS]
    if report.summary.get("folds"):
        lines += [
            "",
            "## Per fold",
            "",
            "Mean of each fold's held-out cases.",
            "",
            "| Fold | Cases | " + " | ".join(head) + " |",
            "|---|---:|" + "---:|" * len(head),
        ]
        for row in report.summary["folds"]:
            st = row["structures"]
            lines.append(
                f"| {row['fold']} | {row['n_ok']} | "
                + " | ".join(_fmt(st[s][m]["mean"]) if s in st else "" for s in names for m in METRICS)
                + " |"
            )
    fold_col = ("| Fold ", "---|") if report.folds else ("", "")
    lines += [
        "",
        "## Per case",
        "",
        "| Case " + fold_col[0] + "| " + " | ".join(head) + " |",
        "|---|" + fold_col[1] + "---:|" * len(head),
    ]
    for c in report.cases:
        key = f"| {c.case_id} " + (f"| {report.folds.get(c.case_id, '')} " if report.folds else "")
        if c.ok:
            lines.append(key + "| " + " | ".join(_fmt(c.metrics[s][m]) for s in names for m in METRICS) + " |")
        else:
            lines.append(key + "| " + " | ".join("error" for _ in head) + " |")
    if report.failed:
        lines += ["", "## Errors", ""] + [f"- `{c.case_id}`: {c.error}" for c in report.failed]
    if report.unmatched_predictions:
        lines += ["", "## Predictions without ground truth", ""] + [f"- `{p}`" for p in report.unmatched_predictions]
    overlays = [c for c in report.cases if c.overlay is not None]
    if overlays:
        lines += ["", "## Overlays", "", "True positive pink/purple, false negative yellow, false positive green.", ""]
        lines += [f"![{c.case_id}](overlays/{c.overlay.name})" for c in overlays]
    return "\n".join(lines) + "\n"


def write_reports(report: EvaluationReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``per_case.csv``, ``summary.json`` and ``report.md`` (atomically) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "per_case.csv", "json": out / "summary.json", "markdown": out / "report.md"}
    atomic_write_text(files["csv"], per_case_csv(report))
    summary = dict(report.summary)
    summary["cases"] = [
        {
            "case": c.case_id,
            "status": "ok" if c.ok else "error",
            "error": c.error,
            "prediction": c.pred_path,
            "ground_truth": c.gt_path,
            "metrics": c.metrics,
        }
        | ({"fold": report.folds.get(c.case_id)} if report.folds else {})
        for c in report.cases
    ]
    atomic_write_text(files["json"], json.dumps(_json_safe(summary), indent=2))
    atomic_write_text(files["markdown"], report_markdown(report))
    report.files = files
    return files
