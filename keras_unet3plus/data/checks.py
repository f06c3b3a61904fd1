"""Dataset checks that report every problem at once, before a long run starts (nnU-Net's
``--verify_dataset_integrity``, as a table of file | problem | what to do).

``check_headers`` reads only headers (milliseconds per case), of any format the reader registry
reads (:mod:`.readers`): files that are missing, unreadable, not 3-D, or a label not on its image's
grid. ``train`` runs it before creating anything, so a 50-hour run does not die on case 97 of 131.
``check_dataset`` (``unet3plus check-data``) adds the voxel checks: NaN/inf, label values outside
the task's set, truncated data, cases without the organ, voxel spacings far from the rest of the
dataset, unpaired files.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.readers import check_case, file_suffixes, open_scan, voxel_scan
from keras_unet3plus.data.volume import DataError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, and what to do about it; warnings do not stop a run."""

    file: str
    problem: str
    fix: str
    severity: str = "error"


_FIXES = (
    ("not found", "restore the file or remove the case from the folder"),
    ("truncated or corrupt", "re-download or re-convert the file"),
    ("NaN or inf", "fix the conversion (NaN/inf voxels); CT has none"),
    ("not allowed for task", "choose the right --task, or relabel (see the task's label values)"),
    ("label values range", "choose the right --task, or relabel (see the task's label values)"),
    ("unpaired", "add the missing file or remove the orphan"),
    ("not a readable NIfTI", "re-download or re-convert the file (it is truncated or not NIfTI)"),
    ("not a readable", "re-download or re-convert the file (it is truncated or not of its format)"),
    ("no reader for this file", "convert it to a format the readers know (NIfTI, NRRD, MetaImage)"),
    ("expected a 3-D volume", "split 4-D / multi-channel files; give one 3-D CT per case"),
    ("shape", "resample the label onto its image's grid (or pair the right files)"),
    ("affine", "give the label its image's affine (same grid, same orientation)"),
)


def _fix_for(message: str) -> str:
    return next((fix for key, fix in _FIXES if key in message), "check the file")


def _split_message(message: str, fallback: str) -> tuple[str, str]:
    """``"<file>: <problem>"`` -> (file, problem)."""
    head, sep, tail = message.partition(": ")
    if sep and ("/" in head or head.endswith((".gz",) + file_suffixes())):
        return head, tail
    return fallback, message


def check_headers(cases: Sequence[Case], workers: int = 8) -> list[Problem]:
    """Header-only checks of every case (in parallel); returns all problems found, in case order."""

    def one(case: Case) -> Problem | None:
        try:
            check_case(case)
        except DataError as exc:
            file, problem = _split_message(str(exc), str(case.image_path))
            return Problem(file, problem, _fix_for(problem))
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = list(pool.map(one, cases))
    return [p for p in found if p is not None]


def format_problems(problems: Sequence[Problem]) -> str:
    """A Markdown table (file | problem | what to do) for the terminal and the error message."""
    with_severity = any(p.severity != "error" for p in problems)
    head = "| file | problem | what to do |" + (" severity |" if with_severity else "")
    lines = [head, "|---|---|---|" + ("---|" if with_severity else "")]
    lines += [
        f"| {Path(p.file)} | {p.problem} | {p.fix} |" + (f" {p.severity} |" if with_severity else "") for p in problems
    ]
    return "\n".join(lines)


class DatasetError(DataError):
    """A dataset with problems; the message lists them all as a table."""

    def __init__(self, root, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__(f"{root}: {len(self.problems)} problem(s) in the dataset:\n{format_problems(self.problems)}")


def longest_first(cases: Sequence[Case]) -> list[Case]:
    """``cases`` by voxel count, largest first (headers only): the order in which a pool of workers
    finishes a list of very unequal volumes soonest."""

    def voxels(case: Case) -> int:
        try:
            return int(np.prod(open_scan(case.image_path).shape))
        except DataError:
            return 0

    return sorted(cases, key=voxels, reverse=True)


def require_clean_headers(cases: Sequence[Case], root) -> None:
    """Raise :class:`DatasetError` listing every header problem of ``cases``."""
    problems = check_headers(cases)
    if problems:
        raise DatasetError(root, problems)


#: A case whose voxel spacing along an axis is this many times larger or smaller than the dataset's
#: median is reported (a 5 mm series among 1 mm ones, a file whose header lost its pixdim).
SPACING_OUTLIER_RATIO = 3.0


def _voxel_check(case: Case, task) -> tuple[list[Problem], tuple[float, float, float] | None]:
    """Every voxel of one case read once, a slab at a time where the format streams (memory does not
    grow with a NIfTI volume)."""
    try:
        present, spacing, _ = voxel_scan(case, task)
    except DataError as exc:
        file, problem = _split_message(str(exc), str(case.image_path))
        return [Problem(file, problem, _fix_for(problem))], None
    problems = []
    if present is not None and not present.any():
        problems.append(
            Problem(
                str(case.label_path),
                "no organ voxel at all (an empty label)",
                "check the label; organ-free cases only teach the CGM",
                "warning",
            )
        )
    return problems, spacing


def check_dataset(root, layout: str = "auto", task="liver", workers: int = 4, progress: bool = False) -> list[Problem]:
    """Every problem of the dataset under ``root``: discovery, headers, then voxels (in parallel)."""
    from keras_unet3plus.data.layouts import find_cases, task_for_dataset

    problems: list[Problem] = []
    try:
        cases = find_cases(root, layout, unpaired="error")
    except DataError as exc:
        if "unpaired" not in str(exc):
            file, problem = _split_message(str(exc), str(root))
            return [Problem(file, problem, _fix_for(problem))]
        problems.append(Problem(str(root), str(exc).partition(": ")[2], _fix_for("unpaired")))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = find_cases(root, layout, unpaired="skip")
    try:
        spec = task_for_dataset(root, task, layout)
    except DataError as exc:
        file, problem = _split_message(str(exc), str(root))
        return problems + [Problem(file, problem, "name the organ's label in dataset.json")]
    header_problems = check_headers(cases, workers)
    problems += header_problems
    bad = {p.file for p in header_problems}
    readable = [c for c in cases if str(c.image_path) not in bad and str(c.label_path) not in bad]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(readable), unit="case", desc="checking", dynamic_ncols=True)
    spacings: dict[str, tuple[float, float, float]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # longest first: the workers then finish together (987-slice LiTS scans among 74-slice ones)
        futures = {case: pool.submit(_voxel_check, case, spec) for case in longest_first(readable)}
        for case in readable:
            found, spacing = futures[case].result()
            problems += found
            if spacing is not None:
                spacings[str(case.image_path)] = spacing
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    problems += _spacing_outliers(spacings)
    return problems


def _spacing_outliers(spacings: dict[str, tuple[float, float, float]]) -> list[Problem]:
    if len(spacings) < 3:
        return []
    import numpy as np

    values = np.array(list(spacings.values()))
    median = np.median(values, axis=0)
    out = []
    for file, sp in spacings.items():
        ratio = np.maximum(np.asarray(sp) / median, median / np.asarray(sp))
        if (ratio > SPACING_OUTLIER_RATIO).any():
            out.append(
                Problem(
                    file,
                    f"voxel spacing {tuple(round(v, 3) for v in sp)} mm is far from the "
                    f"dataset's median {tuple(round(float(v), 3) for v in median)} mm",
                    "check the header's pixdim (the model resizes slices, but a wrong "
                    "spacing distorts surface metrics)",
                    "warning",
                )
            )
    return out
