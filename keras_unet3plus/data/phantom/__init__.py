"""Synthetic abdominal CT cases a radiologist would recognise, written as real NIfTI files in the
LiTS, MSD or nnU-Net v2 layout.

The anatomy is defined in millimetres in patient coordinates (:mod:`.anatomy`): body outline with
skin, subcutaneous and visceral fat (habitus thin to obese), abdominal wall, paraspinal and psoas
muscles, the spine bulging into the back of the cavity with the paravertebral gutters beside it,
diaphragm domes with the lung bases and the heart above them, vertebrae (cortex, marrow,
discs, canal, posterior elements) and oblique ribs with costal cartilage, the liver (right lobe under
the right dome, medial segment, a left lobe crossing the midline over the stomach, caudate lobe,
intrahepatic portal and hepatic veins, gallbladder under it, lesions as label 2), spleen
(posterolateral in the left upper quadrant, against the ribs, behind the stomach, with a hilar
concavity), stomach (gas / fluid / oral contrast / food / collapsed), duodenum, small bowel and
colon, pancreas, kidneys (cortex, medulla, sinus fat, pelvis), aorta with its branches, IVC,
portal / splenic / mesenteric veins, crura, arms up or down and the patient table. Organ shapes
are deformed by smooth random fields; size, position and habitus vary per case.

The scan (:mod:`.acquisition`) is drawn per case: in-plane field of view 300-500 mm (sometimes
cropping the body), slice spacing 0.7-5 mm, coverage of the whole upper abdomen or a slab,
non-contrast / arterial / portal venous / delayed phase (half the scans between two phases),
scanner blur (sharp, or a soft kernel in 3 of 10 scans) and slice profile, noise with
a CT-like (ramp x Gaussian) power spectrum, occasional streaks from dense objects, a small patient
rotation. Then the anatomy is sampled on the requested grid, so ``shape`` only sets the voxel count;
with ``crop_fov`` a third of the scans are cropped to the patient, non-square (128 voxels over
300-500 mm is already 2.3-3.9 mm in-plane: the low-resolution protocols hospitals also send).

Arrays are in RAS voxel order unless ``orientation`` asks for another scanner orientation.
Everything derives from one seed: the same seed gives the same case (and the same patient on any
grid). Speed (2 shared CPU cores): ~0.3-0.7 s for 128 x 128 x 48, ~4-8 s for 512 x 512 x 100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np
from nibabel import orientations as ornt_mod

from keras_unet3plus.data.nifti import save_nifti_atomic
from keras_unet3plus.data.tasks import get_task

from . import anatomy
from .acquisition import Acquisition, render, sample_acquisition
from .anatomy import Anatomy
from .geometry import Grid

#: Changes whenever the same seed draws a different case (a cached phantom data set is then redrawn).
PHANTOM_VERSION = 2
#: Orientations a case can be written in (axis codes nibabel understands); RAS is canonical.
EXAMPLE_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PLS")


@dataclass
class PhantomCase:
    """One synthetic case; arrays are in the voxel order described by ``affine``.

    ``label``: 0 background, 1 liver, 2 lesion (LiTS convention). ``spleen``: 0/1 spleen mask.
    ``phase``: contrast phase; ``tissue``: the tissue code map (RAS order, see
    :mod:`.anatomy`), kept for inspection.
    """

    hu: np.ndarray
    label: np.ndarray
    spleen: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    orientation: str = "RAS"
    phase: str = "portal"
    info: dict = field(default_factory=dict, repr=False)

    def label_for(self, task: str) -> np.ndarray:
        """The label map a dataset of ``task`` stores: LiTS 0/1/2 for liver tasks, 0/1 for spleen."""
        spec = get_task(task)
        if spec.organ == "spleen":
            return self.spleen
        return self.label


def _ras_affine(spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    aff = np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])
    aff[:3, 3] = np.asarray(origin, dtype=float)
    return aff


def generate_case(
    seed: int,
    shape: tuple[int, int, int] = (128, 128, 64),
    spacing: tuple[float, float, float] | None = None,
    lesions: bool = True,
    orientation: str = "RAS",
    organ: str | None = None,
    crop_fov: bool = False,
) -> PhantomCase:
    """Generate one synthetic CT case, deterministically from ``seed``.

    ``shape`` / ``spacing`` are given in RAS order. ``spacing=None`` (default) draws a realistic
    acquisition (field of view 300-500 mm over the in-plane size, slice spacing 0.7-5 mm); a given
    ``spacing`` is used as is (field of view = shape x spacing, centred on the upper abdomen).
    ``orientation`` (e.g. "LPS", "PLS") reorders the arrays and the affine the way a scanner
    export in that orientation would, so readers' orientation handling can be tested.
    ``organ`` ("liver", "spleen"): a slab-shaped acquisition goes through that organ, as every
    case of a data set for it does (None: a slab may miss it; whole-abdomen scans show both).
    ``crop_fov``: about a third of the cases (those whose acquisition draws a crop) keep a
    centred, non-square part of the in-plane grid (80-100 % of X, 60-95 % of Y), as scans
    cropped to the patient are: their shape is then smaller than ``shape``.
    """
    shape, spacing = _checked_grid(shape, spacing)
    ss = np.random.SeedSequence(int(seed))
    r_anat, r_acq, r_noise = (np.random.default_rng(s) for s in ss.spawn(3))
    body = Anatomy(r_anat, lesions=lesions)
    acq = sample_acquisition(r_acq, body, shape, spacing, organ)
    grid = Grid(shape, acq.spacing, acq.origin, acq.angle, acq.pivot)
    body.draw(grid)
    tissue = grid.tissue
    hu = render(tissue, grid, acq, r_noise)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    origin = np.asarray(acq.origin, dtype=float)
    if crop_fov and acq.crop is not None:
        hu, tissue, shape = _cropped(hu, tissue, origin, acq)
    label = np.isin(tissue, anatomy.LIVER_CODES).astype(np.uint8)
    label[np.isin(tissue, anatomy.LESION_CODES)] = 2
    spleen_lab = (tissue == anatomy.SPLEEN).astype(np.uint8)
    info = {
        "phase": acq.phase,
        "fov_mm": (shape[0] * acq.spacing[0], shape[1] * acq.spacing[1]),
        "thickness": acq.thickness,
        "noise_sd": acq.noise_sd,
        "habitus": body.habitus,
        "arms_down": body.arms_down,
        "tissue": tissue,
    }
    orientation = orientation.upper()
    (hu, label, spleen_lab), affine, spacing_out = _reoriented(
        (hu, label, spleen_lab), _ras_affine(acq.spacing, origin), tuple(float(x) for x in acq.spacing), orientation
    )
    return PhantomCase(
        hu=hu,
        label=label,
        spleen=spleen_lab,
        affine=affine,
        spacing=spacing_out,  # type: ignore[arg-type]
        seed=int(seed),
        orientation=orientation,
        phase=acq.phase,
        info=info,
    )


def _checked_grid(
    shape: Sequence[int], spacing: Sequence[float] | None
) -> tuple[tuple[int, int, int], tuple[float, float, float] | None]:
    """``shape`` and ``spacing`` as ints and floats, refused in one line when they make no grid."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8, got {shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive sizes (mm), got {spacing}")
    return shape, spacing  # type: ignore[return-value]


def _cropped(
    hu: np.ndarray, tissue: np.ndarray, origin: np.ndarray, acq: Acquisition
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The centred part of the in-plane grid a reconstruction cropped to the patient keeps
    (``acq.crop``), and its shape; ``origin`` moves to the first voxel kept (in place)."""
    shape = hu.shape
    keep = [max(8, int(round(n * f))) for n, f in zip(shape[:2], acq.crop)]  # type: ignore[arg-type]
    start = [(n - k) // 2 for n, k in zip(shape[:2], keep)]
    sl = (slice(start[0], start[0] + keep[0]), slice(start[1], start[1] + keep[1]))
    origin[:2] += np.asarray(start) * np.asarray(acq.spacing[:2])
    return np.ascontiguousarray(hu[sl]), np.ascontiguousarray(tissue[sl]), tuple(keep) + shape[2:]  # type: ignore[return-value]


def _reoriented(
    arrays: tuple[np.ndarray, ...], affine: np.ndarray, spacing: tuple[float, ...], orientation: str
) -> tuple[tuple[np.ndarray, ...], np.ndarray, tuple[float, ...]]:
    """RAS arrays, their affine and spacing as a scanner export in ``orientation`` holds them."""
    if orientation == "RAS":
        return arrays, affine, spacing
    target = ornt_mod.axcodes2ornt(tuple(orientation))
    transform = ornt_mod.ornt_transform(ornt_mod.axcodes2ornt(("R", "A", "S")), target)
    affine = affine @ ornt_mod.inv_ornt_aff(transform, arrays[0].shape)
    arrays = tuple(np.ascontiguousarray(ornt_mod.apply_orientation(a, transform)) for a in arrays)
    return arrays, affine, tuple(spacing[int(i)] for i in transform[:, 0].argsort())


from .writer import case_seed, write_dataset  # noqa: E402  (writer uses generate_case)

__all__ = [
    "EXAMPLE_ORIENTATIONS",
    "PHANTOM_VERSION",
    "PhantomCase",
    "generate_case",
    "write_dataset",
    "case_seed",
    "save_nifti_atomic",
    "Anatomy",
    "Acquisition",
    "Grid",
]
