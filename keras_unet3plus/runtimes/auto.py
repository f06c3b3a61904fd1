"""``--runtime auto``: run the fastest exported artefact of a model whose parity check passed.

`unet3plus export` records, in each artefact's info, the parity row and the seconds per slice of
the artefact and of the Keras model on the same batch in the same run (a ratio, so it holds on
this machine however loaded it was). Here we read those records back for the artefacts beside a
``.keras`` file and keep the one with the best speed-up, skipping any that failed parity, was made
from another version of the model file (its SHA-256), or cannot load here (missing extra, no GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..modelinfo import SIDECAR_IN_DIR, SIDECAR_SUFFIX, file_sha256, load_export_record

__all__ = ["Candidate", "file_sha256", "export_candidates"]


@dataclass(frozen=True)
class Candidate:
    """An exported artefact and what its export measured."""

    path: Path
    runtime: str
    precision: str
    speedup: float  # Keras seconds per slice / the artefact's, measured side by side
    dice: float
    cpu: str

    def describe(self) -> str:
        return (
            f"{self.path.name} ({self.runtime} {self.precision}: {self.speedup:.1f}x Keras and mask Dice "
            f"{self.dice:.4f} at export on {self.cpu})"
        )


def _artefact_of(sidecar: Path) -> Path:
    if sidecar.name == SIDECAR_IN_DIR:
        return sidecar.parent
    return sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])


def export_candidates(model_path: str | os.PathLike, notes: list[str] | None = None) -> list[Candidate]:
    """Exports of ``model_path`` beside it that passed parity, fastest first; why others were left
    out goes to ``notes``."""
    model_path = Path(model_path)
    notes = notes if notes is not None else []
    digest = file_sha256(model_path) if model_path.is_file() else None
    sidecars = sorted(model_path.parent.glob("*" + SIDECAR_SUFFIX)) + sorted(
        model_path.parent.glob("*/" + SIDECAR_IN_DIR)
    )
    found = []
    for sidecar in sidecars:
        artefact = _artefact_of(sidecar)
        if artefact == model_path or not artefact.exists():
            continue
        try:
            record = load_export_record(artefact)
        except ValueError:
            notes.append(f"{sidecar}: unreadable info, not considered")
            continue
        check = record.checks.get(artefact.name) if record is not None else None
        if record is None or check is None or check.speed is None:
            continue  # not an export of ours, or made without a parity check
        if digest is not None and (record.source is None or record.source.sha256 != digest):
            notes.append(f"{artefact.name}: exported from another version of {model_path.name}; re-export it")
            continue
        if not check.parity.passed:
            notes.append(f"{artefact.name}: failed its parity check at export")
            continue
        found.append(
            Candidate(
                artefact,
                check.parity.runtime,
                record.precision,
                check.speed.speedup,
                check.parity.dice,
                check.speed.cpu,
            )
        )
    return sorted(found, key=lambda c: -c.speedup)
