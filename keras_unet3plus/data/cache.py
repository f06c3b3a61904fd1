"""On-disk cache of preprocessed slices.

Layout: ``cache_dir/<settings key>/`` holds, per case, ``<case>.<source key>.image.npy``
((Z, S, S) HU-windowed and resized single slices: the 2.5D context is stacked at read time, which
is exact because resizing acts per channel), ``.mask.npy`` (the target classes: bit-packed
(Z, S, ceil(S / 8)) for binary tasks, (Z, S, S) uint8 otherwise) and ``.json`` (slice index;
written last, it marks the entry complete).

What it costs (:func:`cache_bytes`): per slice S x S x 2 bytes of float16 image plus S x S / 8 of
packed mask: at 320 x 320, 205 kB + 12.8 kB; LiTS' 58,638 slices take 12.0 + 0.75 GB. Bounding it:

- masks of binary tasks are bit-packed (``np.packbits``): 8x smaller than uint8 and exact;
- ``image_dtype="uint8"`` (opt-in) stores the windowed value in 1/255 steps of the HU window
  (1.8 HU for the liver's 450 HU window, at most 0.9 HU off, far below CT noise of 10-20 HU):
  half the disk of float16 (6.0 GB of images for LiTS). A quantisation, not exact: the training
  data differs from the float16 cache by up to 1/510 of the window; the cached data is still a
  pure function of the files and settings, so resuming a run stays exact.

:func:`plan_cache` says, from the headers alone and before anything is written, how many bytes the
missing entries need and how many the disk has free; :meth:`CachePlan.require_space` refuses in one
line when they do not fit.

- The *settings key* hashes the resolved :class:`PreprocessConfig`, the task's label mapping, the
  image dtype and the cache format, so changing the HU window, size, resize mode, task or dtype
  never reuses old slices.
- The *source key* hashes the image and label paths, sizes and modification times (every file of a
  DICOM series folder; :func:`~keras_unet3plus.data.readers.scan_identity`), so an edited or
  replaced file is re-read.
- Every file is written to a temporary name in the same folder and moved with ``os.replace``;
  on any exception the temporaries are deleted, so a crash leaves either a complete entry or none.
- Built once, however many processes share it (the workers of a multi-worker run, two runs on one
  cache folder): :meth:`SliceCache.ensure` claims an entry with an exclusive ``.building`` marker
  before building it; the others build other entries, then wait for the claimed ones. A marker
  left by a dead process (same host: its pid is gone; another host: older than ``stale_after``)
  is taken over.

float16 keeps slices within 2.5e-4 of the float32 values (about 0.1 HU with a 450 HU window) at
half the disk space of float32. Building an entry reads the case through the reader registry
(:mod:`.readers`), a NIfTI a slab of slices at a time: memory does not grow with the volume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from keras_unet3plus.data import preprocess as pp
from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.readers import SLAB, open_pair, open_scan, organ_slices, paired_slabs, scan_identity
from keras_unet3plus.data.volume import DataError
from keras_unet3plus.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
#: how cached images are stored: float16 (default, within 2.5e-4) or uint8 (1/255 steps, opt-in)
IMAGE_DTYPES = ("float16", "uint8")
#: free space a cache leaves on its disk (checkpoints and logs still need room)
RESERVE_BYTES = 256 * 2**20
_ENTRY_OVERHEAD = 2 * 128 + 4096  # two .npy headers and a .json index (positives listed)


def _check_dtype(image_dtype: str) -> str:
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"cache image dtype must be one of {', '.join(IMAGE_DTYPES)}, got {image_dtype!r}")
    return image_dtype


def settings_key(task: str | TaskSpec, cfg: pp.PreprocessConfig, image_dtype: str = "float16") -> str:
    """Hash of everything that changes the cached arrays."""
    spec = get_task(task)
    payload = {
        "format": CACHE_FORMAT,
        "cfg": cfg.for_task(spec).to_dict(),
        "task": spec.to_dict(),
        "dtype": _check_dtype(image_dtype),
        "mask": "packbits" if spec.binary else "uint8",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def slice_bytes(image_size: int, image_dtype: str = "float16", binary: bool = True) -> tuple[int, int]:
    """Bytes one cached slice takes: ``(image, mask)``."""
    s = int(image_size)
    image = s * s * np.dtype(_check_dtype(image_dtype)).itemsize
    mask = s * ((s + 7) // 8) if binary else s * s
    return image, mask


def cache_bytes(
    n_slices: int, image_size: int, image_dtype: str = "float16", binary: bool = True, n_cases: int = 0
) -> int:
    """Disk bytes of a cache of ``n_slices`` slices over ``n_cases`` cases."""
    image, mask = slice_bytes(image_size, image_dtype, binary)
    return int(n_slices) * (image + mask) + int(n_cases) * _ENTRY_OVERHEAD


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(k, S, S) {0, 1} masks -> (k, S, ceil(S / 8)) bits (exact; :func:`unpack_masks` inverts it)."""
    return np.packbits(np.asarray(masks, dtype=np.uint8), axis=-1)


def unpack_masks(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: (…, S, ceil(S / 8)) bits -> (…, S, S) uint8 {0, 1}."""
    return np.unpackbits(np.asarray(packed), axis=-1, count=int(size))


def encode_images(planes: np.ndarray, image_dtype: str) -> np.ndarray:
    """Windowed slices in [0, 1] -> what the cache stores (float16, or uint8 in 1/255 steps)."""
    if image_dtype == "uint8":
        return np.rint(np.clip(planes, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return np.asarray(planes).astype(np.float16)


def decode_images(stored: np.ndarray) -> np.ndarray:
    """What the cache stores -> float32 in [0, 1]."""
    stored = np.asarray(stored)
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1.0 / 255.0)
    return stored.astype(np.float32)


def _gb(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


@dataclass(frozen=True)
class CachePlan:
    """What a slice cache for a list of cases will take, known from the headers before any write."""

    folder: Path | None  # None: no cache folder named (size only)
    n_cases: int
    n_slices: int
    n_missing: int
    need_bytes: int  # the entries still to build
    total_bytes: int  # the whole cache once built
    free_bytes: int | None
    image_size: int
    image_dtype: str
    binary: bool

    def fits(self) -> bool:
        return self.free_bytes is None or self.need_bytes + RESERVE_BYTES <= self.free_bytes

    def size(self) -> str:
        """What the whole cache takes, and what the other image dtype would."""
        image, mask = slice_bytes(self.image_size, self.image_dtype, self.binary)
        other = "uint8" if self.image_dtype == "float16" else "float16"
        alt = cache_bytes(self.n_slices, self.image_size, other, self.binary, self.n_cases)
        return (
            f"{_gb(self.total_bytes)} for {self.n_cases} cases, {self.n_slices:,} slices at "
            f"{self.image_size}x{self.image_size} ({self.image_dtype} images {_gb(self.n_slices * image)}, "
            f"{'bit-packed' if self.binary else 'uint8'} masks {_gb(self.n_slices * mask)}; "
            f"{other} images: {_gb(alt)} in all)"
        )

    def summary(self) -> str:
        """One line: size, what is left to build, free space."""
        if self.folder is None:
            return f"slice cache (train --cache-dir): {self.size()}"
        left = (
            f"{self.n_missing} case(s) to build, {_gb(self.need_bytes)}"
            if self.n_missing
            else "every case already cached"
        )
        return f"slice cache {self.folder}: {self.size()}; {left}; {_gb(self.free_bytes)} free"

    def require_space(self) -> None:
        """Raise :class:`CacheSpaceError` (one line) when the disk cannot hold the missing entries."""
        if self.fits():
            return
        hint = ""
        if self.image_dtype != "uint8":
            smaller = cache_bytes(self.n_slices, self.image_size, "uint8", self.binary, self.n_cases)
            hint = f", --cache-dtype uint8 ({_gb(smaller)} in all, quantised to 1/255 of the HU window)"
        raise CacheSpaceError(
            f"{self.folder}: the slice cache needs {_gb(self.need_bytes)} more ({self.n_missing} of "
            f"{self.n_cases} cases at {self.image_size}x{self.image_size}, {self.image_dtype} images; "
            f"+{_gb(RESERVE_BYTES)} kept free) but only {_gb(self.free_bytes)} is free there: free some "
            f"space, choose another --cache-dir{hint}, or train without --cache-dir (streamed from the files)"
        )


class CacheSpaceError(DataError):
    """The disk under a cache folder cannot hold the cache; nothing was written."""


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


def plan_cache(
    cache_dir: str | os.PathLike | None,
    task: str | TaskSpec,
    cfg: pp.PreprocessConfig,
    cases: Sequence[Case],
    image_dtype: str = "float16",
) -> CachePlan:
    """The bytes a cache of ``cases`` takes and still needs under ``cache_dir`` (None: the size
    alone), from headers only; writes nothing (not even the cache folder)."""
    spec = get_task(task)
    cfg = cfg.for_task(spec)
    folder = None if cache_dir is None else Path(cache_dir) / settings_key(spec, cfg, image_dtype)
    total = missing_slices = missing = 0
    for case in cases:
        n = open_scan(case.image_path).shape[2]  # the header only
        total += n
        if folder is None or not (folder.is_dir() and _entry_paths(folder, case)[2].exists()):
            missing += 1
            missing_slices += n
    return CachePlan(
        folder=folder,
        n_cases=len(cases),
        n_slices=total,
        n_missing=missing,
        need_bytes=cache_bytes(missing_slices, cfg.image_size, image_dtype, spec.binary, missing),
        total_bytes=cache_bytes(total, cfg.image_size, image_dtype, spec.binary, len(cases)),
        free_bytes=None if folder is None else _free_bytes(folder),
        image_size=cfg.image_size,
        image_dtype=image_dtype,
        binary=spec.binary,
    )


def source_key(case: Case) -> str:
    """Hash of a case's files' identity (path, size, mtime)."""
    parts = ["none" if p is None else scan_identity(p) for p in (case.image_path, case.label_path)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CaseIndex:
    """What the sampler needs to know about a case without reading its image."""

    case_id: str
    n_slices: int
    in_plane: tuple[int, int]
    positives: tuple[int, ...]
    spacing: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id,
            "n_slices": self.n_slices,
            "in_plane": list(self.in_plane),
            "positives": list(self.positives),
            "spacing": list(self.spacing),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CaseIndex:
        return cls(d["case_id"], int(d["n_slices"]), tuple(d["in_plane"]), tuple(d["positives"]), tuple(d["spacing"]))


def scan_case(case: Case, task: str | TaskSpec) -> CaseIndex:
    """Read a case's label (not its image), a slab at a time, to find the slices with the organ."""
    if case.label_path is None:
        raise DataError(f"{case.image_path}: this case has no label file; training needs one")
    _, label = open_pair(case)
    present, shape = organ_slices(label, task), label.shape
    return CaseIndex(
        case.case_id,
        int(shape[2]),
        (int(shape[0]), int(shape[1])),
        tuple(int(z) for z in np.flatnonzero(present)),
        label.spacing,
    )


def _entry_paths(folder: Path, case: Case) -> tuple[Path, Path, Path]:
    stem = f"{case.case_id}.{source_key(case)}"
    return folder / f"{stem}.image.npy", folder / f"{stem}.mask.npy", folder / f"{stem}.json"


def _atomic_tmp(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(tmp)


@dataclass(frozen=True)
class CacheEntry:
    """Paths of one complete cached case, and how to read its slices."""

    image_path: Path
    mask_path: Path
    meta_path: Path
    index: CaseIndex
    image_size: int = 0
    packed: bool = False

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped stored slices (Z, S, S) and masks (bit-packed (Z, S, ceil(S / 8)) for binary
        tasks): decode them with :meth:`images` and :meth:`masks`. Each memmap holds a file handle
        until it is dropped."""
        return np.load(self.image_path, mmap_mode="r"), np.load(self.mask_path, mmap_mode="r")

    def images(self, stored: np.ndarray, idx) -> np.ndarray:
        """Slices ``idx`` of a loaded image memmap as float32 in [0, 1]."""
        return decode_images(stored[idx])

    def masks(self, stored: np.ndarray, idx) -> np.ndarray:
        """Masks ``idx`` of a loaded mask memmap as uint8 classes (S, S) per slice."""
        m = np.asarray(stored[idx])
        return unpack_masks(m, self.image_size) if self.packed else m


class SliceCache:
    """Preprocessed-slice cache for one (task, preprocessing) setting under ``cache_dir``."""

    def __init__(
        self, cache_dir: str | os.PathLike, task: str | TaskSpec, cfg: pp.PreprocessConfig, image_dtype: str = "float16"
    ):
        self.task = get_task(task)
        self.cfg = cfg.for_task(self.task)
        self.image_dtype = _check_dtype(image_dtype)
        self.packed = self.task.binary
        self.key = settings_key(self.task, self.cfg, image_dtype)
        self.dir = Path(cache_dir) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = self.dir / "settings.json"
        if not settings.exists():
            tmp = _atomic_tmp(self.dir, settings.name)
            try:
                tmp.write_text(
                    json.dumps(
                        {
                            "format": CACHE_FORMAT,
                            "cfg": self.cfg.to_dict(),
                            "task": self.task.to_dict(),
                            "image_dtype": self.image_dtype,
                            "masks": "packbits" if self.packed else "uint8",
                        },
                        indent=2,
                    )
                )
                os.replace(tmp, settings)
            finally:
                tmp.unlink(missing_ok=True)

    def _paths(self, case: Case) -> tuple[Path, Path, Path]:
        return _entry_paths(self.dir, case)

    def _entry(self, image: Path, mask: Path, meta: Path, index: CaseIndex) -> CacheEntry:
        return CacheEntry(image, mask, meta, index, self.cfg.image_size, self.packed)

    def get(self, case: Case) -> CacheEntry | None:
        """The complete entry for ``case``, or None (missing, stale source or half-written)."""
        image, mask, meta = self._paths(case)
        if not (meta.exists() and image.exists() and mask.exists()):
            return None
        try:
            index = CaseIndex.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            return None
        return self._entry(image, mask, meta, index)

    def get_or_build(self, case: Case) -> CacheEntry:
        """Cached entry for ``case``, preprocessing the case first if needed."""
        return self.get(case) or self.build(case)

    def build(self, case: Case) -> CacheEntry:
        """Preprocess one case into the cache (atomically; temporaries removed on failure), reading
        image and label a slab of slices at a time."""
        if case.label_path is None:
            raise DataError(f"{case.image_path}: this case has no label file; the cache needs one")
        image_path, mask_path, meta_path = self._paths(case)
        image, label = open_pair(case)
        n = image.shape[2]
        s = self.cfg.image_size
        mask_shape = (n, s, (s + 7) // 8) if self.packed else (n, s, s)
        tmps = [_atomic_tmp(self.dir, p.name) for p in (image_path, mask_path, meta_path)]
        try:
            img_mm = np.lib.format.open_memmap(tmps[0], mode="w+", dtype=np.dtype(self.image_dtype), shape=(n, s, s))
            msk_mm = np.lib.format.open_memmap(tmps[1], mode="w+", dtype=np.uint8, shape=mask_shape)
            window = self.cfg.window()
            present = np.zeros(n, dtype=bool)
            for z0, z1, hu, lab in paired_slabs(image.image(stream=True), label.label(self.task, stream=True), SLAB):
                planes = pp.window_hu(np.moveaxis(hu, 2, 0)[..., None], window)  # (k, X, Y, 1)
                img_mm[z0:z1] = encode_images(pp.resize_images(planes, self.cfg).numpy()[..., 0], self.image_dtype)
                masks = pp.resize_masks(np.moveaxis(lab, 2, 0)[..., None], self.cfg).numpy()[..., 0]
                msk_mm[z0:z1] = pack_masks(masks) if self.packed else masks
                present[z0:z1] = lab.any(axis=(0, 1))
            img_mm.flush()
            msk_mm.flush()
            del img_mm, msk_mm
            index = CaseIndex(
                case.case_id,
                int(n),
                (int(image.shape[0]), int(image.shape[1])),
                tuple(int(v) for v in np.flatnonzero(present)),
                image.spacing,
            )
            tmps[2].write_text(json.dumps(index.to_dict()), encoding="utf-8")
            os.replace(tmps[0], image_path)
            os.replace(tmps[1], mask_path)
            os.replace(tmps[2], meta_path)  # last: marks the entry complete
        except BaseException:
            for t in tmps:
                t.unlink(missing_ok=True)
            for p in (meta_path, image_path, mask_path):
                if not (meta_path.exists()):
                    p.unlink(missing_ok=True)
            raise
        self._drop_stale(case, image_path)
        log.debug("cached %s (%d slices) in %s", case.case_id, n, self.dir)
        return self._entry(image_path, mask_path, meta_path, index)

    # ---- building once across processes ----------------------------------------------------
    def _marker(self, case: Case) -> Path:
        return self._paths(case)[2].with_suffix(".building")

    def _claim(self, case: Case, stale_after: float) -> bool:
        """Create the case's ``.building`` marker; False while another live process holds it."""
        marker = self._marker(case)
        for _ in range(2):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._marker_is_stale(marker, stale_after):
                    return False
                marker.unlink(missing_ok=True)  # its builder died: take over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}")
            return True
        return False

    @staticmethod
    def _marker_is_stale(marker: Path, stale_after: float) -> bool:
        try:
            host, pid = marker.read_text().split()
            age = time.time() - marker.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written right now, or just removed
        if host == socket.gethostname():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
        return age > stale_after

    def _build_if_unclaimed(self, case: Case, stale_after: float) -> bool:
        """Build ``case`` unless another live process has claimed it; True when it is complete."""
        if not self._claim(case, stale_after):
            return False
        try:
            if self.get(case) is None:
                self.build(case)
        finally:
            self._marker(case).unlink(missing_ok=True)
        return True

    def ensure(
        self, cases, first=None, poll: float = 0.2, timeout: float = 6 * 3600, stale_after: float = 1800.0
    ) -> list[CacheEntry]:
        """Complete entries for every case, each built by exactly one process.

        ``first``: the cases this process should build first (its shard of a multi-worker run), so
        the workers split the work; the rest it builds only if nobody else has claimed them.
        """
        cases = list(cases)
        order = list(first or []) + [c for c in cases if c not in (first or [])]
        pending = []
        for case in order:
            if self.get(case) is None and not self._build_if_unclaimed(case, stale_after):
                pending.append(case)
        deadline = time.time() + timeout
        while pending:
            still = []
            for case in pending:  # claimed elsewhere: wait, or build it if its builder gave up or died
                if self.get(case) is None and not self._build_if_unclaimed(case, stale_after):
                    still.append(case)
            pending = still
            if pending:
                if time.time() > deadline:
                    raise DataError(
                        f"{self.dir}: waited {timeout:.0f} s for other processes to cache "
                        + ", ".join(c.case_id for c in pending[:5])
                    )
                time.sleep(poll)
        return [self.get(c) for c in cases]  # type: ignore[misc]

    def _drop_stale(self, case: Case, keep: Path) -> None:
        """Remove entries of the same case built from an older version of its files."""
        keep_stem = keep.name.split(".image.npy")[0]
        for p in self.dir.glob(f"{case.case_id}.*"):
            if p.suffix == ".building":
                continue
            if not p.name.startswith(keep_stem + ".") and p.name.split(".")[0] == case.case_id:
                p.unlink(missing_ok=True)
