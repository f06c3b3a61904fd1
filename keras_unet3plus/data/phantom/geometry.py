"""Sampling grid and shape primitives in millimetres (patient RAS coordinates).

Everything the anatomy draws is an implicit shape evaluated only inside its bounding box: the
grid hands out the sub-block of voxel centres (in patient mm) that covers a box, shapes return
boolean masks on that block, and :meth:`Grid.paint` writes a tissue code there. A 512 x 512 x 100
case therefore costs little more than a 128 x 128 x 48 one for every small organ.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

f32 = np.float32


@dataclass
class Block:
    """Voxel centres (patient mm) of a sub-box of the grid: X, Y (bi, bj, 1), Z (1, 1, bk)."""

    sl: tuple[slice, slice, slice]
    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray

    @property
    def empty(self) -> bool:
        return any(s.stop <= s.start for s in self.sl)


class Grid:
    """Voxel centres of one case in patient coordinates.

    ``origin`` is the scanner position (mm) of voxel (0, 0, 0), ``spacing`` the voxel size; the
    patient may be rotated in-plane by ``angle`` (radians) about the point ``pivot`` (x, y) and is
    otherwise aligned with the scanner axes (supine, head first).
    """

    def __init__(
        self,
        shape: Sequence[int],
        spacing: Sequence[float],
        origin: Sequence[float],
        angle: float = 0.0,
        pivot: Sequence[float] = (0.0, 0.0),
    ):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        nx, ny, nz = self.shape
        xs = (self.origin[0] + np.arange(nx) * self.spacing[0]).astype(f32)
        ys = (self.origin[1] + np.arange(ny) * self.spacing[1]).astype(f32)
        self.zs = (self.origin[2] + np.arange(nz) * self.spacing[2]).astype(f32)
        c, s = np.cos(angle), np.sin(angle)
        px, py = float(pivot[0]), float(pivot[1])
        dx, dy = xs[:, None] - px, ys[None, :] - py
        # patient coordinates of each in-plane voxel centre (inverse rotation)
        self.X = (c * dx + s * dy + px).astype(f32)[:, :, None]
        self.Y = (-s * dx + c * dy + py).astype(f32)[:, :, None]
        self.Z = self.zs[None, None, :]
        self._angle = float(angle)
        self._pivot = (px, py)
        self._cos, self._sin = c, s
        self.tissue = np.zeros(self.shape, dtype=np.uint8)

    # ---- index boxes ------------------------------------------------------------------------
    def _to_index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient (x, y) -> fractional voxel indices (forward rotation)."""
        px, py = self._pivot
        dx, dy = x - px, y - py
        sx = self._cos * dx - self._sin * dy + px
        sy = self._sin * dx + self._cos * dy + py
        return (sx - self.origin[0]) / self.spacing[0], (sy - self.origin[1]) / self.spacing[1]

    def block(self, lo: Sequence[float], hi: Sequence[float]) -> Block:
        """The sub-block of voxels whose centres may lie in the patient-mm box [lo, hi]."""
        cx = np.array([lo[0], hi[0], lo[0], hi[0]])
        cy = np.array([lo[1], lo[1], hi[1], hi[1]])
        ix, iy = self._to_index(cx, cy)
        nx, ny, nz = self.shape
        i0, i1 = max(0, int(np.floor(ix.min()))), min(nx, int(np.ceil(ix.max())) + 1)
        j0, j1 = max(0, int(np.floor(iy.min()))), min(ny, int(np.ceil(iy.max())) + 1)
        k0 = max(0, int(np.floor((lo[2] - self.origin[2]) / self.spacing[2])))
        k1 = min(nz, int(np.ceil((hi[2] - self.origin[2]) / self.spacing[2])) + 1)
        i1, j1, k1 = max(i0, i1), max(j0, j1), max(k0, k1)
        sl = (slice(i0, i1), slice(j0, j1), slice(k0, k1))
        return Block(sl, self.X[i0:i1, j0:j1], self.Y[i0:i1, j0:j1], self.Z[:, :, k0:k1])

    def full(self) -> Block:
        return Block((slice(None),) * 3, self.X, self.Y, self.Z)

    def paint(self, b: Block, mask: np.ndarray, code: int) -> None:
        """Write tissue ``code`` where ``mask`` (block-shaped, broadcastable) is true."""
        if b.empty:
            return
        view = self.tissue[b.sl]
        mask = np.broadcast_to(mask, view.shape)
        view[mask] = code


# ---- smooth random fields ---------------------------------------------------------------------


class SmoothField:
    """A smooth random field in patient mm (std about 1), length scale ``lam`` mm, over a box.

    The coefficients depend only on the box in mm and the rng, never on the sampling grid, so an
    organ has the same shape whatever the voxel size.
    """

    def __init__(self, rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], lam: float):
        self.lam = float(lam)
        self.centres = []
        for a, b in zip(lo, hi):
            n = max(2, int(np.ceil((b - a) / lam)) + 3)
            mid = (a + b) / 2
            self.centres.append((mid + (np.arange(n) - (n - 1) / 2) * lam).astype(f32))
        self.coef = rng.standard_normal([len(c) for c in self.centres]).astype(f32)

    def _basis(self, v: np.ndarray, axis: int) -> np.ndarray:
        c = self.centres[axis].reshape((-1,) + (1,) * v.ndim)
        b = np.exp(-(((v[None] - c) / f32(self.lam)) ** 2))
        return b / (b.sum(axis=0, keepdims=True) + f32(1e-6))

    def __call__(self, b: Block) -> np.ndarray:
        X, Y = b.X[:, :, 0], b.Y[:, :, 0]
        z = b.Z[0, 0, :]
        bx = self._basis(X, 0)  # (na, bi, bj)
        by = self._basis(Y, 1)  # (nb, bi, bj)
        bz = self._basis(z, 2)  # (nc, bk)
        t = np.einsum("abc,aij->bcij", self.coef, bx, optimize=True)
        t = np.einsum("bcij,bij->cij", t, by, optimize=True)
        return (np.einsum("cij,ck->ijk", t, bz, optimize=True) * f32(2.3)).astype(f32)


# ---- primitives ------------------------------------------------------------------------------


def ellipsoid_r(b: Block, c: Sequence[float], a: Sequence[float], theta: float = 0.0, tilt: float = 0.0) -> np.ndarray:
    """Normalised radius of an ellipsoid (in-plane rotation ``theta``, then a tilt of its first
    axis towards z by ``tilt``), < 1 inside."""
    dx, dy, dz = b.X - f32(c[0]), b.Y - f32(c[1]), b.Z - f32(c[2])
    if theta:
        ct, st = f32(np.cos(theta)), f32(np.sin(theta))
        dx, dy = ct * dx + st * dy, -st * dx + ct * dy
    if tilt:
        ct, st = f32(np.cos(tilt)), f32(np.sin(tilt))
        dx, dz = ct * dx + st * dz, -st * dx + ct * dz
    return np.sqrt((dx / f32(a[0])) ** 2 + (dy / f32(a[1])) ** 2 + (dz / f32(a[2])) ** 2)


def ellipsoid_box(c: Sequence[float], a: Sequence[float], pad: float = 0.0) -> tuple[list, list]:
    r = max(a) + pad
    return [c[0] - r, c[1] - r, c[2] - r], [c[0] + r, c[1] + r, c[2] + r]


class Tube:
    """A chain of capsules through ``points`` (n, 3) mm with radii (n,) mm (linearly varying)."""

    def __init__(self, points: np.ndarray, radii: np.ndarray | float):
        self.p = np.asarray(points, dtype=np.float64)
        r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(self.p),))
        self.r = np.array(r)

    def box(self, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        rmax = self.r.max() + pad
        return self.p.min(0) - rmax, self.p.max(0) + rmax

    def field(self, grid: Grid, pad: float = 0.0, scale: float = 1.0) -> tuple[Block, np.ndarray]:
        """(block over the whole tube, signed distance to the surface (mm); radii * ``scale``)."""
        lo, hi = self.box(pad)
        blk = grid.block(lo, hi)
        out = np.full(np.broadcast_shapes(blk.X.shape, blk.Z.shape), np.inf, dtype=f32)
        if blk.empty:
            return blk, out
        for k in range(len(self.p) - 1):
            a, bpt = self.p[k], self.p[k + 1]
            ra, rb = self.r[k] * scale, self.r[k + 1] * scale
            rr = max(ra, rb) + pad
            s = grid.block(np.minimum(a, bpt) - rr, np.maximum(a, bpt) + rr)
            if s.empty:
                continue
            d = bpt - a
            L2 = float(d @ d) or 1e-6
            px, py, pz = s.X - f32(a[0]), s.Y - f32(a[1]), s.Z - f32(a[2])
            t = np.clip((px * f32(d[0]) + py * f32(d[1]) + pz * f32(d[2])) / f32(L2), 0, 1)
            dist = np.sqrt((px - t * f32(d[0])) ** 2 + (py - t * f32(d[1])) ** 2 + (pz - t * f32(d[2])) ** 2)
            sd = dist - (f32(ra) + t * f32(rb - ra))
            # place the segment's block inside the tube's block
            o = tuple(slice(s.sl[i].start - blk.sl[i].start, s.sl[i].stop - blk.sl[i].start) for i in range(3))
            np.minimum(out[o], sd, out=out[o])
        return blk, out


def smooth_path(points: Sequence[Sequence[float]], n_per: int = 4) -> np.ndarray:
    """Catmull-Rom interpolation through control points: a smooth centre line (m, 3)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        for t in np.linspace(0, 1, n_per, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
            )
    out.append(p[-1])
    return np.asarray(out)


def interp_radii(control: Sequence[float], m: int) -> np.ndarray:
    c = np.asarray(control, dtype=np.float64)
    return np.interp(np.linspace(0, 1, m), np.linspace(0, 1, len(c)), c)
