"""Dataset checks that report every problem at once, before a long run starts.

``check_headers`` reads only NIfTI headers (milliseconds per case): files that are missing,
unreadable, not 3-D, or a label not on its image's grid. ``train`` runs it before creating anything,
so a 50-hour run does not die on case 97 of 131. The voxel-level checks (NaN, label values) happen
while the data is read.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.nifti import check_case_headers
from keras_unet3plus.data.volume import DataError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, and what to do about it."""

    file: str
    problem: str
    fix: str


_FIXES = (
    ("not found", "restore the file or remove the case from the folder"),
    ("not a readable NIfTI", "re-download or re-convert the file (it is truncated or not NIfTI)"),
    ("expected a 3-D volume", "split 4-D / multi-channel files; give one 3-D CT per case"),
    ("shape", "resample the label onto its image's grid (or pair the right files)"),
    ("affine", "give the label its image's affine (same grid, same orientation)"),
)


def _fix_for(message: str) -> str:
    return next((fix for key, fix in _FIXES if key in message), "check the file")


def _split_message(message: str, fallback: str) -> tuple[str, str]:
    """``"<file>: <problem>"`` -> (file, problem)."""
    head, sep, tail = message.partition(": ")
    if sep and ("/" in head or head.endswith((".nii", ".gz"))):
        return head, tail
    return fallback, message


def check_headers(cases: Sequence[Case], workers: int = 8) -> list[Problem]:
    """Header-only checks of every case (in parallel); returns all problems found, in case order."""

    def one(case: Case) -> Problem | None:
        try:
            check_case_headers(case)
        except DataError as exc:
            file, problem = _split_message(str(exc), str(case.image_path))
            return Problem(file, problem, _fix_for(problem))
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = list(pool.map(one, cases))
    return [p for p in found if p is not None]


def format_problems(problems: Sequence[Problem]) -> str:
    """A Markdown table (file | problem | what to do) for the terminal and the error message."""
    lines = ["| file | problem | what to do |", "|---|---|---|"]
    lines += [f"| {Path(p.file)} | {p.problem} | {p.fix} |" for p in problems]
    return "\n".join(lines)


class DatasetError(DataError):
    """A dataset with problems; the message lists them all as a table."""

    def __init__(self, root, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__(f"{root}: {len(self.problems)} problem(s) in the dataset:\n{format_problems(self.problems)}")


def require_clean_headers(cases: Sequence[Case], root) -> None:
    """Raise :class:`DatasetError` listing every header problem of ``cases``."""
    problems = check_headers(cases)
    if problems:
        raise DatasetError(root, problems)
