"""A prediction's probability volume on disk (``predict --save-probabilities``), so that ensembles
can be formed later (``unet3plus ensemble``, nnU-Net's ``--save_probabilities`` +
``nnUNetv2_ensemble``).

Saved before the CGM gate, with the CGM's per-slice ``cls``: averaging saved maps and then gating
with the averaged ``cls`` is the decision an online ensemble of the same models makes. One
compressed ``.npz`` per case: ``probabilities`` (X, Y, Z, C) float16 on the canonical (RAS) grid,
``cls`` (Z, 2) (absent for an export whose gate is in its graph: its probabilities are gated
already), ``original_affine`` (the source grid the mask is written back on), ``threshold``,
``task``, ``num_classes``, ``models``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from .postprocess import cgm_present, labels_from_probabilities, postprocess_labels

__all__ = ["ProbabilityMap", "PROBABILITIES_SUFFIX", "ensemble_maps", "ensemble_files"]

PROBABILITIES_SUFFIX = ".npz"
_KEYS = ("probabilities", "original_affine", "threshold", "task", "num_classes", "models")


@dataclass
class ProbabilityMap:
    """One case's probabilities (not gated) and what turning them into a mask needs."""

    probabilities: np.ndarray  # (X, Y, Z, C) on the canonical grid
    cls: np.ndarray | None  # (Z, 2) the CGM's [absent, present] per axial slice
    original_affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    threshold: float = 0.5
    task: str = "liver"
    num_classes: int = 1
    models: list[str] = field(default_factory=list)

    def labels(self, threshold: float | None = None, gate: bool = True, largest_component: bool = False) -> np.ndarray:
        """The canonical uint8 mask: gated by ``cls`` per slice, then threshold (one channel) or argmax."""
        probs = np.asarray(self.probabilities, dtype=np.float32)
        if gate and self.cls is not None:
            probs = probs * cgm_present(self.cls)[None, None, :, None]
        labels = labels_from_probabilities(probs, self.threshold if threshold is None else threshold)
        return postprocess_labels(labels, largest_component)

    def to_original(self, labels: np.ndarray) -> np.ndarray:
        from ..data.volume import to_original_orientation

        return to_original_orientation(labels, self.original_affine)

    def save(self, path: str | os.PathLike) -> Path:
        """Write compressed (probabilities as float16), atomically."""
        from ..atomic import atomic_path

        path = Path(path)
        arrays = dict(
            probabilities=np.asarray(self.probabilities, dtype=np.float16),
            original_affine=np.asarray(self.original_affine, dtype=np.float64),
            threshold=np.float64(self.threshold),
            task=np.str_(self.task),
            num_classes=np.int64(self.num_classes),
            models=np.array(self.models, dtype=np.str_),
        )
        if self.cls is not None:
            arrays["cls"] = np.asarray(self.cls, dtype=np.float32)
        with atomic_path(path, suffix=PROBABILITIES_SUFFIX) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProbabilityMap:
        """Read a saved map; a missing, foreign or damaged file is one error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: probability file not found")
        if path.suffix != PROBABILITIES_SUFFIX:
            raise ValueError(
                f"{path}: not a probability file (the {PROBABILITIES_SUFFIX} that `unet3plus predict "
                f"--save-probabilities` writes)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _KEYS if k not in data.files]
                if missing:
                    raise ValueError(f"lacks {', '.join(missing)}")
                probs = data["probabilities"]
                cls_ = data["cls"] if "cls" in data.files else None
                out = cls(
                    probabilities=probs,
                    cls=cls_,
                    original_affine=data["original_affine"],
                    threshold=float(data["threshold"]),
                    task=str(data["task"]),
                    num_classes=int(data["num_classes"]),
                    models=[str(m) for m in data["models"]],
                )
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ValueError(
                f"{path}: not a probability file of `unet3plus predict --save-probabilities` ({exc})"
            ) from None
        if probs.ndim != 4 or (cls_ is not None and cls_.shape != (probs.shape[2], 2)):
            raise ValueError(
                f"{path}: probabilities of shape {probs.shape} (and cls "
                f"{None if cls_ is None else cls_.shape}) are not (X, Y, Z, C) with (Z, 2)"
            )
        return out


def ensemble_maps(maps: Sequence[ProbabilityMap], names: Sequence[str] | None = None) -> ProbabilityMap:
    """The average of saved maps of one case, as :class:`~.ensemble.EnsembleRuntime` averages models:
    ``cls`` averaged when every map has it; else each map gated by its own ``cls`` first. Maps of
    another grid, task or class count are refused naming the files."""
    from .ensemble import average

    names = list(names) if names is not None else [f"map {i}" for i in range(len(maps))]
    if not maps:
        raise ValueError("an ensemble needs at least one probability file")
    first = maps[0]
    for m, name in zip(maps[1:], names[1:]):
        for what, a, b in (
            ("grid", first.probabilities.shape, m.probabilities.shape),
            ("task", first.task, m.task),
            ("classes", first.num_classes, m.num_classes),
        ):
            if a != b:
                raise ValueError(f"{names[0]} and {name} cannot form an ensemble: different {what} ({a} vs {b})")
        if not np.allclose(first.original_affine, m.original_affine, atol=1e-4):
            raise ValueError(
                f"{names[0]} and {name} cannot form an ensemble: different source grids "
                f"(affines differ): predictions of different scans?"
            )
    if all(m.cls is not None for m in maps):
        probs, cls = average([m.probabilities for m in maps]), average([m.cls for m in maps])
    else:
        gated = []
        for m in maps:
            p = np.asarray(m.probabilities, np.float32)
            if m.cls is not None:
                p = p * cgm_present(m.cls)[None, None, :, None]
            gated.append(p)
        probs, cls = average(gated), None
    return ProbabilityMap(
        probs,
        cls,
        first.original_affine,
        first.threshold,
        first.task,
        first.num_classes,
        [n for m in maps for n in m.models],
    )


def ensemble_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    threshold: float | None = None,
    gate: bool = True,
    largest_component: bool = False,
) -> list[Path]:
    """Masks of saved probabilities averaged (``unet3plus ensemble``): ``inputs`` are ``.npz`` files of
    one case (``output``: its ``.nii.gz``, or a folder), or folders of them (nnU-Net's
    ``nnUNetv2_ensemble -i FOLD_0 FOLD_1 ...``: every folder must hold the same cases; ``output``: a
    folder). Each mask is a uint8 NIfTI on the source scan's grid. Returns the files written."""
    from ..data.nifti import save_nifti_atomic

    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: not found")
    output = Path(output)
    if all(p.is_dir() for p in paths):
        cases = [sorted(f.name for f in p.glob("*" + PROBABILITIES_SUFFIX)) for p in paths]
        if not cases[0]:
            raise ValueError(
                f"{paths[0]}: no {PROBABILITIES_SUFFIX} probability files (predict with --save-probabilities)"
            )
        for p, names in zip(paths[1:], cases[1:]):
            if names != cases[0]:
                odd = sorted(set(names) ^ set(cases[0]))
                raise ValueError(
                    f"{p} and {paths[0]} hold different cases (first: {odd[0]}); an ensemble "
                    f"needs every case in every folder"
                )
        jobs = [
            ([p / name for p in paths], output / (name[: -len(PROBABILITIES_SUFFIX)] + ".nii.gz")) for name in cases[0]
        ]
    elif any(p.is_dir() for p in paths):
        raise ValueError("give either probability files of one case or folders of them, not both")
    else:
        target = output / (paths[0].name[: -len(PROBABILITIES_SUFFIX)] + ".nii.gz") if output.is_dir() else output
        jobs = [(paths, target)]
    written = []
    for files, target in jobs:
        merged = ensemble_maps([ProbabilityMap.load(f) for f in files], [str(f) for f in files])
        labels = merged.to_original(merged.labels(threshold, gate, largest_component))
        save_nifti_atomic(_mask_nifti(labels, merged.original_affine), target)
        written.append(target)
    return written


def _mask_nifti(labels: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine)
    img.set_data_dtype(np.uint8)
    return img
