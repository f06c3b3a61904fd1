"""Parity of an exported artefact with the Keras model on real (phantom or user) CT slices.

Every export is run on the same slices as the Keras `deploy_model()` and compared: max abs
difference of every output, and the Dice between the two masks (threshold, or argmax for several
classes). fp32 targets must match within `FP32_MAX_ABS` (1e-4); reduced-precision targets (fp16,
int8) may lose at most `DICE_LOSS_POINTS` (0.5) Dice points against the Keras masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np

from ..metrics.volume import label_dice
from ..modelinfo import ArtefactCheck, ParityRecord, SpeedRecord
from ..output_names import CLS, SEG
from ..runtimes import training_outputs
from .graph import GraphSpec, to_mask

FP32_MAX_ABS = 1e-4
DICE_LOSS_POINTS = 0.5
FULL_PRECISION = ("fp32",)


class ParityError(RuntimeError):
    """An artefact disagrees with the Keras model beyond the tolerance of its precision."""

    def __init__(self, message: str, rows: Sequence[ParityRow] = ()):
        super().__init__(message)
        self.rows = list(rows)


# ---------------------------------------------------------------------------------------------
# slices
# ---------------------------------------------------------------------------------------------


def preprocess_config(info=None, image_size: int | None = None, task: str = "liver"):
    """`(PreprocessConfig, task)` of a model's info (or the task default) at `image_size`."""
    from dataclasses import replace

    from ..data.preprocess import PreprocessConfig

    if info is not None and info.preprocess:
        cfg, task = info.preprocess_config(), info.task or task
    else:
        cfg = PreprocessConfig()
    if image_size is not None and cfg.image_size != int(image_size):
        cfg = replace(cfg, image_size=int(image_size))
    return cfg.for_task(task), task


def _pick(n_total: int, n: int, present: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n` slices: half with the organ, half without when labels are known (so the gate
    and both mask states are exercised), else evenly spaced."""
    if n >= n_total:
        return np.arange(n_total)
    if present is None or present.all() or not present.any():
        return np.linspace(0, n_total - 1, n).round().astype(int)
    pos, neg = np.flatnonzero(present), np.flatnonzero(~present)
    k = min(len(pos), max(n - len(neg), (n * 3 + 3) // 4))
    return np.sort(
        np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, min(n - k, len(neg)), replace=False)])
    )


def phantom_slices(
    info=None,
    n: int = 16,
    image_size: int | None = None,
    seed: int = 1234,
    n_cases: int = 2,
    shape: tuple[int, int, int] = (128, 128, 48),
    with_labels: bool = False,
):
    """`n` preprocessed 2.5D slices `(n, S, S, C)` float32 from generated phantom cases.

    Deterministic in `seed`; about three quarters of the slices show the organ, the rest do not.
    With `with_labels=True` returns `(slices, masks (n, S, S, 1) uint8)` too.
    """
    from ..data.phantom import generate_case
    from ..data.preprocess import label_to_slices, volume_to_slices

    cfg, task = preprocess_config(info, image_size)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    per_case = [n // n_cases + (1 if i < n % n_cases else 0) for i in range(n_cases)]
    for i, k in enumerate(per_case):
        if k == 0:
            continue
        case = generate_case(seed + i, shape=shape)
        label = case.label_for(task)
        lab = label_to_slices(label, cfg)
        idx = _pick(lab.shape[0], k, lab.reshape(lab.shape[0], -1).max(axis=1) > 0, rng)
        vol = volume_to_slices(case.hu, cfg)
        xs.append(vol[idx])
        ys.append(lab[idx])
    x = np.concatenate(xs).astype(np.float32)
    return (x, np.concatenate(ys)) if with_labels else x


def folder_slices(
    data_dir: str | os.PathLike, info=None, n: int = 16, image_size: int | None = None, seed: int = 1234
) -> np.ndarray:
    """`n` preprocessed slices drawn from the NIfTI cases under `data_dir` (LiTS/MSD/folder layouts,
    or loose images)."""
    from ..data.layouts import find_cases
    from ..data.preprocess import volume_to_slices
    from ..data.readers import load_case

    cfg, task = preprocess_config(info, image_size)
    cases = find_cases(data_dir, unpaired="keep")  # labels help pick slices, images suffice
    if not cases:
        raise FileNotFoundError(f"--data-dir '{data_dir}': no NIfTI cases found")
    rng = np.random.default_rng(seed)
    per = max(1, -(-n // len(cases)))
    xs = []
    for case in cases:
        vol = load_case(case, task)
        present = None
        if vol.label is not None:
            present = vol.label.reshape(-1, vol.label.shape[2]).max(axis=0) > 0
        slices = volume_to_slices(vol.image, cfg)
        xs.append(slices[_pick(slices.shape[0], per, present, rng)])
        if sum(len(a) for a in xs) >= n:
            break
    return np.concatenate(xs)[:n].astype(np.float32)


def sample_slices(
    info=None, data_dir: str | None = None, n: int = 16, image_size: int | None = None, seed: int = 1234
) -> np.ndarray:
    """Verification / calibration slices: from `data_dir` when given, else generated phantoms."""
    if data_dir:
        return folder_slices(data_dir, info, n, image_size, seed)
    return phantom_slices(info, n, image_size, seed)


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------


@dataclass
class ParityRow:
    """One line of the verification table."""

    artefact: str
    runtime: str
    precision: str
    max_abs_diff: float
    dice: float
    tolerance: str
    passed: bool
    per_output: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def dice_loss_points(self) -> float:
        return 100.0 * (1.0 - self.dice)


def keras_reference(model, x: np.ndarray, spec: GraphSpec, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Outputs of the Keras `deploy_model()` (the reference every export is held to), plus the
    ungated/unthresholded probabilities under `_prob` (to tell borderline pixels from errors)."""
    from ..model import deploy_model

    base = training_outputs(model)
    has_cls = CLS in (base.output if isinstance(base.output, dict) else {})
    deploy = deploy_model(base, gate=spec.gate, threshold=spec.threshold, all_outputs=spec.outputs == "all")
    out = deploy.predict(x, batch_size=batch_size, verbose=0)
    out = {k: np.asarray(v) for k, v in out.items()}
    if spec.threshold is not None:
        prob_model = deploy_model(base, gate=spec.gate, threshold=None)
        out["_prob"] = np.asarray(prob_model.predict(x, batch_size=batch_size, verbose=0)[SEG])
    else:
        out["_prob"] = out[SEG]
    out["_has_cls"] = np.asarray(has_cls)
    return out


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    spec: GraphSpec,
    precision: str,
    artefact: str = "",
    runtime: str = "",
) -> ParityRow:
    """Judge `candidate` against `reference` with the tolerance of `precision`."""
    per_output = {}
    for name, ref in reference.items():
        if name.startswith("_"):
            continue
        if name not in candidate:
            raise ParityError(f"{artefact}: output '{name}' is missing (has {sorted(candidate)})")
        got = np.asarray(candidate[name], dtype=np.float32)
        if got.shape != ref.shape:
            raise ParityError(f"{artefact}: output '{name}' has shape {got.shape}, Keras gives {ref.shape}")
        per_output[name] = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    t = 0.5 if spec.threshold is None else spec.threshold
    ref_seg, got_seg = reference[SEG], np.asarray(candidate[SEG], np.float32)
    if spec.threshold is None:
        ref_mask, got_mask = to_mask(ref_seg, t), to_mask(got_seg, t)
    else:  # already label maps
        ref_mask, got_mask = ref_seg[..., 0].round().astype(int), got_seg[..., 0].round().astype(int)
    d = label_dice(ref_mask, got_mask)
    max_abs = max(per_output.values())
    note = ""
    if precision in FULL_PRECISION:
        tol = f"max|diff| <= {FP32_MAX_ABS:g}"
        if spec.threshold is None:
            passed = max_abs <= FP32_MAX_ABS
        else:
            # masks may differ only where Keras' own probability sits on the threshold
            prob = reference["_prob"]
            flips = ref_mask != got_mask
            margin = np.abs(prob[..., 0] - t) if prob.shape[-1] == 1 else np.full(ref_mask.shape, np.inf)
            borderline = bool(np.all(margin[flips] <= FP32_MAX_ABS))
            other = max([v for k, v in per_output.items() if k != SEG], default=0.0)
            passed = borderline and other <= FP32_MAX_ABS
            if flips.any():
                note = (
                    f"{int(flips.sum())} mask pixels differ, all within {FP32_MAX_ABS:g} of the threshold"
                    if borderline
                    else "mask differs off the threshold"
                )
    else:
        tol = f"Dice loss <= {DICE_LOSS_POINTS:g} pt"
        passed = 100.0 * (1.0 - d) <= DICE_LOSS_POINTS
    return ParityRow(artefact, runtime, precision, max_abs, d, tol, bool(passed), per_output, note)


def verify_runtime(
    runtime,
    reference: dict[str, np.ndarray],
    x: np.ndarray,
    spec: GraphSpec,
    precision: str,
    batch_size: int = 8,
    artefact: str | None = None,
) -> ParityRow:
    """Run `runtime` (a `keras_unet3plus.runtimes.Runtime`) on `x` and compare with `reference`."""
    outs: dict[str, list] = {}
    for i in range(0, len(x), batch_size):
        for k, v in runtime.predict_all(x[i : i + batch_size]).items():
            outs.setdefault(k, []).append(np.asarray(v))
    cand = {k: np.concatenate(v) for k, v in outs.items()}
    return compare(reference, cand, spec, precision, artefact or str(runtime.path), runtime.kind)


def seconds_per_slice(
    run: Callable[[np.ndarray], object], x: np.ndarray, batch_size: int = 8, repeats: int = 2
) -> float:
    """Wall seconds per slice of ``run`` on one batch of ``x`` (best of ``repeats`` after a warm-up
    call): the export-time speed record; ratios between runtimes timed here are what count."""
    import time

    batch = np.ascontiguousarray(x[:batch_size], dtype=np.float32)
    run(batch)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(batch)
        best = min(best, time.perf_counter() - t0)
    return best / len(batch)


def artefact_check(runtime, row: ParityRow, x: np.ndarray, keras_seconds_per_slice: float) -> ArtefactCheck:
    """The record of one artefact's check: its parity row, and its speed beside the Keras model's
    (timed on the same batch in the same run), with the CPU both ran on."""
    from ..runtimes.cpu import cpu_info

    return ArtefactCheck(
        ParityRecord(runtime.kind, row.passed, row.dice, row.max_abs_diff),
        SpeedRecord(seconds_per_slice(runtime.segment, x), keras_seconds_per_slice, cpu_info().summary()),
    )


def pair_runtime(runtime):
    """``runtime``'s skip-absent path (`Runtime.segment_present`) as a runtime of its own, to be
    checked like a graph."""
    from ..runtimes import FunctionRuntime

    function = FunctionRuntime(lambda batch: runtime.segment_present(batch)[0], name="skip-absent pair")
    function.input_shape = runtime.input_shape
    return function


def format_table(rows: Sequence[ParityRow]) -> str:
    """The verification table (markdown)."""
    lines = [
        "| artefact | runtime | precision | max abs diff | Dice vs Keras | Dice loss (pt) | tolerance | result |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        result = "PASS" if r.passed else "FAIL"
        if r.note:
            result += f" ({r.note})"
        lines.append(
            f"| {Path(r.artefact).name} | {r.runtime} | {r.precision} | {r.max_abs_diff:.3g} | "
            f"{r.dice:.4f} | {r.dice_loss_points:.3f} | {r.tolerance} | {result} |"
        )
    return "\n".join(lines)
