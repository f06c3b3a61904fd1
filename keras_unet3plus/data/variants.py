"""Acquisition variants of a labelled scan: the same patient as other scanners and protocols
would have imaged it (coarser voxels, a cropped non-square field of view, more noise).

One labelled real scan measures a model on one acquisition; hospitals send many. Each variant is
derived from the scan and its reference labels together, with fixed rules that do not look at the
pixels beyond finding the body, so a score on a variant says how the model copes with that kind
of acquisition, not how it was tuned:

- ``resample``: voxels of the given size. Before sampling, each axis is blurred by a Gaussian that
  takes its resolution (full width at half maximum) from the old voxel size to the new one
  (sigma = sqrt(f^2 - 1) / 2.355 old voxels for a factor f), as a detector, kernel and slice
  profile at the new size would see it. Labels are resampled as fractional masks and kept where
  the organ fills at least half the voxel.
- ``crop_fov``: a rectangular field of view of the given size in mm, centred on the body (the
  box of voxels above -500 HU), the way a technologist crops to the patient.
- ``add_noise``: correlated noise of a given standard deviation (a lower-dose scan): white noise
  smoothed over about a pixel, like reconstructed CT noise, seeded.

Arrays are canonical (RAS, axial slices along the last axis), as :class:`~.volume.Volume` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: HU above which a voxel is taken as the patient (or table) when centring a crop
BODY_HU = -500.0


@dataclass(frozen=True)
class LabelledScan:
    """A canonical HU volume, its label volume (any integer values) and voxel size (mm)."""

    name: str
    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    steps: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.hu.shape != self.labels.shape or self.hu.ndim != 3:
            raise ValueError(
                f"{self.name}: image {self.hu.shape} and labels {self.labels.shape} must be the same 3-D grid"
            )

    def describe(self) -> str:
        x, y, z = self.hu.shape
        sx, sy, sz = self.spacing
        return f"{x}x{y}x{z}, {sx:.2f} x {sy:.2f} x {sz:.2f} mm"


def resample(scan: LabelledScan, spacing: Sequence[float]) -> LabelledScan:
    """``scan`` on voxels of ``spacing`` mm (see the module doc); the first voxel stays in place."""
    new = np.asarray(spacing, dtype=float)
    old = np.asarray(scan.spacing, dtype=float)
    if new.shape != (3,) or (new <= 0).any():
        raise ValueError(f"spacing must be 3 positive sizes in mm, got {spacing}")
    factor = new / old
    shape = tuple(int(np.floor((n - 1) / f)) + 1 for n, f in zip(scan.hu.shape, factor))
    sigma = [float(np.sqrt(f * f - 1)) / 2.355 if f > 1 else 0.0 for f in factor]
    hu = _sample(ndimage.gaussian_filter(np.asarray(scan.hu, np.float32), sigma=sigma, truncate=3.0), factor, shape)
    labels = np.zeros(shape, dtype=scan.labels.dtype)
    for value in np.unique(scan.labels):
        if value == 0:
            continue
        frac = _sample((scan.labels == value).astype(np.float32), factor, shape)
        labels[frac >= 0.5] = value
    return LabelledScan(
        scan.name,
        hu,
        labels,
        tuple(float(v) for v in new),
        scan.steps + (f"resampled to {new[0]:g} x {new[1]:g} x {new[2]:g} mm",),
    )


def _sample(array: np.ndarray, factor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation at voxel ``i * factor`` (output index -> input index)."""
    return ndimage.affine_transform(array, np.diag(factor), output_shape=shape, order=1, mode="nearest")


def crop_fov(scan: LabelledScan, size_mm: tuple[float, float]) -> LabelledScan:
    """A ``size_mm`` (x, y) field of view centred on the body's bounding box (clipped to the scan)."""
    body = np.asarray(scan.hu) > BODY_HU
    rows = [np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != ax))) for ax in (0, 1)]
    slices = []
    for ax, idx in enumerate(rows):
        n = scan.hu.shape[ax]
        want = int(round(size_mm[ax] / scan.spacing[ax]))
        if want >= n or idx.size == 0:
            slices.append(slice(0, n))
            continue
        centre = (idx[0] + idx[-1]) / 2
        start = int(np.clip(round(centre - want / 2), 0, n - want))
        slices.append(slice(start, start + want))
    sl = (slices[0], slices[1], slice(None))
    return replace(
        scan,
        hu=np.ascontiguousarray(scan.hu[sl]),
        labels=np.ascontiguousarray(scan.labels[sl]),
        steps=scan.steps + (f"field of view cropped to {size_mm[0]:g} x {size_mm[1]:g} mm",),
    )


def add_noise(scan: LabelledScan, sd_hu: float, seed: int = 0) -> LabelledScan:
    """``scan`` plus correlated noise of ``sd_hu`` HU standard deviation (seeded)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(scan.hu.shape).astype(np.float32), sigma=(0.8, 0.8, 0))
    noise *= np.float32(sd_hu / max(float(noise.std()), 1e-6))
    return replace(scan, hu=np.asarray(scan.hu, np.float32) + noise, steps=scan.steps + (f"noise +{sd_hu:g} HU sd",))


#: The variants a reference scan is measured on: (name, what it stands for, how it is derived).
#: "3 mm, cropped" is the acquisition of an unseen scan a user reported (3 mm voxels, 366 x 303 mm).
STANDARD_VARIANTS: tuple[tuple[str, str], ...] = (
    ("as acquired", "the scan as it is"),
    ("3 mm", "3 mm voxels in-plane and through-plane (a low-resolution protocol)"),
    ("cropped 360x300 mm", "a non-square field of view cropped to the patient"),
    ("low dose", "+25 HU noise (sd)"),
    ("3 mm, cropped", "both: the acquisition of a small-FOV, thick-slice scan"),
)


def standard_variants(scan: LabelledScan) -> list[LabelledScan]:
    """``scan`` and its :data:`STANDARD_VARIANTS`, each named."""
    coarse = resample(scan, (3.0, 3.0, 3.0))
    out = [scan, coarse, crop_fov(scan, (360.0, 300.0)), add_noise(scan, 25.0), crop_fov(coarse, (360.0, 300.0))]
    return [replace(v, name=name) for v, (name, _) in zip(out, STANDARD_VARIANTS)]
