"""On-disk cache of preprocessed slices.

Layout: ``cache_dir/<settings key>/`` holds, per case, ``<case>.<source key>.image.npy``
((Z, S, S) float16, HU-windowed and resized single slices: the 2.5D context is stacked at read
time, which is exact because resizing acts per channel), ``.mask.npy`` ((Z, S, S) uint8 target
classes) and ``.json`` (slice index; written last, it marks the entry complete).

- The *settings key* hashes the resolved :class:`PreprocessConfig`, the task's label mapping and
  the cache format, so changing the HU window, size, resize mode or task never reuses old slices.
- The *source key* hashes the image and label paths, sizes and modification times, so an edited
  or replaced file is re-read.
- Every file is written to a temporary name in the same folder and moved with ``os.replace``;
  on any exception the temporaries are deleted, so a crash leaves either a complete entry or none.
- Built once, however many processes share it (the workers of a multi-worker run, two runs on one
  cache folder): :meth:`SliceCache.ensure` claims an entry with an exclusive ``.building`` marker
  before building it; the others build other entries, then wait for the claimed ones. A marker
  left by a dead process (same host: its pid is gone; another host: older than ``stale_after``)
  is taken over.

float16 keeps slices within 2.5e-4 of the float32 values (about 0.1 HU with a 450 HU window) at
half the disk space.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_unet3plus.data import preprocess as pp
from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.nifti import (DataError, check_pair, open_nifti, read_image_array,
                                        read_label_array, spacing_from_affine)
from keras_unet3plus.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def settings_key(task: str | TaskSpec, cfg: pp.PreprocessConfig) -> str:
    """Hash of everything that changes the cached arrays."""
    spec = get_task(task)
    payload = {"format": CACHE_FORMAT, "cfg": cfg.for_task(spec).to_dict(), "task": spec.to_dict(),
               "dtype": "float16"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def source_key(case: Case) -> str:
    """Hash of a case's files' identity (path, size, mtime)."""
    parts = []
    for p in (case.image_path, case.label_path):
        if p is None:
            parts.append("none")
            continue
        st = Path(p).stat()
        parts.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
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
        return {"case_id": self.case_id, "n_slices": self.n_slices, "in_plane": list(self.in_plane),
                "positives": list(self.positives), "spacing": list(self.spacing)}

    @classmethod
    def from_dict(cls, d: dict) -> "CaseIndex":
        return cls(d["case_id"], int(d["n_slices"]), tuple(d["in_plane"]), tuple(d["positives"]),
                   tuple(d["spacing"]))


def scan_case(case: Case, task: str | TaskSpec) -> CaseIndex:
    """Read a case's label (not its image) to find the slices that contain the organ."""
    if case.label_path is None:
        raise DataError(f"{case.image_path}: this case has no label file; training needs one")
    img = open_nifti(case.image_path)
    limg = open_nifti(case.label_path)
    check_pair(img, limg, Path(case.image_path), Path(case.label_path))
    label, affine = read_label_array(case.label_path, task, img=limg)
    positives = np.flatnonzero(label.reshape(-1, label.shape[2]).any(axis=0))
    return CaseIndex(case.case_id, int(label.shape[2]), (int(label.shape[0]), int(label.shape[1])),
                     tuple(int(z) for z in positives), spacing_from_affine(affine))


def _atomic_tmp(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(tmp)


@dataclass(frozen=True)
class CacheEntry:
    """Paths of one complete cached case."""

    image_path: Path
    mask_path: Path
    meta_path: Path
    index: CaseIndex

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped (Z, S, S) float16 slices and (Z, S, S) uint8 masks."""
        return np.load(self.image_path, mmap_mode="r"), np.load(self.mask_path, mmap_mode="r")


class SliceCache:
    """Preprocessed-slice cache for one (task, preprocessing) setting under ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike, task: str | TaskSpec, cfg: pp.PreprocessConfig):
        self.task = get_task(task)
        self.cfg = cfg.for_task(self.task)
        self.key = settings_key(self.task, self.cfg)
        self.dir = Path(cache_dir) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = self.dir / "settings.json"
        if not settings.exists():
            tmp = _atomic_tmp(self.dir, settings.name)
            try:
                tmp.write_text(json.dumps({"format": CACHE_FORMAT, "cfg": self.cfg.to_dict(),
                                           "task": self.task.to_dict()}, indent=2))
                os.replace(tmp, settings)
            finally:
                tmp.unlink(missing_ok=True)

    def _paths(self, case: Case) -> tuple[Path, Path, Path]:
        stem = f"{case.case_id}.{source_key(case)}"
        return (self.dir / f"{stem}.image.npy", self.dir / f"{stem}.mask.npy", self.dir / f"{stem}.json")

    def get(self, case: Case) -> CacheEntry | None:
        """The complete entry for ``case``, or None (missing, stale source or half-written)."""
        image, mask, meta = self._paths(case)
        if not (meta.exists() and image.exists() and mask.exists()):
            return None
        try:
            index = CaseIndex.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            return None
        return CacheEntry(image, mask, meta, index)

    def get_or_build(self, case: Case) -> CacheEntry:
        """Cached entry for ``case``, preprocessing the case first if needed."""
        return self.get(case) or self.build(case)

    def build(self, case: Case) -> CacheEntry:
        """Preprocess one case into the cache (atomically; temporaries removed on failure)."""
        if case.label_path is None:
            raise DataError(f"{case.image_path}: this case has no label file; the cache needs one")
        image_path, mask_path, meta_path = self._paths(case)
        img = open_nifti(case.image_path)
        limg = open_nifti(case.label_path)
        check_pair(img, limg, Path(case.image_path), Path(case.label_path))
        label, _ = read_label_array(case.label_path, self.task, img=limg)
        hu, affine = read_image_array(case.image_path, dtype=None, img=img)
        n = hu.shape[2]
        s = self.cfg.image_size
        tmps = [_atomic_tmp(self.dir, p.name) for p in (image_path, mask_path, meta_path)]
        try:
            img_mm = np.lib.format.open_memmap(tmps[0], mode="w+", dtype=np.float16, shape=(n, s, s))
            msk_mm = np.lib.format.open_memmap(tmps[1], mode="w+", dtype=np.uint8, shape=(n, s, s))
            window = self.cfg.window()
            step = 16
            for start in range(0, n, step):
                z = np.arange(start, min(n, start + step))
                planes = pp.window_hu(pp.stack_context(hu, z, 0), window)  # (k, X, Y, 1)
                img_mm[z] = pp.resize_images(planes, self.cfg).numpy()[..., 0].astype(np.float16)
                msk_mm[z] = pp.resize_masks(pp.stack_context(label, z, 0), self.cfg).numpy()[..., 0]
            img_mm.flush()
            msk_mm.flush()
            del img_mm, msk_mm
            positives = np.flatnonzero(label.reshape(-1, n).any(axis=0))
            index = CaseIndex(case.case_id, int(n), (int(hu.shape[0]), int(hu.shape[1])),
                              tuple(int(v) for v in positives), spacing_from_affine(affine))
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
        return CacheEntry(image_path, mask_path, meta_path, index)

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
                marker.unlink(missing_ok=True)   # its builder died: take over
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
            return False   # being written right now, or just removed
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

    def ensure(self, cases, first=None, poll: float = 0.2, timeout: float = 6 * 3600,
               stale_after: float = 1800.0) -> list[CacheEntry]:
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
            for case in pending:   # claimed elsewhere: wait, or build it if its builder gave up or died
                if self.get(case) is None and not self._build_if_unclaimed(case, stale_after):
                    still.append(case)
            pending = still
            if pending:
                if time.time() > deadline:
                    raise DataError(f"{self.dir}: waited {timeout:.0f} s for other processes to cache "
                                    + ", ".join(c.case_id for c in pending[:5]))
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
