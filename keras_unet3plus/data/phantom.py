"""Synthetic abdominal CT cases, written as real NIfTI files in the LiTS or MSD layout.

Each case is an axial stack through the upper abdomen, from below the kidneys to the lung bases:
air, body outline with subcutaneous fat, abdominal wall muscle, visceral fat with bowel and gas,
spine with paraspinal muscles, ribs, aorta and IVC, kidneys, stomach, spleen (left) and a lobed
liver (right upper abdomen) with an optional gallbladder and hypodense lesions (label 2).

What makes it a fair test rather than a toy: liver, spleen, muscle and bowel share the same HU
range (50-100 HU with 10-20 HU noise), so intensity alone does not segment the liver; its lobed
shape (a union of ellipsoids deformed by smooth random fields), size, position, contrast phase,
noise level and lesion load all change from case to case, and a third to a half of the slices do
not contain the organ. Everything is derived from one seed (``numpy.random.default_rng``).

Geometry is defined in normalised coordinates u, v, w in (-1, 1) over the field of view
(u: patient left -> right, v: posterior -> anterior, w: inferior -> superior, i.e. RAS), so the
anatomy fills any requested grid; ``spacing`` only sets the affine. Speed: about 0.1-0.2 s for a
128 x 128 x 64 case (separable smooth noise, broadcasting, one small Gaussian blur).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_mod
from scipy import ndimage

from keras_unet3plus.data.tasks import get_task
from keras_unet3plus.atomic import atomic_write_text
from keras_unet3plus.data.nifti import save_nifti_atomic

#: Orientations a case can be written in (axis codes nibabel understands); RAS is canonical.
EXAMPLE_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PLS")


@dataclass
class PhantomCase:
    """One synthetic case; arrays are in the voxel order described by ``affine``.

    ``label``: 0 background, 1 liver, 2 lesion (LiTS convention). ``spleen``: 0/1 spleen mask.
    """

    hu: np.ndarray
    label: np.ndarray
    spleen: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    orientation: str = "RAS"

    def label_for(self, task: str) -> np.ndarray:
        """The label map a dataset of ``task`` stores: LiTS 0/1/2 for liver tasks, 0/1 for spleen."""
        spec = get_task(task)
        if spec.organ == "spleen":
            return self.spleen
        return self.label


# --------------------------------------------------------------------------------------------
# smooth random fields
# --------------------------------------------------------------------------------------------

def _basis(coords: np.ndarray, n: int) -> np.ndarray:
    """Gaussian bumps at n evenly spaced centres over (-1.2, 1.2), sampled at coords: (len, n)."""
    centres = np.linspace(-1.2, 1.2, n, dtype=np.float32)
    width = float(centres[1] - centres[0])
    b = np.exp(-(((coords[:, None] - centres[None, :]) / width) ** 2))
    return (b / b.sum(axis=1, keepdims=True)).astype(np.float32)


class _Grid:
    """Normalised coordinate axes of one case and a cheap separable smooth-noise generator."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape
        self.axes = [((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1) for n in shape]
        self.U = self.axes[0][:, None, None]
        self.V = self.axes[1][None, :, None]
        self.W = self.axes[2][None, None, :]
        self._bases: dict[tuple[int, int], np.ndarray] = {}

    def basis(self, axis: int, n: int) -> np.ndarray:
        key = (axis, n)
        if key not in self._bases:
            self._bases[key] = _basis(self.axes[axis], n)
        return self._bases[key]

    def noise3(self, rng: np.random.Generator, n: tuple[int, int, int] = (6, 6, 5)) -> np.ndarray:
        """Smooth zero-mean noise over the grid, std about 1 (separable Gaussian-bump synthesis)."""
        coarse = rng.standard_normal(n).astype(np.float32) * np.float32(2.2)
        bu, bv, bw = self.basis(0, n[0]), self.basis(1, n[1]), self.basis(2, n[2])
        small = np.einsum("abc,yb,zc->ayz", coarse, bv, bw, optimize=True)  # (a, Y, Z)
        x, y, z = self.shape
        return (bu @ small.reshape(n[0], y * z)).reshape(x, y, z)

    def noise2(self, rng: np.random.Generator, n: tuple[int, int] = (5, 5)) -> np.ndarray:
        """Smooth in-plane noise (X, Y, 1)."""
        coarse = rng.standard_normal(n).astype(np.float32)
        field = self.basis(0, n[0]) @ coarse @ self.basis(1, n[1]).T
        return (field * np.float32(2.0))[:, :, None]

    def ellipse(self, c: Sequence[float], a: Sequence[float]) -> np.ndarray:
        """In-plane ellipse (X, Y, 1) normalised radius, for structures that run through all slices."""
        return np.sqrt(((self.U - np.float32(c[0])) / np.float32(a[0])) ** 2
                       + ((self.V - np.float32(c[1])) / np.float32(a[1])) ** 2)

    def ellipsoid(self, c: Sequence[float], a: Sequence[float], theta: float = 0.0) -> np.ndarray:
        """Normalised radius of an ellipsoid (rotated by ``theta`` in-plane): < 1 inside."""
        du, dv, dw = self.U - np.float32(c[0]), self.V - np.float32(c[1]), self.W - np.float32(c[2])
        if theta:
            ct, st = np.float32(np.cos(theta)), np.float32(np.sin(theta))
            du, dv = ct * du + st * dv, -st * du + ct * dv
        return np.sqrt((du / np.float32(a[0])) ** 2 + (dv / np.float32(a[1])) ** 2
                       + (dw / np.float32(a[2])) ** 2)


# --------------------------------------------------------------------------------------------
# the case generator
# --------------------------------------------------------------------------------------------

def _ribs(g: _Grid, bx: float, by: float, a0: float, b0: float, rib_r: float) -> np.ndarray:
    """Rib cross-sections: small discs along the inner body wall whose angle drifts with height
    (ribs run obliquely), present from the lower abdomen upwards. Stamped per slice: cheap at 512^2."""
    nx, ny, nz = g.shape
    ribs = np.zeros(g.shape, dtype=bool)
    ru_px, rv_px = 0.028 * nx / 2, 0.028 * ny / 2
    hx, hy = int(np.ceil(ru_px)), int(np.ceil(rv_px))
    du = (np.arange(-hx, hx + 1) / ru_px)[:, None] ** 2
    dv = (np.arange(-hy, hy + 1) / rv_px)[None, :] ** 2
    disc = (du + dv) < 1.0
    for z, w in enumerate(g.axes[2]):
        a, b = a0 * (1 + 0.04 * w), b0 * (1 + 0.03 * w)
        for k, ang in enumerate(np.linspace(0.15, np.pi - 0.15, 9)):
            if w <= -0.35 + 0.05 * k:
                continue
            for side in (1, -1):
                phase = ang + 0.35 * w * side
                u = bx + side * a * rib_r * np.cos(phase)
                v = by + b * rib_r * np.sin(phase) * 0.95
                i, j = int(round((u + 1) / 2 * nx - 0.5)), int(round((v + 1) / 2 * ny - 0.5))
                i0, i1, j0, j1 = max(0, i - hx), min(nx, i + hx + 1), max(0, j - hy), min(ny, j + hy + 1)
                if i0 < i1 and j0 < j1:
                    ribs[i0:i1, j0:j1, z] |= disc[i0 - (i - hx):i1 - (i - hx), j0 - (j - hy):j1 - (j - hy)]
    return ribs


def _ras_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    aff = np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])
    aff[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2 * np.asarray(spacing, dtype=float)
    return aff


def generate_case(seed: int, shape: tuple[int, int, int] = (128, 128, 64),
                  spacing: tuple[float, float, float] = (0.8, 0.8, 2.5), lesions: bool = True,
                  orientation: str = "RAS") -> PhantomCase:
    """Generate one synthetic CT case, deterministically from ``seed``.

    ``shape`` / ``spacing`` are given in RAS order; ``orientation`` (e.g. "LPS", "PLS") reorders
    the arrays and the affine the way a scanner export in that orientation would, so readers'
    orientation handling can be tested.
    """
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8, got {shape}")
    rng = np.random.default_rng(seed)
    g = _Grid(shape)
    U, V, W = g.U, g.V, g.W
    f32 = np.float32
    full = shape

    # ---- per-case parameters (contrast phase, noise, body habitus) ----
    liver_hu = rng.uniform(55, 100)
    spleen_hu = liver_hu + rng.uniform(-12, 18)
    muscle_hu = rng.uniform(45, 62)
    bowel_hu = rng.uniform(30, 60)
    fat_hu = rng.uniform(-110, -85)
    kidney_hu = rng.uniform(130, 190)
    vessel_hu = rng.uniform(130, 190)
    noise_std = rng.uniform(10, 20)
    body_scale = rng.uniform(0.88, 1.0)
    bx, by = rng.normal(0, 0.02), rng.normal(-0.04, 0.02)

    # ---- body outline, fat, muscle wall, cavity ----
    a_body = f32(0.9 * body_scale) * (1 + f32(0.04) * W)
    b_body = f32(0.68 * body_scale) * (1 + f32(0.03) * W)
    r_body = np.sqrt(((U - f32(bx)) / a_body) ** 2 + ((V - f32(by)) / b_body) ** 2) \
        + f32(0.02) * g.noise2(rng)
    fat_t = rng.uniform(0.05, 0.12)
    body = r_body < 1.0
    wall_in = 1.0 - fat_t
    muscle_wall = (r_body < wall_in) & (r_body >= wall_in - 0.06)
    cavity = r_body < wall_in - 0.06

    hu = np.full(full, -1000.0, dtype=np.float32)
    hu[body] = fat_hu
    hu[muscle_wall] = muscle_hu

    # ---- liver (right upper abdomen): union of lobes deformed by smooth noise ----
    s = rng.uniform(0.85, 1.15)
    cu, cv, cw = 0.38 + rng.normal(0, 0.04), rng.normal(0, 0.04), 0.12 + rng.normal(0, 0.08)
    lobes = [
        ((cu, cv - 0.02, cw), (0.33 * s, 0.42 * s, 0.42 * s)),                      # right lobe
        ((cu - 0.36 * s, cv + 0.22, cw + 0.12), (0.30 * s * rng.uniform(0.8, 1.2),
                                                  0.15 * s, 0.22 * s)),            # left lobe
        ((cu - 0.24 * s, cv - 0.12, cw + 0.05), (0.10 * s, 0.10 * s, 0.16 * s)),      # caudate
    ]
    if rng.random() < 0.5:  # an inferior (Riedel) extension of the right lobe
        lobes.append(((cu + 0.08, cv + 0.04, cw - 0.38 * s), (0.15 * s, 0.18 * s, 0.25 * s)))
    liver_field = np.minimum.reduce([g.ellipsoid(c, a) for c, a in lobes])
    liver_field = liver_field + f32(0.1) * g.noise3(rng) + f32(0.06) * g.noise3(rng, (10, 10, 7))
    # diaphragm dome over the liver (right) and spleen (left); lungs above it
    top = cw + 0.42 * s * rng.uniform(0.75, 0.95)
    dome = np.maximum(
        f32(top) - f32(0.45) * (((U - f32(cu)) / 0.6) ** 2 + (V / 0.7) ** 2),
        f32(top - 0.05) - f32(0.4) * (((U + 0.45) / 0.5) ** 2 + ((V + 0.1) / 0.6) ** 2),
    )
    below_dome = W < dome
    lung = cavity & ~below_dome
    liver = (liver_field < 1.0) & cavity & below_dome

    # ---- spine, paraspinal muscles, vessels, ribs ----
    sy = by - 0.62 * 0.68 * body_scale
    vert = g.ellipse((0.0, sy + 0.1), (0.1, 0.085))
    canal = g.ellipse((0.0, sy - 0.03), (0.035, 0.035))
    spine = np.broadcast_to(vert < 1.0, full)
    paraspinal = ((g.ellipse((0.13, sy - 0.07), (0.1, 0.08)) < 1.0)
                  | (g.ellipse((-0.13, sy - 0.07), (0.1, 0.08)) < 1.0)) & body
    psoas = ((g.ellipsoid((0.14, sy + 0.15, -1.0), (0.07, 0.06, 0.9)) < 1.0)
             | (g.ellipsoid((-0.14, sy + 0.15, -1.0), (0.07, 0.06, 0.9)) < 1.0))
    aorta = np.broadcast_to(g.ellipse((-0.05, sy + 0.24), (0.045, 0.045)) < 1.0, full)
    ivc = np.broadcast_to(g.ellipse((0.1, sy + 0.28), (0.05, 0.04)) < 1.0, full)
    ribs = _ribs(g, bx, by, 0.9 * body_scale, 0.68 * body_scale, wall_in - 0.03)

    # ---- kidneys, stomach, bowel ----
    kz = rng.uniform(-0.45, -0.25)
    kid_r = g.ellipsoid((0.32, sy + 0.2, kz - 0.1), (0.1, 0.13, 0.28), theta=0.4)
    kid_l = g.ellipsoid((-0.32, sy + 0.2, kz + 0.05), (0.1, 0.13, 0.28), theta=-0.4)
    kidney_r = kid_r < 1.0
    kidney_l = kid_l < 1.0
    kidneys = (kidney_r | kidney_l) & cavity
    medulla = (np.minimum(kid_r, kid_l) < 0.55) & kidneys
    stomach_f = g.ellipsoid((-0.2, by + 0.25, cw + 0.2), (0.2, 0.14, 0.22)) + f32(0.1) * g.noise3(rng)
    stomach = (stomach_f < 1.0) & cavity & below_dome
    stomach_gas = stomach & (V > f32(by + 0.31))
    bowel_noise = g.noise3(rng, (14, 14, 9))
    bowel = cavity & below_dome & (np.abs(bowel_noise) > 0.9) & (W < f32(cw + 0.1))
    gas = bowel & (g.noise3(rng, (12, 12, 8)) > 1.4)

    # ---- spleen (left, posterior-lateral, crescent) ----
    sp_c = (-0.52 + rng.normal(0, 0.03), by - 0.16 + rng.normal(0, 0.04), cw + 0.05 + rng.normal(0, 0.05))
    sp_s = rng.uniform(0.85, 1.2)
    sp_outer = g.ellipsoid(sp_c, (0.17 * sp_s, 0.3 * sp_s, 0.3 * sp_s), theta=0.6)
    sp_inner = g.ellipsoid((sp_c[0] + 0.17 * sp_s, sp_c[1] + 0.07, sp_c[2]),
                           (0.09 * sp_s, 0.2 * sp_s, 0.35 * sp_s), theta=0.6)
    spleen = (sp_outer + f32(0.08) * g.noise3(rng) < 1.0) & (sp_inner > 1.0) & cavity & below_dome

    # ---- gallbladder and lesions inside the liver ----
    exclusions = spine | aorta | ivc | kidneys
    liver &= ~exclusions
    gall = np.zeros(full, dtype=bool)
    if rng.random() < 0.6:
        gall = (g.ellipsoid((cu - 0.08, cv + 0.28, cw - 0.25 * s), (0.06, 0.09, 0.12)) < 1.0) & liver
        liver &= ~gall
    lesion = np.zeros(full, dtype=bool)
    if lesions:
        idx = np.flatnonzero(liver)
        for _ in range(int(rng.integers(0, 4)) if idx.size else 0):
            c = np.unravel_index(idx[rng.integers(idx.size)], full)
            cc = [float(g.axes[i][c[i]]) for i in range(3)]
            rad = rng.uniform(0.035, 0.09)
            les = g.ellipsoid(cc, (rad, rad * rng.uniform(0.8, 1.2), rad * 1.5)) \
                + f32(0.15) * g.noise3(rng, (5, 5, 4))
            lesion |= (les < 1.0) & liver
    spleen &= ~liver & ~exclusions & ~stomach
    stomach &= ~liver & ~spleen

    # ---- paint (later wins) ----
    hu[cavity] = fat_hu + 10
    hu[bowel] = bowel_hu
    hu[gas] = -700
    hu[psoas & cavity] = muscle_hu
    hu[lung] = -850
    hu[paraspinal & ~cavity] = muscle_hu
    hu[stomach] = 15
    hu[stomach_gas] = -800
    hu[kidneys] = kidney_hu
    hu[medulla] = kidney_hu - 90
    hu[spleen] = spleen_hu
    hu[liver] = liver_hu
    hu[gall] = 8
    hu[lesion] = liver_hu - rng.uniform(25, 60)
    hu[aorta & body] = vessel_hu
    hu[ivc & body] = vessel_hu - 30
    hu[spine] = 260
    hu[spine & np.broadcast_to(vert > 0.8, full)] = 600
    hu[np.broadcast_to(canal < 1.0, full)] = 20
    hu[ribs & body] = 650
    # organ texture, partial-volume blur, scanner noise
    tissue = liver | spleen | kidneys
    hu[tissue] += (f32(6.0) * g.noise3(rng, (10, 10, 8)))[tissue]
    hu = ndimage.gaussian_filter(hu, sigma=(0.7, 0.7, 0.3), truncate=2.0)
    hu += rng.standard_normal(full, dtype=np.float32) * f32(noise_std)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    label = liver.astype(np.uint8)
    label[lesion] = 2
    spleen_lab = spleen.astype(np.uint8)

    affine = _ras_affine(shape, spacing)
    spacing_out = tuple(float(x) for x in spacing)
    orientation = orientation.upper()
    if orientation != "RAS":
        target = ornt_mod.axcodes2ornt(tuple(orientation))
        transform = ornt_mod.ornt_transform(ornt_mod.axcodes2ornt(("R", "A", "S")), target)
        affine = affine @ ornt_mod.inv_ornt_aff(transform, shape)
        hu, label, spleen_lab = (np.ascontiguousarray(ornt_mod.apply_orientation(a, transform))
                                 for a in (hu, label, spleen_lab))
        spacing_out = tuple(spacing_out[int(i)] for i in transform[:, 0].argsort())
    return PhantomCase(hu=hu, label=label, spleen=spleen_lab, affine=affine,
                       spacing=spacing_out, seed=int(seed), orientation=orientation)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# writing datasets
# --------------------------------------------------------------------------------------------

def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def write_dataset(root: str | os.PathLike, n_cases: int, layout: str = "lits", task: str = "liver",
                  shape: tuple[int, int, int] = (128, 128, 64),
                  spacing: tuple[float, float, float] = (0.8, 0.8, 2.5), seed: int = 0,
                  compress: bool = True, lesions: bool = True,
                  orientations: Sequence[str] | None = None, start_index: int = 0) -> list[Path]:
    """Write ``n_cases`` phantom cases under ``root``; returns the image paths.

    ``layout="lits"``: ``volume-N`` / ``segmentation-N`` with labels 0/1/2 (spleen task: 0/1).
    ``layout="msd"``: ``imagesTr/``, ``labelsTr/`` and a ``dataset.json`` shaped like the real
    Task09_Spleen one (Task03_Liver style for liver tasks). ``orientations`` is cycled over the
    cases (e.g. ``["RAS", "LPS"]``) to produce files that need reorienting.
    """
    spec = get_task(task)
    if layout not in ("lits", "msd"):
        raise ValueError(f"layout must be 'lits' or 'msd', got {layout!r}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if compress else ".nii"
    orientations = list(orientations or ["RAS"])
    prefix = "spleen" if spec.organ == "spleen" else "liver"
    images: list[Path] = []
    training = []
    for k in range(n_cases):
        i = start_index + k
        case = generate_case(case_seed(seed, i), shape=shape, spacing=spacing, lesions=lesions,
                             orientation=orientations[k % len(orientations)])
        lab = case.label_for(spec.name)
        if layout == "lits":
            img_path = root / f"volume-{i}{ext}"
            lab_path = root / f"segmentation-{i}{ext}"
        else:
            img_path = root / "imagesTr" / f"{prefix}_{i}{ext}"
            lab_path = root / "labelsTr" / f"{prefix}_{i}{ext}"
            training.append({"image": f"./imagesTr/{img_path.name}", "label": f"./labelsTr/{lab_path.name}"})
        save_nifti_atomic(_nifti(case.hu, case.affine), img_path)
        save_nifti_atomic(_nifti(lab, case.affine), lab_path)
        images.append(img_path)
    if layout == "msd":
        (root / "imagesTs").mkdir(exist_ok=True)
        meta = {
            "name": "Spleen" if prefix == "spleen" else "Liver",
            "description": f"{'Spleen' if prefix == 'spleen' else 'Liver and tumour'} segmentation "
                           "(keras-unet3plus synthetic phantom)",
            "reference": "keras-unet3plus phantom generator (synthetic, no patient data)",
            "licence": "CC-BY-SA 4.0",
            "release": "1.0 phantom",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": dict(spec.msd_labels),
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
        }
        meta_path = root / "dataset.json"
        if meta_path.exists() and start_index > 0:  # appending: keep the earlier entries
            old = json.loads(meta_path.read_text(encoding="utf-8"))
            names = {e["image"] for e in training}
            meta["training"] = [e for e in old.get("training", []) if e["image"] not in names] + training
            meta["numTraining"] = len(meta["training"])
        atomic_write_text(meta_path, json.dumps(meta, indent=4))
    return images
