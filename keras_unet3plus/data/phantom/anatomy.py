"""The patient: abdominal anatomy in millimetres, in patient RAS coordinates.

Origin: x = 0 on the midline (positive towards the patient's right), y = 0 at the centre of the
abdominal cavity (positive anterior), z = 0 at the top of the right hemidiaphragm dome (positive
superior). Sizes are textbook adult values with per-case variation (Standring, *Gray's Anatomy*;
typical CT dimensions: liver 14-19 cm craniocaudal in the mid-clavicular line, spleen ~11 x 7 x 4
cm, kidneys ~11 x 6 x 4 cm, aorta 2-2.5 cm, vertebral body ~4.5 x 3.5 cm in the lumbar spine).

Where the liver meets its neighbours varies as it does in patients: perirenal fat grows with habitus
(thin patients show no fat plane between the right kidney and the liver), the right lobe's inferior
tip reaches down lateral to the kidney, and the gallbladder is usual, distended or contracted
(a thick enhancing wall around a small lumen).

Vertical levels (typical, varied per case): right dome at T9/T10 (z = 0), left dome 0-25 mm lower;
liver hilum ~ -85 mm; pancreas and the renal hila ~ -120 to -150 mm; right kidney 10-20 mm lower
than the left; right liver lobe tip -140 to -200 mm; heart above the central tendon.

:class:`Anatomy` draws all its random numbers when it is made (from an rng), so the same seed gives
the same patient on any sampling grid; :meth:`Anatomy.draw` paints tissue codes into a
:class:`~.geometry.Grid`.
"""

from __future__ import annotations

import numpy as np

from .geometry import Block, Grid, SmoothField, Tube, ellipsoid_box, ellipsoid_r, interp_radii, smooth_path

f32 = np.float32

# ---- tissue codes (index into the HU tables of acquisition.py) --------------------------------
(
    AIR,
    FAT,
    VFAT,
    MUSCLE,
    LUNG,
    LIVER,
    SPLEEN,
    KCORTEX,
    KMEDULLA,
    ARTERY,
    VEIN,
    PORTAL,
    HEPVEIN,
    GIWALL,
    FLUID,
    GAS,
    ORAL,
    BILE,
    PANCREAS,
    CORTEX,
    MARROW,
    CARTILAGE,
    MYOCARD,
    BLOOD,
    LES_HYPO,
    LES_HYPER,
    TABLE,
    CSF,
    FECES,
    DISC,
    SKIN,
    PAD,
    PORTAL_IH,
    LES_CYST,
    SINUSFAT,
    FOOD,
) = range(36)
N_TISSUES = 36
LIVER_CODES = (LIVER, HEPVEIN, PORTAL_IH, LES_HYPO, LES_HYPER, LES_CYST)
LESION_CODES = (LES_HYPO, LES_HYPER, LES_CYST)
TABLE_DEPTH = 45.0  # mm between the top and bottom shells of the patient table


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _n(rng, m, s, lo=-np.inf, hi=np.inf):
    return float(np.clip(rng.normal(m, s), lo, hi))


def _organ_block(g: Grid, c, a, pad: float, theta: float = 0.0) -> tuple[Block, np.ndarray] | None:
    """The grid block around an ellipsoidal organ (centre ``c``, semi-axes ``a``, ``pad`` mm of
    margin) and the organ's normalised radius there (< 1 inside), or None when the block misses the
    grid: the start every ellipsoid-based organ painter shares."""
    b = g.block(*ellipsoid_box(c, a, pad))
    if b.empty:
        return None
    return b, ellipsoid_r(b, c, a, theta)


def _superellipse(X2: np.ndarray, Y2: np.ndarray, ax, ay_ant, ay_post, p, yc: float = 0.0) -> np.ndarray:
    """Normalised radius of an in-plane superellipse (semi-axis ``ay_ant`` in front of ``yc``,
    ``ay_post`` behind): < 1 inside, 1-homogeneous, so scaling it by a taper is a division."""
    dy = Y2 - f32(yc)
    ay = np.where(dy >= 0, f32(ay_ant), f32(ay_post))
    return ((np.abs(X2) / f32(ax)) ** p + (np.abs(dy) / ay) ** p) ** (1 / p)


class Anatomy:
    """One random patient (all random draws happen here; see the module docstring)."""

    def __init__(self, rng: np.random.Generator, lesions: bool = True):
        """Draw the patient. Long on purpose: it is the phantom's table of anatomy, one section per
        structure, and its draws must stay in this order (a seed gives the same patient for a given
        ``PHANTOM_VERSION``; new structures are drawn at the end). The painters below use it."""
        r = rng
        # ---- habitus: thin (0) .. obese (1) ----
        h = float(r.beta(1.6, 2.2))
        self.habitus = h
        self.ac = _n(r, 138, 10, 112, 165) + 22 * h  # cavity half-width (mm)
        self.bc = _n(r, 88, 8, 70, 108) + 22 * h  # cavity half-depth
        self.tw = _u(r, 7, 14)  # abdominal wall muscle
        self.fat_lat = 4 + 55 * h**1.4 + _u(r, 0, 8)
        self.fat_ant = 4 + 60 * h**1.3 + _u(r, 0, 8)
        self.fat_post = 5 + 30 * h**1.4 + _u(r, 0, 6)
        self.back = _u(r, 40, 52)  # paraspinal depth behind the cavity
        self.p_cav = _u(r, 2.2, 2.7)
        self.p_body = _u(r, 2.1, 2.8)
        self.body_taper = _u(r, -0.05, 0.08)  # relative width change per 100 mm up
        # ---- diaphragm ----
        self.zR = 0.0
        self.zL = -_u(r, 3, 25)
        self.dome_post = _u(r, 45, 80)  # how far the dome drops posteriorly
        self.dome_ant = _u(r, 35, 60)
        self.dome_lat = _u(r, 50, 80)
        self.dia_t = _u(r, 3, 5)
        self.ring_f = _u(r, 0.6, 1.1)  # costal diaphragm thickness / dia_t
        self.liver_gap = _u(r, 0.0, 0.02)  # fat between the liver and the wall
        # ---- spine ----
        self.v_pitch = _u(r, 29, 35)
        self.v_phase = _u(r, 0, 1)
        self.v_w, self.v_d = _u(r, 19, 25), _u(r, 14, 18)
        self.yvb = -self.bc + _u(r, 8, 16)  # vertebral body centre (y)
        self.marrow_age = r.random()
        # ---- liver ----
        s = _n(r, 1.0, 0.08, 0.8, 1.2)
        self.liver_s = s
        ac, bc = self.ac, self.bc
        self.liver_lobes = [
            # right lobe
            (
                (0.50 * ac + _n(r, 0, 6), -0.05 * bc + _n(r, 0, 6), -72 * s + _n(r, 0, 8)),
                (82 * s, 92 * s, (74 + _u(r, -10, 12)) * s),
                _u(r, -0.15, 0.15),
            ),
            # medial segment (IV) bridging to the left lobe
            ((0.08 * ac + _n(r, 0, 6), 0.42 * bc + _n(r, 0, 5), -58 * s + _n(r, 0, 6)), (46 * s, 40 * s, 48 * s), 0.0),
            # caudate lobe (between the IVC and the portal hilum)
            ((10 + _n(r, 0, 4), self.yvb + 48 + _n(r, 0, 4), -78 + _n(r, 0, 6)), (22 * s, 20 * s, 34 * s), 0.0),
        ]
        left_len = _u(r, 0.55, 1.35)  # left lobe size varies most between people
        self.left_lobe = (
            (-0.28 * ac * left_len + _n(r, 0, 6), 0.52 * bc + _n(r, 0, 5), self.zL - 32 + _n(r, 0, 6)),
            (66 * s * left_len, 28 * s, 32 * s),
        )
        if r.random() < 0.25:  # Riedel lobe
            self.liver_lobes.append(((0.62 * ac, 0.0, -150 * s), (35 * s, 45 * s, 55 * s), 0.0))
        box_lo, box_hi = (-ac - 20, -bc - 20, -260), (ac + 20, bc + 20, 30)
        self.liver_noise = SmoothField(r, box_lo, box_hi, 45)
        self.liver_noise2 = SmoothField(r, box_lo, box_hi, 22)
        self.liver_amp = (_u(r, 0.08, 0.16), _u(r, 0.03, 0.07))
        # fissure of the ligamentum teres / falciform ligament: a fat cleft between the left
        # lateral and the medial segment, from the anterior surface towards the hilum
        self.fissure = (-0.08 * ac + _n(r, 0, 8), _u(r, -0.4, 0.4), _u(r, 2.0, 5.0), _u(r, 0.15, 0.4) * bc)
        # ---- IVC, aorta ----
        self.ax_x = -_u(r, 8, 18)
        self.ao_r = _u(r, 9.5, 13.5)
        self.ivc_x = _u(r, 18, 30)
        self.ivc_r = _u(r, 9, 13)
        # ---- spleen ----
        sp = float(np.exp(r.normal(0.0, 0.14)))
        if r.random() < 0.2:  # splenomegaly is common in clinical CT
            sp *= _u(r, 1.2, 1.6)
        sp = float(np.clip(sp, 0.7, 1.7))
        self.spleen_s = sp
        self.spleen_hilum = _u(r, 0.5, 1.0)  # depth of the hilar concavity
        thick = _u(r, 22, 34)
        # the posterior pole lies against the posterior diaphragm, 3.5-6 cm from the midline next
        # to the left kidney / adrenal; the long axis runs antero-laterally along the 10th rib
        self.spleen_theta = _u(r, 0.45, 0.95)
        half_len = _u(r, 48, 60) * sp
        px, py = -_u(r, 35, 60), -bc + _u(r, 4, 20)
        th = self.spleen_theta
        self.spleen_c = (
            px - 0.8 * half_len * np.sin(th),
            py + 0.8 * half_len * np.cos(th),
            self.zL - 58 * min(sp, 1.3) + _n(r, 0, 10),
        )
        self.spleen_a = (thick * sp, half_len, 58 * sp)
        self.spleen_noise = SmoothField(r, (-ac - 20, -bc - 20, -220), (0, bc, 20), 30)
        self.spleen_lobulated = r.random() < 0.3
        # ---- stomach ----
        dist = _u(r, 0.55, 1.3)
        self.stomach_dist = dist
        zL = self.zL
        ctrl = [
            (-0.36 * ac, -0.12 * bc, zL - 38),
            (-0.38 * ac, 0.18 * bc, zL - 70),
            (-0.22 * ac, 0.45 * bc, zL - 100),
            (0.02 * ac, 0.55 * bc, zL - 118),
            (0.22 * ac, 0.38 * bc, zL - 112),
        ]
        ctrl = [(x + _n(r, 0, 8), y + _n(r, 0, 8), z + _n(r, 0, 10)) for x, y, z in ctrl]
        self.stomach_path = smooth_path(ctrl, 4)
        self.stomach_r = interp_radii([44 * dist, 38 * dist, 30 * dist, 22 * dist, 11], len(self.stomach_path))
        self.stomach_fill = r.choice(
            ["gas_fluid", "fluid", "oral", "collapsed", "food"], p=[0.28, 0.15, 0.12, 0.2, 0.25]
        )
        self.stomach_level = _u(r, -0.3, 0.4)  # gas-fluid level (fraction of bc)
        self.gi_wall = _u(r, 2.5, 4.5)
        self.gastric_fat = _u(r, -2.0, 7.0)  # fat plane stomach / liver (<= 0: none)
        self.ant_gap = _u(r, 0.0, 0.06)  # preperitoneal fat in front of the liver
        self.porta_fat = _u(r, 3.0, 9.0)  # fat of the hepatoduodenal ligament
        # ---- gallbladder ----
        self.gall = r.random() < 0.75
        self.gall_path = np.array(
            [
                (0.22 * ac, 0.22 * bc, -100),
                (0.30 * ac, 0.45 * bc, -122),
                (0.33 * ac + _n(r, 0, 8), 0.62 * bc, -140 + _n(r, 0, 10)),
            ]
        )
        self.gall_r = np.array([7, 14, 17]) * _u(r, 0.6, 1.2)
        # ---- kidneys ----
        self.kid = []
        for side, dz in ((1, -_u(r, 5, 25)), (-1, 0.0)):
            c = (side * (0.50 * ac + _n(r, 0, 6)), -bc + 34 + _n(r, 0, 4), -135 + dz + _n(r, 0, 10))
            a = (_n(r, 26, 2.5, 20, 32), _n(r, 22, 2, 17, 27), _n(r, 50, 4, 42, 60))
            self.kid.append((side, c, a, side * _u(r, 0.35, 0.75), side * _u(r, 0.05, 0.25)))
        # ---- pancreas ----
        yv = self.yvb
        pctrl = [
            (0.25 * ac, yv + 52, -138),
            (0.05 * ac, yv + 62, -122),
            (-0.25 * ac, yv + 50, -112),
            (-0.52 * ac, yv + 28, -100),
        ]
        pctrl = [(x + _n(r, 0, 6), y + _n(r, 0, 5), z + _n(r, 0, 8)) for x, y, z in pctrl]
        self.panc_path = smooth_path(pctrl, 4)
        self.panc_r = interp_radii([17, 12, 11, 9], len(self.panc_path)) * _u(r, 0.75, 1.15)
        # ---- bowel ----
        self.colon_r = _u(r, 16, 26)
        cc = [
            (0.70 * ac, -0.05 * bc, -330),
            (0.72 * ac, -0.05 * bc, -230),
            (0.62 * ac, 0.1 * bc, -175),
            (0.35 * ac, 0.55 * bc, -185),
            (0.0, 0.65 * bc, -215 + _n(r, 0, 25)),
            (-0.4 * ac, 0.5 * bc, -170),
            (-0.72 * ac, 0.05 * bc, -120 + _n(r, 0, 15)),
            (-0.75 * ac, -0.15 * bc, -200),
            (-0.72 * ac, -0.1 * bc, -330),
        ]
        cc = [(x + _n(r, 0, 8), y + _n(r, 0, 8), z + _n(r, 0, 10)) for x, y, z in cc]
        self.colon_path = smooth_path(cc, 4)
        self.colon_noise = SmoothField(r, (-ac, -bc, -340), (ac, bc, -80), 9)
        self.duo_path = smooth_path(
            [
                (0.22 * ac, 0.38 * bc, -112),
                (0.36 * ac, yv + 55, -140),
                (0.30 * ac, yv + 50, -175),
                (0.0, yv + 45, -185),
                (-0.15 * ac, yv + 55, -165),
            ],
            3,
        )
        self.duo_r = _u(r, 9, 14)
        self.sb_loops = []
        for _ in range(int(r.integers(10, 20))):
            p = np.array([_u(r, -0.6, 0.6) * ac, _u(r, -0.2, 0.75) * bc, _u(r, -320, -160)])
            pts = [p]
            d = r.normal(size=3)
            for _ in range(int(r.integers(3, 7))):
                d = d + r.normal(size=3) * 0.9
                d /= np.linalg.norm(d) + 1e-9
                p = p + d * _u(r, 22, 40)
                p[0] = np.clip(p[0], -0.75 * ac, 0.75 * ac)
                p[1] = np.clip(p[1], -0.4 * bc, 0.85 * bc)
                p[2] = min(p[2], -140.0)
                pts.append(p)
            self.sb_loops.append((np.array(pts), _u(r, 8, 13), r.random()))
        self.oral = r.random() < 0.3  # positive oral contrast in the bowel
        self.sb_gas = _u(r, 0.0, 0.35)
        # ---- heart ----
        self.heart_c = (-0.18 * ac + _n(r, 0, 8), 0.25 * bc + _n(r, 0, 6), 45 + _n(r, 0, 8))
        self.heart_a = (_n(r, 75, 6), _n(r, 55, 5), _n(r, 55, 5))
        self.heart_theta = _u(r, 0.3, 0.7)
        # ---- ribs ----
        self.rib_pitch = _u(r, 30, 38)
        self.rib_phase = _u(r, 0, 1)
        self.rib_drop = _u(r, 260, 340)  # how much lower a rib is anteriorly
        self.rib_bottom = _u(r, -200, -160)  # tip of the 12th rib (lateral)
        self.rib_front = _u(r, -110, -70)  # costal margin at the front
        # ---- arms, table ----
        self.arms_down = r.random() < 0.45
        self.arm_gap = _u(r, 5, 60)
        self.arm_r = _u(r, 38, 52) + 20 * h
        self.table_gap = _u(r, 2, 20)
        self.table_curv = _u(r, 0.0008, 0.002)
        # ---- vessels in the liver: random secondary branches ----
        self.pv_branches = [(_u(r, 0.2, 0.95) * ac, _u(r, -0.8, 0.6) * bc, _u(r, -150, -30)) for _ in range(14)]
        self.hv_branches = [(_u(r, -0.4, 0.9) * ac, _u(r, -0.6, 0.7) * bc, _u(r, -110, -20)) for _ in range(8)]
        # ---- paravertebral gutters ----
        # the vertebral column with the psoas and paraspinal muscles bulges into the back of the
        # abdominal cavity; beside it the cavity reaches further back (the paravertebral gutters,
        # where the kidneys, the spleen's posterior pole and the liver's posterior segments lie)
        gut = min(_u(r, 14, 28), 0.75 * self.back - 10)
        self.gutter = gut
        self.spine_bulge = _u(r, 40, 52)  # half-width of the bulge at the gutters' floor
        self.gutter_dy = 0.8 * gut  # what lies in the gutters moves back with them
        self.kid = [(side, (c[0], c[1] - self.gutter_dy, c[2]), a, th, tilt) for side, c, a, th, tilt in self.kid]
        sx, sy, sz = self.spleen_c
        self.spleen_c = (sx, sy - self.gutter_dy, sz)
        (lx, ly, lz), la, lth = self.liver_lobes[0]
        self.liver_lobes[0] = ((lx, ly - 0.5 * gut, lz), (la[0], la[1] + 0.3 * gut, la[2]), lth)
        self.lesions = []
        if lesions:
            for _ in range(int(r.choice([0, 0, 1, 1, 2, 3, 4, 6]))):
                lobe = self.liver_lobes[0] if r.random() < 0.7 else self.liver_lobes[1]
                (cx, cy, cz), (ax_, ay_, az_), _ = lobe
                u = r.normal(size=3)
                u = u / np.linalg.norm(u) * _u(r, 0, 0.7)
                rad = float(np.exp(r.uniform(np.log(5), np.log(30))))
                kind = r.choice([LES_HYPO, LES_HYPER, LES_CYST], p=[0.6, 0.25, 0.15])
                self.lesions.append(
                    (
                        (cx + u[0] * ax_, cy + u[1] * ay_, cz + u[2] * az_),
                        rad,
                        int(kind),
                        SmoothField(r, (-40, -40, -40), (40, 40, 40), max(4.0, rad / 1.5)),
                    )
                )
        # ---- where the liver meets its neighbours (drawn last: the draws above stay as they were) ----
        # perirenal fat grows with habitus: in thin patients the right kidney's upper pole touches
        # the liver's inferior surface with no visible fat plane (the hepatorenal recess), so the
        # kidney must be told from the liver by its enhancement and shape, not by a fat ring
        self.perirenal = 1.03 + 0.3 * h * _u(r, 0.5, 1.2)
        # the gallbladder as clinical CT shows it: distended after fasting, contracted after a meal
        # (a small lumen in a thick wall that enhances almost like liver), or usual
        self.gall_kind = str(r.choice(["usual", "contracted", "distended"], p=[0.6, 0.2, 0.2]))
        self.gall_wall = _u(r, 3.0, 5.0) if self.gall_kind == "contracted" else _u(r, 1.2, 2.5)
        self.gall_r = (
            self.gall_r * {"usual": 1.0, "contracted": _u(r, 0.45, 0.65), "distended": _u(r, 1.15, 1.4)}[self.gall_kind]
        )
        # the inferior tip of the right lobe (segments V/VI) thins to a wedge lateral and anterior to
        # the right kidney, reaching lower in some people than others
        tip_drop = _u(r, 0.0, 35.0)
        (lx, ly, lz), la, _ = self.liver_lobes[0]
        self.liver_tip = (
            (lx + 0.12 * ac, ly + 0.1 * bc, lz - 0.75 * la[2] - 0.5 * tip_drop),
            (24 * s, 42 * s, 30 + 0.5 * tip_drop),
            _u(r, -0.2, 0.2),
        )

    # ------------------------------------------------------------------------------------------
    def body_width(self) -> float:
        return 2 * (self.ac + self.tw + self.fat_lat)

    def body_y(self) -> tuple[float, float]:
        """(posterior skin y, anterior skin y) on the midline."""
        return -self.bc - self.back - self.fat_post, self.bc + self.tw + self.fat_ant

    def organ_z_range(self, organ: str) -> tuple[float, float]:
        """(lowest, highest) z (mm) where ``organ`` ("liver" or "spleen") is surely present: a
        slab centred in it shows the organ, as every case of a LiTS or MSD data set does."""
        if organ == "spleen":
            cz, az = self.spleen_c[2], self.spleen_a[2]
            return cz - 0.75 * az, cz + 0.75 * az
        if organ == "liver":
            low = min(c[2] - a[2] for c, a, _ in self.liver_lobes)
            return low + 15.0, self.zR - 15.0
        raise ValueError(f"organ must be 'liver' or 'spleen', got {organ!r}")

    def dome(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Height (z, mm) of the diaphragm over (X, Y): two domes, lower posteriorly and laterally."""
        out = None
        for zt, xc in ((self.zR, 0.42 * self.ac), (self.zL, -0.45 * self.ac)):
            yc = -0.05 * self.bc
            dy = (Y - f32(yc)) / f32(self.bc)
            d = (
                f32(zt)
                - f32(self.dome_lat) * ((X - f32(xc)) / f32(0.8 * self.ac)) ** 2
                - f32(self.dome_post) * np.minimum(dy, 0) ** 2
                - f32(self.dome_ant) * np.maximum(dy, 0) ** 2
            )
            out = d if out is None else np.maximum(out, d)
        return out

    def draw(self, g: Grid) -> None:
        """Paint every tissue into ``g.tissue`` (later structures win)."""
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        taper = (1 + f32(self.body_taper) * np.clip(g.zs, -250, 100) / f32(100)).astype(f32)  # (nz,)
        T = taper[None, None, :]
        r_body, r_wall, r_cav = self._outlines(X2, Y2)
        body = r_body[:, :, None] < T
        cav = (r_cav[:, :, None] < T) & ~self._spine_bulge(X2, Y2)[:, :, None]
        self.cav = cav
        self.r_cav = r_cav
        self.dome2 = self.dome(X2, Y2)  # (nx, ny)
        tis = g.tissue
        self._table(g)
        self._arms(g)
        self._body_wall(g, body, r_body, r_wall, T)
        tis[cav] = VFAT
        self._thorax(g, cav, r_cav)
        self._heart(g)
        self._bowel(g)
        self._liver(g)
        self._stomach(g)
        self._kidneys(g)
        self._spleen(g)
        self._pancreas(g)
        self._vessels(g)
        self._liver_inside(g)
        self._spine(g)
        self._ribs(g, r_cav, T)
        # nothing of the abdomen outside the body cavity walls
        tis[~body & (tis != TABLE) & (tis != AIR) & ~self._arm_mask(g)] = AIR

    def _outlines(self, X2: np.ndarray, Y2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """In-plane radii of the skin, the abdominal wall and the cavity (superellipses, < 1 inside at
        taper 1; 1-homogeneous, so the outline at height z is where the radius equals taper(z))."""
        ac, bc = self.ac, self.bc
        y_post, y_ant = self.body_y()
        r_body = _superellipse(X2, Y2, ac + self.tw + self.fat_lat, y_ant, -y_post, self.p_body)
        r_wall = _superellipse(X2, Y2, ac + self.tw, bc + self.tw, bc + self.back * 0.75, self.p_cav)
        r_cav = _superellipse(X2, Y2, ac, bc, bc + self.gutter, self.p_cav)
        return r_body, r_wall, r_cav

    def _spine_bulge(self, X2: np.ndarray, Y2: np.ndarray) -> np.ndarray:
        """Where the spine bulges into the back of the cavity: from the gutters' floor to the front of
        the vertebral body (the cavity leaves it out)."""
        floor, spine_front = -self.bc - self.gutter, self.yvb + self.v_d + 4
        return (X2 / f32(self.spine_bulge)) ** 2 + ((Y2 - f32(floor)) / f32(spine_front - floor)) ** 2 < 1

    def _table(self, g: Grid) -> None:
        """The patient table under the patient (two shells, curved upwards at the sides) and its pad."""
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        tis = g.tissue
        yt = self.body_y()[0] - self.table_gap
        tab_y = f32(yt) + f32(self.table_curv) * X2**2  # curved upwards at the sides
        for off, th in ((0.0, 2.5), (-TABLE_DEPTH, 2.0)):
            m = np.abs(Y2 - (tab_y + f32(off))) < f32(th / 2 + 0.5)
            m &= np.abs(X2) < f32(230)
            tis[m] = TABLE
        tis[((Y2 < tab_y) & (Y2 > tab_y - f32(TABLE_DEPTH - 3))) & (np.abs(X2) < 220)] = AIR

    def _arms(self, g: Grid) -> None:
        """Arms down beside the body (fat, muscle, humerus), when this patient has them there."""
        if not self.arms_down:
            return
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        tis = g.tissue
        y_post, y_ant = self.body_y()
        for side in (1, -1):
            cx = side * (self.ac + self.tw + self.fat_lat + self.arm_gap + self.arm_r)
            cy = (y_post + y_ant) / 2 - 15
            ra = np.sqrt(((X2 - f32(cx)) / f32(self.arm_r)) ** 2 + ((Y2 - f32(cy)) / f32(self.arm_r * 1.1)) ** 2)
            tis[ra < 1] = FAT
            tis[ra < 0.8] = MUSCLE
            rb = np.sqrt((X2 - f32(cx)) ** 2 + (Y2 - f32(cy - 5)) ** 2)
            tis[rb < 11] = CORTEX
            tis[rb < 7] = MARROW

    def _body_wall(self, g: Grid, body: np.ndarray, r_body: np.ndarray, r_wall: np.ndarray, T: np.ndarray) -> None:
        """Subcutaneous fat under the skin, the abdominal wall muscles, and the paraspinal muscles
        behind the cavity."""
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        tis = g.tissue
        tis[body] = FAT
        tis[body & (r_body[:, :, None] > T * f32(1 - 2.0 / (self.ac + 40)))] = SKIN
        wall = r_wall[:, :, None] < T
        tis[wall] = MUSCLE
        # paraspinal muscles (outside the cavity, behind it)
        for side in (1, -1):
            rp = np.sqrt(
                ((X2 - f32(side * 38)) / f32(36)) ** 2
                + ((Y2 - f32(-self.bc - self.back * 0.45)) / f32(self.back * 0.55)) ** 2
            )
            tis[(rp < 1)[:, :, None] & body] = MUSCLE

    def _thorax(self, g: Grid, cav: np.ndarray, r_cav: np.ndarray) -> None:
        """Lungs above the diaphragm (itself a muscle band), and the costal diaphragm and intercostal
        muscles lining the rib cage around the liver and spleen (``ring2`` x ``ring_z``, which those
        organs keep off)."""
        tis = g.tissue
        thorax = g.Z > self.dome2[:, :, None]
        dia = cav & (g.Z > self.dome2[:, :, None] - f32(self.dia_t)) & ~thorax
        tis[cav & thorax] = LUNG
        tis[dia] = MUSCLE
        ring_t = self.dia_t * self.ring_f
        self.ring2 = (r_cav > 1 - ring_t / self.ac) & (g.Y[:, :, 0] < f32(0.35 * self.bc))
        self.ring_z = g.zs > f32(self.rib_front - 30)
        tis[cav & ~thorax & self.ring2[:, :, None] & self.ring_z[None, None, :]] = MUSCLE

    # ------------------------------------------------------------------------------------------
    def _arm_mask(self, g: Grid) -> np.ndarray:
        if not self.arms_down:
            return np.zeros((1, 1, 1), dtype=bool)
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        y_post, y_ant = self.body_y()
        m = np.zeros(X2.shape, dtype=bool)
        for side in (1, -1):
            cx = side * (self.ac + self.tw + self.fat_lat + self.arm_gap + self.arm_r)
            cy = (y_post + y_ant) / 2 - 15
            m |= ((X2 - cx) / self.arm_r) ** 2 + ((Y2 - cy) / (self.arm_r * 1.1)) ** 2 < 1
        return m[:, :, None]

    def _in_cav(self, b: Block) -> np.ndarray:
        return self.cav[b.sl]

    def _below_dome(self, b: Block, margin: float) -> np.ndarray:
        return b.Z < (self.dome2[b.sl[0], b.sl[1]][:, :, None] - f32(margin))

    def _heart(self, g: Grid) -> None:
        c, a = self.heart_c, self.heart_a
        found = _organ_block(g, c, a, 12, self.heart_theta)
        if found is None:
            return
        b, r = found
        above = ~self._below_dome(b, -self.dia_t)
        cav = self._in_cav(b)
        g.paint(b, (r < 1.15) & above & cav, VFAT)  # pericardial fat
        g.paint(b, (r < 1.0) & above & cav, MYOCARD)
        g.paint(
            b,
            (ellipsoid_r(b, (c[0] + 8, c[1] - 5, c[2]), (a[0] * 0.72, a[1] * 0.68, a[2] * 0.7), self.heart_theta) < 1)
            & above
            & cav,
            BLOOD,
        )
        # oesophagus above the hiatus
        t = Tube(
            np.array(
                [
                    (-0.1 * self.ac, self.yvb + 30, 120),
                    (-0.2 * self.ac, self.yvb + 40, self.zL - 20),
                    (-0.3 * self.ac, -0.12 * self.bc, self.zL - 38),
                ]
            ),
            8,
        )
        bb, d = t.field(g)
        if not bb.empty:
            g.paint(bb, (d < 0) & self._in_cav(bb), GIWALL)

    def _liver_field(self, b: Block) -> np.ndarray:
        F = None
        for c, a, th in self.liver_lobes:
            r = ellipsoid_r(b, c, a, th)
            F = r if F is None else np.minimum(F, r)
        F = np.minimum(F, ellipsoid_r(b, *self.liver_tip))  # the right lobe's inferior tip
        # left lobe: thinner towards its tip (to the patient's left)
        (cx, cy, cz), (ax, ay, az) = self.left_lobe
        t = np.clip((b.X - f32(cx - ax)) / f32(2 * ax), 0, 1)
        taper = f32(0.35) + f32(0.65) * np.sqrt(t)
        rl = np.sqrt(
            ((b.X - f32(cx)) / f32(ax)) ** 2
            + ((b.Y - f32(cy)) / (f32(ay) * taper)) ** 2
            + ((b.Z - f32(cz)) / (f32(az) * taper)) ** 2
        )
        F = np.minimum(F, rl)
        return F + f32(self.liver_amp[0]) * self.liver_noise(b) + f32(self.liver_amp[1]) * self.liver_noise2(b)

    def _liver(self, g: Grid) -> None:
        lo = (-self.ac - 5, -self.bc - self.gutter - 5, -280)
        hi = (self.ac + 5, self.bc + 5, 20)
        b = g.block(lo, hi)
        if b.empty:
            return
        F = self._liver_field(b)
        m = (F < 1) & self._in_cav(b) & self._below_dome(b, self.dia_t)
        # the liver follows the inner wall: keep a thin layer of fat only where the wall is
        m &= self.r_cav[b.sl[0], b.sl[1]][:, :, None] < f32(1.0 - self.liver_gap)
        front = (self.r_cav[b.sl[0], b.sl[1]] > 1.0 - self.ant_gap) & (b.Y[:, :, 0] > f32(0.3 * self.bc))
        m &= ~front[:, :, None]
        m &= ~(self.ring2[b.sl[0], b.sl[1]][:, :, None] & self.ring_z[b.sl[2]][None, None, :])
        g.paint(b, m, LIVER)
        fx, slope, width, y0 = self.fissure
        cleft = (
            (np.abs(b.X - f32(fx) - f32(slope) * (b.Y - f32(y0))) < f32(width / 2))
            & (b.Y > f32(y0))
            & (b.Z < f32(-35))
            & m
        )
        g.paint(b, cleft, VFAT)
        if self.gall:
            t = Tube(self.gall_path, self.gall_r)
            bb, d = t.field(g)
            if not bb.empty:
                g.paint(bb, d < 0, GIWALL)
                g.paint(bb, d < -self.gall_wall, BILE)

    def _stomach(self, g: Grid) -> None:
        t = Tube(self.stomach_path, self.stomach_r)
        collapsed = self.stomach_fill == "collapsed"
        bb, d = t.field(g, scale=0.45 if collapsed else 1.0)
        if bb.empty:
            return
        ok = self._below_dome(bb, self.dia_t) & self._in_cav(bb)
        # lesser omentum / perigastric fat: usually a fat plane between stomach and liver
        if self.gastric_fat > 0:
            g.paint(bb, (d < self.gastric_fat) & ok & (g.tissue[bb.sl] == LIVER), VFAT)
        g.paint(bb, (d < 0) & ok, GIWALL)
        lumen = (d < -self.gi_wall * (2.2 if collapsed else 1.0)) & ok
        fill = self.stomach_fill
        level = f32(self.stomach_level * self.bc)
        if fill == "collapsed":
            g.paint(bb, lumen, FLUID)
            return
        if fill == "food":
            fn = self.colon_noise(bb)
            g.paint(bb, lumen, FOOD)
            g.paint(bb, lumen & ((fn > 1.3) | (bb.Y > level + f32(0.25 * self.bc))), GAS)
            return
        content = ORAL if fill == "oral" else FLUID
        g.paint(bb, lumen, content)
        if fill in ("gas_fluid", "oral"):
            g.paint(bb, lumen & (bb.Y > level), GAS)

    def _kidneys(self, g: Grid) -> None:
        for side, c, a, theta, _tilt in self.kid:
            found = _organ_block(g, c, a, 15, theta)
            if found is None:
                continue
            b, r = found
            # hilum: a notch facing antero-medially
            hx, hy = c[0] - side * a[0] * 0.9 * np.cos(abs(theta)), c[1] + a[1] * 0.6
            hil = np.sqrt(
                ((b.X - f32(hx)) / f32(a[0] * 0.55)) ** 2
                + ((b.Y - f32(hy)) / f32(a[1] * 0.55)) ** 2
                + ((b.Z - f32(c[2])) / f32(a[2] * 0.35)) ** 2
            )
            kid = (r < 1) & (hil > 1) & self._in_cav(b)
            g.paint(b, (r < self.perirenal) & self._in_cav(b) & ~kid, VFAT)  # perirenal fat
            g.paint(b, kid, KCORTEX)
            g.paint(b, kid & (r < 0.78), KMEDULLA)
            sinus = (r < 0.55) & self._in_cav(b)
            g.paint(b, sinus, SINUSFAT)
            g.paint(b, sinus & (r < 0.3), FLUID)  # renal pelvis
        # adrenal-level psoas and crura
        for side in (1, -1):
            t = Tube(
                np.array(
                    [(side * 28, self.yvb + 2, -100), (side * 38, self.yvb + 2, -180), (side * 52, self.yvb + 8, -340)]
                ),
                np.array([5, 15, 26]),
            )
            bb, d = t.field(g)
            if not bb.empty:
                g.paint(bb, (d < 0) & self._in_cav(bb), MUSCLE)
            t = Tube(
                np.array(
                    [(side * 14, self.yvb + 8, -150), (side * 16, self.yvb + 26, -90), (side * 20, self.yvb + 34, -35)]
                ),
                5.0,
            )
            bb, d = t.field(g)
            if not bb.empty:
                g.paint(bb, (d < 0) & self._in_cav(bb) & self._below_dome(bb, 0), MUSCLE)

    def _spleen(self, g: Grid) -> None:
        c, a = self.spleen_c, self.spleen_a
        th = self.spleen_theta
        found = _organ_block(g, c, a, 10, th)
        if found is None:
            return
        b, r = found
        # the hilum: a concavity on the antero-medial side
        off = a[0] * (1.75 - 0.5 * self.spleen_hilum)
        inner_c = (c[0] + off * np.cos(th), c[1] + off * np.sin(th) + 8, c[2])
        inner = ellipsoid_r(b, inner_c, (a[0] * 0.8, a[1] * 0.45, a[2] * 0.6), th)
        n = self.spleen_noise(b)
        f = r + f32(0.09) * n
        m = (f < 1) & (inner > 1) & self._in_cav(b) & self._below_dome(b, self.dia_t)
        m &= self.r_cav[b.sl[0], b.sl[1]][:, :, None] < f32(0.99)
        m &= ~(self.ring2[b.sl[0], b.sl[1]][:, :, None] & self.ring_z[b.sl[2]][None, None, :])
        g.paint(b, m, SPLEEN)

    def _pancreas(self, g: Grid) -> None:
        t = Tube(self.panc_path, self.panc_r)
        bb, d = t.field(g)
        if not bb.empty:
            g.paint(bb, (d < 0) & self._in_cav(bb), PANCREAS)
        t = Tube(self.duo_path, self.duo_r)
        bb, d = t.field(g)
        if not bb.empty:
            ok = self._in_cav(bb)
            g.paint(bb, (d < 0) & ok, GIWALL)
            g.paint(bb, (d < -self.gi_wall) & ok, ORAL if self.oral else FLUID)
            g.paint(bb, (d < -self.gi_wall) & ok & (bb.Y > f32(self.yvb + 60)), GAS)

    def _bowel_segment(self, g: Grid, t: Tube) -> tuple[Block, np.ndarray, np.ndarray] | None:
        """Paint one bowel segment's wall (inside the cavity, 10 mm below the dome); returns its
        block, signed distance and lumen mask for the contents, or None when it misses the grid."""
        bb, d = t.field(g)
        if bb.empty:
            return None
        ok = self._in_cav(bb) & self._below_dome(bb, 10)
        g.paint(bb, (d < 0) & ok, GIWALL)
        return bb, d, (d < -2.5) & ok

    def _bowel(self, g: Grid) -> None:
        lumen_code = ORAL if self.oral else FLUID
        for pts, rad, gasr in self.sb_loops:
            segment = self._bowel_segment(g, Tube(smooth_path(pts, 3), rad))
            if segment is None:
                continue
            bb, _, lum = segment
            g.paint(bb, lum, lumen_code)
            if gasr < self.sb_gas:
                g.paint(bb, lum & (bb.Y > f32(np.percentile(pts[:, 1], 70))), GAS)
        segment = self._bowel_segment(g, Tube(self.colon_path, self.colon_r))
        if segment is None:
            return
        bb, d, lum = segment
        n = self.colon_noise(bb)
        g.paint(bb, lum, FECES)
        g.paint(bb, lum & ((n > 0.6) | (d < -self.colon_r * 0.55)), GAS)

    def _vessels(self, g: Grid) -> None:
        yv, ac, bc = self.yvb, self.ac, self.bc
        front = yv + self.v_d
        # aorta: in front of the spine, slightly left; thoracic part more posterior
        ao = Tube(
            np.array(
                [
                    (self.ax_x, front + self.ao_r + 2, -340),
                    (self.ax_x, front + self.ao_r + 1, -60),
                    (self.ax_x - 10, front + 2, 20),
                    (self.ax_x - 20, front - 2, 150),
                ]
            ),
            self.ao_r,
        )
        bb, d = ao.field(g)
        if not bb.empty:
            g.paint(bb, d < 0, ARTERY)
        ay = front + self.ao_r + 1
        arts = [
            [(self.ax_x, ay + 8, -105), (self.ax_x + 2, ay + 35, -100), (30, ay + 40, -95)],  # celiac/hepatic
            [(self.ax_x, ay + 8, -105), (-0.3 * ac, ay + 30, -98), (-0.55 * ac, yv + 20, -90)],  # splenic
            [(self.ax_x, ay + 8, -125), (self.ax_x + 2, ay + 30, -150), (0.0, ay + 45, -260)],  # SMA
            [(self.ax_x, ay, -140), (0.45 * ac, -bc + 45 - self.gutter_dy, -135)],  # renal arteries
            [(self.ax_x, ay, -135), (-0.45 * ac, -bc + 45 - self.gutter_dy, -122)],
        ]
        for pts in arts:
            bb, d = Tube(np.array(pts), 3.2).field(g)
            if not bb.empty:
                g.paint(bb, (d < 0) & self._in_cav(bb), ARTERY)
        # IVC: right of the aorta, through the bare area of the liver into the right atrium
        ivc_y = front + self.ivc_r + 6
        ivc = Tube(
            np.array(
                [
                    (self.ivc_x, ivc_y, -340),
                    (self.ivc_x, ivc_y + 4, -120),
                    (self.ivc_x - 3, ivc_y + 10, -40),
                    (self.ivc_x - 8, ivc_y + 18, 10),
                    (self.ivc_x - 15, ivc_y + 30, 40),
                ]
            ),
            self.ivc_r,
        )
        bb, d = ivc.field(g)
        if not bb.empty:
            g.paint(bb, d < 0, VEIN)
        kv = -bc + 42 - self.gutter_dy  # renal veins to the hila
        for pts in (
            [(self.ivc_x, ivc_y, -138), (0.45 * ac, kv, -132)],
            [(self.ivc_x, ivc_y, -132), (self.ax_x, ay + 14, -133), (-0.45 * ac, kv, -120)],
        ):
            bb, d = Tube(np.array(pts), 5.0).field(g)
            if not bb.empty:
                g.paint(bb, (d < 0) & self._in_cav(bb), VEIN)
        # portal system: SMV / splenic confluence behind the pancreatic neck, main portal vein
        conf = (0.04 * ac, yv + 50, -128)
        self.hilum = (0.22 * ac, yv + 62, -88)
        for pts, rad in (
            ([(0.0, ay + 42, -260), conf], 5.5),
            ([conf, (-0.25 * ac, yv + 38, -112), (-0.52 * ac, yv + 16, -98)], 4.5),
            ([conf, self.hilum], 7.0),
        ):
            bb, d = Tube(np.array(pts), rad).field(g, pad=self.porta_fat)
            if not bb.empty:
                if rad == 7.0:  # the portal vein runs in the fat of the hepatoduodenal ligament
                    g.paint(bb, (d < self.porta_fat) & self._in_cav(bb) & (g.tissue[bb.sl] == LIVER), VFAT)
                g.paint(bb, (d < 0) & self._in_cav(bb), PORTAL)

    def _liver_inside(self, g: Grid) -> None:
        """Portal and hepatic veins and lesions, drawn only where the liver is."""
        ac, bc = self.ac, self.bc
        hil = np.array(self.hilum)
        rpv = np.array((0.55 * ac, -0.05 * bc, -82))
        lpv = np.array((-0.1 * ac, 0.4 * bc, -62))
        tubes = [
            (Tube(np.array([hil, rpv]), np.array([6.5, 5])), PORTAL_IH),
            (
                Tube(np.array([hil, (0.0, 0.3 * bc, -70), lpv, (-0.15 * ac, 0.6 * bc, -85)]), np.array([5.5, 5, 4, 3])),
                PORTAL_IH,
            ),
        ]
        for p in self.pv_branches:
            start = rpv if p[0] > 0.3 * ac else lpv
            tubes.append((Tube(np.array([start, p]), np.array([4.0, 1.8])), PORTAL_IH))
        ivc_top = np.array((self.ivc_x - 8, self.yvb + self.v_d + self.ivc_r + 24, -15))
        ends = ((0.85 * ac, -0.1 * bc, -70), (0.3 * ac, 0.65 * bc, -90), (-0.35 * ac, 0.5 * bc, -45))
        for end in ends:
            tubes.append((Tube(np.array([ivc_top, end]), np.array([7, 2.5])), HEPVEIN))
        for p in self.hv_branches:  # tributaries joining the nearest hepatic vein half-way
            e = np.array(min(ends, key=lambda q: (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2))
            tubes.append((Tube(np.array([(ivc_top + e) / 2, p]), np.array([3.5, 1.5])), HEPVEIN))
        for t, code in tubes:
            bb, d = t.field(g)
            if bb.empty:
                continue
            g.paint(bb, (d < 0) & (g.tissue[bb.sl] == LIVER), code)
        for c, rad, kind, nf in self.lesions:
            lo, hi = ellipsoid_box(c, (rad,) * 3, 6)
            b = g.block(lo, hi)
            if b.empty:
                continue
            # the lesion's noise field lives in lesion-centred coordinates
            shifted = Block(b.sl, b.X - f32(c[0]), b.Y - f32(c[1]), b.Z - f32(c[2]))
            r = ellipsoid_r(b, c, (rad, rad * 0.9, rad * 1.1)) + f32(0.12) * nf(shifted)
            inside = np.isin(g.tissue[b.sl], LIVER_CODES)
            g.paint(b, (r < 1) & inside, kind)

    def _spine(self, g: Grid) -> None:
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        yv, w, dd = self.yvb, self.v_w, self.v_d
        rb = np.sqrt((X2 / f32(w)) ** 2 + ((Y2 - f32(yv)) / f32(dd)) ** 2)
        yc = yv - dd - 10
        rc = np.sqrt(X2**2 + (Y2 - f32(yc)) ** 2)
        arch = (rc < 17) & (rc > 9.5) & (Y2 < f32(yc + 6))
        spinous = (np.abs(X2) < 4.5) & (Y2 < f32(yc - 8)) & (Y2 > f32(yc - 34))
        transverse = (np.abs(Y2 - f32(yc + 3)) < 5) & (np.abs(X2) < 48) & (np.abs(X2) > 8)
        zs = g.zs
        ph = ((zs / f32(self.v_pitch)) + f32(self.v_phase)) % 1.0
        disc_t = 8.0 / self.v_pitch
        is_body = ph > disc_t  # (nz,)
        endplate = (np.abs(ph - disc_t) < 1.6 / self.v_pitch) | (ph > 1 - 1.6 / self.v_pitch)
        tp_z = (ph > 0.45) & (ph < 0.75) & (zs < -100)
        tis = g.tissue
        body2 = rb < 1
        shell2 = body2 & (rb > 1 - 2.0 / min(w, dd))
        post2 = arch | spinous
        for k in range(len(zs)):
            sl = tis[:, :, k]
            if is_body[k]:
                sl[body2] = MARROW
                sl[shell2] = CORTEX
                if endplate[k]:
                    sl[body2] = CORTEX
            else:
                sl[body2] = DISC
            sl[post2] = CORTEX
            sl[(rc < 9.5)] = CSF
            if tp_z[k]:
                sl[transverse] = CORTEX

    def _ribs(self, g: Grid, r_cav: np.ndarray, T: np.ndarray) -> None:
        """Ribs: oblique stripes on the rib cage (the cavity wall), lower at the front, present
        above the costal margin; costal cartilage at the front."""
        X2, Y2 = g.X[:, :, 0], g.Y[:, :, 0]
        ring = (r_cav > 0.995) & (r_cav < 1.0 + 9.0 / self.ac)
        ring &= ~((np.abs(X2) < 30) & (Y2 < 0))  # not across the spine
        ii, jj = np.nonzero(ring)
        if ii.size == 0:
            return
        x, y = X2[ii, jj], Y2[ii, jj]
        ang = np.arctan2(x / f32(self.ac), y / f32(self.bc))  # 0 anterior, +-pi posterior
        front = np.clip(1 - np.abs(ang) / np.pi, 0, 1)  # 1 at the front, 0 at the back
        rr = r_cav[ii, jj]
        zs = g.zs
        z_shift = f32(self.rib_drop) * front  # ribs descend anteriorly
        margin = f32(self.rib_front) * front**2 + f32(self.rib_bottom) * (1 - front**2)
        cart = front > 0.78
        rib_w = 9.0 / self.rib_pitch
        tis = g.tissue
        radial_mid = 1.0 + 4.5 / self.ac
        core = np.abs(rr - radial_mid) < 2.2 / self.ac
        for k, z in enumerate(zs):
            ph = ((z + z_shift) / f32(self.rib_pitch) + f32(self.rib_phase)) % 1.0
            on = (ph < rib_w) & (z > margin) & (z < 160)
            if not on.any():
                continue
            sl = tis[:, :, k]
            bone = on & ~cart
            sl[ii[bone], jj[bone]] = CORTEX
            inner = bone & core & (ph > 0.22 * rib_w) & (ph < 0.78 * rib_w)
            sl[ii[inner], jj[inner]] = MARROW
            c = on & cart
            sl[ii[c], jj[c]] = CARTILAGE
