"""The scan: field of view, slice spacing, contrast phase, scanner blur, CT-like noise, streaks.

HU per tissue and contrast phase are typical published values (e.g. liver ~55 HU native, ~70-80
arterial, ~100-120 portal venous; aorta ~300 arterial; renal cortex ~170 in the arterial and
nephrographic phases), each varied per case. Noise is white noise shaped by a ramp x Gaussian
noise power spectrum in cycles per mm (the shape of filtered back-projection noise), scaled with
slice thickness and patient size; on coarse grids only the part of the spectrum the grid can hold
is kept, so a 128-pixel case looks like a real 512-pixel scan resized to 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from . import anatomy as A

f32 = np.float32

PHASES = ("native", "arterial", "portal", "delayed")
PHASE_P = (0.2, 0.2, 0.5, 0.1)

# tissue -> (native, arterial, portal venous, delayed) mean HU, case-to-case sd
_HU: dict[int, tuple[tuple[float, float, float, float], float]] = {
    A.AIR: ((-1000, -1000, -1000, -1000), 0),
    A.FAT: ((-100, -100, -98, -98), 8),
    A.VFAT: ((-95, -93, -90, -90), 8),
    A.SINUSFAT: ((-90, -85, -80, -80), 10),
    A.MUSCLE: ((50, 55, 60, 58), 6),
    A.LUNG: ((-860, -860, -850, -850), 35),
    A.LIVER: ((57, 75, 108, 92), 9),
    A.SPLEEN: ((46, 118, 112, 98), 10),
    A.KCORTEX: ((32, 175, 170, 160), 22),
    A.KMEDULLA: ((30, 80, 160, 155), 18),
    A.ARTERY: ((42, 300, 170, 125), 45),
    A.VEIN: ((40, 95, 150, 120), 30),
    A.PORTAL: ((40, 120, 180, 130), 25),
    A.PORTAL_IH: ((40, 110, 170, 125), 25),
    A.HEPVEIN: ((38, 65, 155, 125), 25),
    A.GIWALL: ((40, 80, 92, 82), 10),
    A.FLUID: ((10, 10, 12, 12), 7),
    A.GAS: ((-960, -960, -960, -960), 25),
    A.ORAL: ((300, 300, 300, 300), 90),
    A.BILE: ((10, 10, 12, 12), 7),
    A.PANCREAS: ((42, 115, 95, 78), 10),
    A.CORTEX: ((750, 750, 750, 750), 120),
    A.MARROW: ((180, 185, 190, 190), 40),
    A.CARTILAGE: ((110, 110, 115, 115), 35),
    A.MYOCARD: ((45, 130, 110, 95), 12),
    A.BLOOD: ((42, 280, 165, 125), 45),
    A.LES_HYPO: ((35, 45, 55, 55), 12),
    A.LES_HYPER: ((50, 150, 125, 100), 20),
    A.LES_CYST: ((8, 8, 10, 10), 6),
    A.TABLE: ((150, 150, 150, 150), 80),
    A.CSF: ((15, 15, 15, 15), 5),
    A.FECES: ((0, 0, 0, 0), 25),
    A.FOOD: ((35, 38, 42, 42), 15),
    A.DISC: ((85, 88, 90, 90), 10),
    A.SKIN: ((45, 50, 55, 55), 8),
    A.PAD: ((-100, -100, -100, -100), 20),
}
# tissue -> amplitude (HU) of its smooth texture
_TEXTURE = {
    A.LIVER: 11,
    A.SPLEEN: 9,
    A.KCORTEX: 8,
    A.PANCREAS: 10,
    A.MUSCLE: 5,
    A.FAT: 6,
    A.VFAT: 10,
    A.FECES: 45,
    A.FOOD: 30,
    A.LUNG: 40,
    A.MARROW: 35,
    A.GIWALL: 8,
    A.LES_HYPO: 8,
    A.LES_HYPER: 15,
    A.MYOCARD: 6,
    A.FLUID: 4,
    A.ORAL: 40,
}


@dataclass
class Acquisition:
    """How one case is scanned (all drawn from one rng; see :func:`sample_acquisition`)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    angle: float
    pivot: tuple[float, float]
    phase: str
    hu_lut: np.ndarray
    tex_lut: np.ndarray
    blur_mm: float
    thickness: float
    noise_sd: float
    nps_fc: float
    nps_alpha: float
    calib: float
    streaks: list = field(default_factory=list)
    #: fractions (x, y) of the in-plane grid a cropped reconstruction keeps, centred; None: square
    crop: tuple[float, float] | None = None


def _hu_lut(rng: np.random.Generator, phase: str, anat: A.Anatomy) -> np.ndarray:
    k = PHASES.index(phase)
    # contrast timing is continuous: half the scans sit between their phase and the next one
    # (late arterial, early portal venous, ...)
    k2 = {0: 0, 1: 2, 2: 3, 3: 2}[k]
    w = rng.uniform(0.0, 0.5) if (k2 != k and rng.random() < 0.5) else 0.0
    lut = np.zeros(A.N_TISSUES, dtype=f32)
    for code, (means, sd) in _HU.items():
        lut[code] = (1 - w) * means[k] + w * means[k2] + (rng.normal(0, sd) if sd else 0.0)
    # correlations that real scans have
    if phase == "native" and rng.random() < 0.15:  # fatty liver: darker than the spleen
        lut[A.LIVER] = rng.uniform(5, 40)
    lut[A.MARROW] = 110 + 150 * (1 - anat.marrow_age) + rng.normal(0, 20)
    lut[A.PORTAL_IH] = 0.5 * lut[A.PORTAL_IH] + 0.5 * lut[A.PORTAL]
    liver = lut[A.LIVER]
    lut[A.LES_HYPO] = liver - rng.uniform(20, 70)
    if phase == "native":
        lut[A.LES_HYPER] = liver - rng.uniform(0, 20)
    else:
        lut[A.LES_HYPER] = liver + rng.uniform(20, 80)
    lut[A.HEPVEIN] = lut[A.HEPVEIN] if phase in ("portal", "delayed") else min(lut[A.HEPVEIN], liver - 5)
    return lut


def sample_acquisition(
    rng: np.random.Generator,
    anat: A.Anatomy,
    shape: Sequence[int],
    spacing: Sequence[float] | None,
    organ: str | None = None,
) -> Acquisition:
    """Field of view, slice positions, contrast phase and image quality of one scan.

    ``spacing=None``: a realistic scan reformatted onto ``shape``: the in-plane field of view is
    300-500 mm (covering the body, sometimes cropping it), slice spacing 0.7-5 mm, covering the
    upper abdomen from above the diaphragm (or a slab through the liver and spleen). With an
    explicit ``spacing`` the grid is centred on the upper abdomen. ``organ`` ("liver", "spleen"):
    a slab is centred where that organ is, so the case shows it (every case of LiTS and MSD does);
    None: anywhere from the lung bases to below the liver (a slab may miss either organ).
    """
    nx, ny, nz = (int(s) for s in shape)
    y_post, y_ant = anat.body_y()
    sp, top = _grid_spacing(rng, anat, (nx, ny, nz), spacing, organ)
    cx = rng.normal(0, 8)
    cy = (y_post + y_ant) / 2 + rng.normal(-5, 12)
    origin = (cx - (nx - 1) / 2 * sp[0], cy - (ny - 1) / 2 * sp[1], top - (nz - 1) * sp[2])
    phase = str(rng.choice(PHASES, p=PHASE_P))
    hu_lut = _hu_lut(rng, phase, anat)
    tex = _texture_lut(rng, phase)
    thickness = sp[2] * (rng.uniform(1.0, 1.5) if sp[2] < 3 else 1.0)
    sd_ref = rng.uniform(5, 16) * (1 + 0.9 * anat.habitus)  # at 5 mm slices
    noise_sd = sd_ref * np.sqrt(5.0 / max(thickness, 0.5))
    streaks = _streak_sources(rng, anat)
    acq = Acquisition(
        spacing=sp,
        origin=origin,
        angle=float(rng.normal(0, 0.04)),
        pivot=(0.0, (y_post + y_ant) / 2),
        phase=phase,
        hu_lut=hu_lut,
        tex_lut=tex,
        blur_mm=float(rng.uniform(0.35, 0.8)),
        thickness=float(thickness),
        noise_sd=float(noise_sd),
        nps_fc=float(rng.uniform(0.25, 0.6)),
        nps_alpha=float(rng.uniform(0.6, 1.4)),
        calib=float(rng.normal(0, 4)),
        streaks=streaks,
    )
    _draw_late(rng, acq)
    return acq


def _grid_spacing(
    rng: np.random.Generator,
    anat: A.Anatomy,
    shape: tuple[int, int, int],
    spacing: Sequence[float] | None,
    organ: str | None,
) -> tuple[tuple[float, float, float], float]:
    """Voxel spacing and the z (mm) of the top slice: drawn as a real protocol would (``spacing=None``),
    else ``spacing`` centred on the upper abdomen (see :func:`sample_acquisition`)."""
    nx, ny, nz = shape
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
        return sp, -95.0 + rng.normal(0, 10) + nz * sp[2] / 2  # type: ignore[return-value]
    organ_z = anat.organ_z_range(organ) if organ else None
    body_w = anat.body_width() + (2 * (anat.arm_gap + 2 * anat.arm_r) if anat.arms_down else 0)
    if rng.random() < 0.8:
        fov = float(np.clip(max(body_w * rng.uniform(0.9, 1.0), anat.body_width()) + rng.uniform(10, 90), 300, 500))
    else:
        fov = float(np.clip(anat.body_width() * rng.uniform(0.75, 0.97), 250, 500))
    dxy = fov / max(nx, ny)
    if rng.random() < 0.55:  # the whole upper abdomen
        dz = float(np.clip(rng.uniform(240, 360) / nz, 0.7, 5.0))
        top = rng.uniform(10, 110)
    else:  # a slab through the liver / spleen at any thickness
        dz = float(np.exp(rng.uniform(np.log(0.7), np.log(5.0))))
        lo, hi = organ_z or (-190.0, 10.0)
        top = rng.uniform(lo, hi) + nz * dz / 2
    if organ_z:  # the scan covers the organ's middle (few slices at 5 mm miss the upper abdomen)
        mid = sum(organ_z) / 2
        top = float(np.clip(top, mid, mid + (nz - 1) * dz))
    return (dxy, dxy, dz), top


def _texture_lut(rng: np.random.Generator, phase: str) -> np.ndarray:
    """Amplitude (HU) of each tissue's smooth texture in this scan (:data:`_TEXTURE`, varied)."""
    tex = np.zeros(A.N_TISSUES, dtype=f32)
    for code, amp in _TEXTURE.items():
        tex[code] = amp * rng.uniform(0.5, 1.5)
    if phase == "arterial":  # heterogeneous (arciform) early enhancement of the spleen
        tex[A.SPLEEN] *= 3.0
    return tex


def _streak_sources(rng: np.random.Generator, anat: A.Anatomy) -> list[dict]:
    """Streak artefacts from dense objects (a quarter of the scans): 1-2 sources, metal or not."""
    streaks = []
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 3))):
            streaks.append(
                dict(
                    x=rng.uniform(-0.6, 0.6) * anat.ac,
                    y=rng.uniform(-0.7, 0.7) * anat.bc,
                    z=rng.uniform(-200, 0),
                    extent=rng.uniform(5, 30),
                    amp=rng.uniform(40, 250),
                    n=int(rng.integers(4, 12)),
                    phi=rng.uniform(0, np.pi),
                    metal=rng.random() < 0.5,
                )
            )
    return streaks


def _draw_late(rng: np.random.Generator, acq: Acquisition) -> None:
    """Variations added after the first phantom versions: drawn last, so the draws before them (and
    the cases of those seeds) stay as they were."""
    # a soft reconstruction kernel (or a scan reconstructed on coarse 2-5 mm pixels from a smooth
    # kernel): edges blurred over 1-2.5 mm rather than the sharp kernel's 0.35-0.8 mm
    if rng.random() < 0.3:
        acq.blur_mm = float(rng.uniform(1.0, 2.5))
    # bile that is not water: sludge, or contrast excreted into the gallbladder (20-60 HU)
    if rng.random() < 0.15:
        acq.hu_lut[A.BILE] += f32(rng.uniform(15, 45))
    # a field of view cropped to the patient, wider than deep as the body is (applied only when
    # asked for: generate_case(crop_fov=True)); a third of such scans
    if rng.random() < 0.35:
        acq.crop = (float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.6, 0.95)))


# ---- rendering ------------------------------------------------------------------------------


def _upsample_noise(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], lam: float) -> np.ndarray:
    """Smooth noise (std ~1) with correlation length ~``lam`` mm: coarse normals, linear
    interpolation as three small matrix products (fast even for 512 x 512 x 200)."""
    mats = []
    coarse_shape = []
    for n, s in zip(shape, spacing):
        ext = n * s
        m = max(2, int(np.ceil(ext / lam)) + 2)
        pos = (np.arange(n) * s) / lam + 0.5
        i0 = np.clip(np.floor(pos).astype(int), 0, m - 2)
        t = (pos - i0).astype(f32)
        M = np.zeros((n, m), dtype=f32)
        M[np.arange(n), i0] = 1 - t
        M[np.arange(n), i0 + 1] = t
        mats.append(M)
        coarse_shape.append(m)
    c = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(f32), 0.7) * f32(2.2)
    c = np.tensordot(c, mats[2], axes=([2], [1]))  # (a, b, k)
    c = np.tensordot(mats[1], c, axes=([1], [1]))  # (j, a, k)
    out = np.tensordot(mats[0], c, axes=([1], [1]))  # (i, j, k)
    return out.astype(f32)


def render(tissue: np.ndarray, grid, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Tissue codes -> HU (float32): per-phase values, texture, scanner blur, noise, streaks."""
    sp = grid.spacing
    lut = acq.hu_lut + f32(acq.calib)
    lut[A.AIR] = acq.hu_lut[A.AIR]
    hu = lut[tissue]
    tex = _upsample_noise(rng, tissue.shape, sp, 14.0)
    tex *= acq.tex_lut[tissue]
    hu += tex
    del tex
    # scanner blur (in-plane PSF) and slice profile; at least ~0.4 voxel so edges are partial-volume
    sig_xy = [float(np.hypot(acq.blur_mm / s, 0.4)) for s in sp[:2]]
    sig_z = float(np.hypot(0.42 * acq.thickness / sp[2] * 0.8, 0.3))
    hu = ndimage.gaussian_filter(hu, sigma=(sig_xy[0], sig_xy[1], sig_z), truncate=2.5)
    # streaks from dense objects
    for st in acq.streaks:
        _streaks(hu, grid, st, rng)
    # correlated noise: white noise filtered in-plane by sqrt(NPS), a little through-plane
    nx, ny, nz = tissue.shape
    white = rng.standard_normal((nx, ny, nz), dtype=f32)
    fx = sfft.fftfreq(nx, d=sp[0])[:, None]
    fy = sfft.rfftfreq(ny, d=sp[1])[None, :]
    f = np.sqrt(fx**2 + fy**2)
    nps = (f**acq.nps_alpha) * np.exp(-((f / acq.nps_fc) ** 2))
    share = _spectrum_share(acq.nps_fc, acq.nps_alpha, sp)
    # variance of the output = mean over the full spectrum of nps (rfft half counted twice)
    w = np.full(nps.shape, 2.0)
    w[:, 0] = 1.0
    if ny % 2 == 0:
        w[:, -1] = 1.0
    mean_nps = float((nps * w).sum() / (nx * ny))
    gain = np.sqrt(nps / max(mean_nps, 1e-12) * share).astype(f32)
    noise = sfft.irfft2(
        sfft.rfft2(white, axes=(0, 1), workers=2) * gain[:, :, None], s=(nx, ny), axes=(0, 1), workers=2
    ).astype(f32)
    if acq.thickness > sp[2] * 1.05 and nz > 1:
        before = float(noise[:, :, : min(nz, 8)].std()) + 1e-6
        noise = ndimage.gaussian_filter1d(noise, 0.35 * acq.thickness / sp[2], axis=2, truncate=2.0)
        noise *= f32(before / (float(noise[:, :, : min(nz, 8)].std()) + 1e-6))
    # noisier laterally (longer paths through the patient)
    lat = (1 + 0.25 * (grid.X[:, :, 0] / 200.0) ** 2) * acq.noise_sd
    noise *= lat[:, :, None].astype(f32)
    hu += noise
    return hu


def _spectrum_share(fc: float, alpha: float, sp: Sequence[float]) -> float:
    """Share of the noise power a grid with in-plane spacing ``sp`` can represent."""
    ff = np.fft.fftfreq(400, d=0.2)
    fr = np.sqrt(ff[:, None] ** 2 + ff[None, :] ** 2)
    nps = (fr**alpha) * np.exp(-((fr / fc) ** 2))
    inside = (np.abs(ff[:, None]) <= 0.5 / sp[0]) & (np.abs(ff[None, :]) <= 0.5 / sp[1])
    tot = nps.sum()
    return float(nps[inside].sum() / tot) if tot > 0 else 1.0


def _streaks(hu: np.ndarray, grid, st: dict, rng: np.random.Generator) -> None:
    zs = grid.zs
    ks = np.flatnonzero(np.abs(zs - st["z"]) < st["extent"])
    if ks.size == 0:
        return
    X, Y = grid.X[:, :, 0], grid.Y[:, :, 0]
    dx, dy = X - f32(st["x"]), Y - f32(st["y"])
    r = np.sqrt(dx * dx + dy * dy)
    pattern = np.zeros(X.shape, dtype=f32)
    for i in range(st["n"]):
        phi = st["phi"] + np.pi * i / st["n"] + rng.normal(0, 0.05)
        d_perp = np.abs(-np.sin(phi) * dx + np.cos(phi) * dy)
        sign = 1 if i % 2 == 0 else -1
        pattern += f32(sign) * np.exp(-((d_perp / f32(1.5)) ** 2)) * np.exp(-r / f32(120))
    pattern *= f32(st["amp"])
    w = np.exp(-(((zs[ks] - st["z"]) / max(st["extent"], 1e-3)) ** 2)).astype(f32)
    hu[:, :, ks] += pattern[:, :, None] * w[None, None, :]
    if st["metal"]:
        hu[:, :, ks] = np.where((r < 2.5)[:, :, None], f32(2500), hu[:, :, ks])
