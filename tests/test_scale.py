"""LiTS-sized work on small files: the slice cache's disk check refuses before writing anything,
streaming predict gives the masks the whole-volume path gave, no file handle or thread is kept per
case, and the cache's compact forms round-trip. (The large runs: benchmarks/dataset_scale.py.)"""

from __future__ import annotations

import os
import shutil
import threading
from collections import namedtuple
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import TINY_RUN
from nibabel import orientations as ornt

from keras_unet3plus import cli
from keras_unet3plus.data import PreprocessConfig, build_dataset, find_cases, phantom
from keras_unet3plus.data.cache import (
    CacheSpaceError,
    SliceCache,
    cache_bytes,
    pack_masks,
    plan_cache,
    settings_key,
    unpack_masks,
)
from keras_unet3plus.data.nifti import NiftiSlabs, load_image

DiskUsage = namedtuple("DiskUsage", "total used free")


def _small_disk(monkeypatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 * free, 9 * free, free))


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


@pytest.fixture()
def lits(phantom_lits, tmp_path) -> Path:
    root = tmp_path / "lits"
    shutil.copytree(phantom_lits, root)
    return root


def test_train_refuses_a_cache_the_disk_cannot_hold_before_writing_anything(lits, tmp_path, capsys, monkeypatch):
    from keras_unet3plus.training.trainer import Trainer

    def too_late(self):
        raise AssertionError("the model was built before the disk was checked")

    monkeypatch.setattr(Trainer, "_build_model_and_optimizer", too_late)
    _small_disk(monkeypatch, free=1_000_000)  # 1 MB free: the cache of 3 x 32 slices at 32x32 is ~0.2 MB
    cache, out = tmp_path / "cache", tmp_path / "run"
    rc = cli.main(["train", "--data-dir", str(lits), "--out-dir", str(out), "--cache-dir", str(cache), *TINY_RUN])
    assert rc == 1
    line = _one_error_line(capsys)
    assert str(cache) in line and "needs" in line and "free" in line and "--cache-dtype uint8" in line, line
    assert not cache.exists() and not out.exists()  # nothing written: not the cache folder, not the run


def test_check_data_states_the_cache_size_and_refuses_a_full_disk(lits, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    assert cli.main(["check-data", "--data-dir", str(lits), "--quiet", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    n_slices = sum(NiftiSlabs(c.image_path).shape[2] for c in find_cases(lits))
    expect = cache_bytes(n_slices, 64, "float16", True, 4)
    assert f"{n_slices:,} slices at 64x64" in out and f"{expect / 1e6:.1f} MB" in out, out
    assert "bit-packed masks" in out and "uint8 images" in out
    _small_disk(monkeypatch, free=2_000_000)
    assert (
        cli.main(["check-data", "--data-dir", str(lits), "--quiet", "--image-size", "64", "--cache-dir", str(cache)])
        == 1
    )
    line = _one_error_line(capsys)
    assert str(cache) in line and "needs" in line and "2.0 MB is free" in line, line
    assert not cache.exists()


def test_cache_plan_counts_only_missing_entries(phantom_lits, tmp_path, monkeypatch):
    cases = find_cases(phantom_lits)
    cfg = PreprocessConfig(image_size=32)
    before = plan_cache(tmp_path / "cache", "liver", cfg, cases)
    assert not (tmp_path / "cache").exists()
    assert before.n_missing == len(cases) and before.need_bytes == before.total_bytes
    SliceCache(tmp_path / "cache", "liver", cfg).build(cases[0])
    after = plan_cache(tmp_path / "cache", "liver", cfg, cases)
    assert after.n_missing == len(cases) - 1 and after.need_bytes < before.need_bytes
    entry = SliceCache(tmp_path / "cache", "liver", cfg).get(cases[0])
    built = entry.image_path.stat().st_size + entry.mask_path.stat().st_size
    assert before.need_bytes - after.need_bytes >= built  # the estimate covers what was written
    _small_disk(monkeypatch, free=after.need_bytes)  # no room for the reserve
    with pytest.raises(CacheSpaceError, match="needs"):
        plan_cache(tmp_path / "cache", "liver", cfg, cases).require_space()


@pytest.mark.parametrize("size", [32, 37])
def test_bit_packed_masks_round_trip_exactly(size):
    rng = np.random.default_rng(size)
    masks = (rng.random((5, size, size)) > 0.6).astype(np.uint8)
    packed = pack_masks(masks)
    assert packed.shape == (5, size, (size + 7) // 8) and packed.nbytes * 7 < masks.nbytes
    assert np.array_equal(unpack_masks(packed, size), masks)


def test_cached_training_data_packed_and_uint8(phantom_lits, tmp_path):
    """Bit-packed masks give exactly the streamed masks; uint8 images stay within 1/510 of the window
    of the float16 cache and live under their own key."""
    cases = find_cases(phantom_lits)[:2]
    cfg = PreprocessConfig(image_size=40)
    kw = dict(batch_size=4, training=False, negative_fraction=None)

    def collect(**extra):
        ds, _ = build_dataset(cases, "liver", cfg, **kw, **extra)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        return np.concatenate(xs), np.concatenate(ys)

    x_stream, y_stream = collect()
    x16, y16 = collect(cache_dir=str(tmp_path))
    x8, y8 = collect(cache_dir=str(tmp_path), cache_dtype="uint8")
    assert np.array_equal(y16, y_stream) and np.array_equal(y8, y_stream) and y_stream.any()
    assert np.abs(x16 - x_stream).max() < 5e-4
    assert 0 < np.abs(x8 - x16).max() <= 1 / 510 + 5e-4
    assert settings_key("liver", cfg, "uint8") != settings_key("liver", cfg)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _many_cases(src: Path, root: Path, n: int) -> list:
    """``n`` LiTS cases, each a hard link to one of the source cases (separate cases to every stage)."""
    root.mkdir()
    sources = sorted(src.glob("volume-*.nii.gz"))
    for k in range(n):
        vol = sources[k % len(sources)]
        os.link(vol, root / f"volume-{k}.nii.gz")
        os.link(vol.with_name(vol.name.replace("volume", "segmentation")), root / f"segmentation-{k}.nii.gz")
    return find_cases(root)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
@pytest.mark.parametrize("cached", [False, True], ids=["stream", "cache"])
def test_no_file_handle_or_thread_kept_per_case(phantom_lits, tmp_path, cached):
    src = tmp_path / "src"
    phantom.write_dataset(src, 2, layout="lits", task="liver", shape=(24, 24, 12), seed=3)
    cfg = PreprocessConfig(image_size=16)
    kw = dict(batch_size=2, training=True, negative_fraction=0.5, cycle_length=2)
    warm = _many_cases(src, tmp_path / "warm", 2)  # TensorFlow's own pools start here
    list(build_dataset(warm, "liver", cfg, cache_dir=str(tmp_path / "c0") if cached else None, **kw)[0])
    growth = {}
    for n in (4, 24):
        cases = _many_cases(src, tmp_path / f"n{n}", n)
        fds0, threads0 = _open_fds(), threading.active_count()
        ds, _ = build_dataset(cases, "liver", cfg, cache_dir=str(tmp_path / f"c{n}") if cached else None, **kw)
        peak = fds0
        for _ in ds:
            peak = max(peak, _open_fds())
        del ds
        growth[n] = (peak - fds0, _open_fds() - fds0, threading.active_count() - threads0)
    for peak, left, threads in growth.values():
        # open while iterating: cycle_length (2) cases, an image and a mask memmap each, + the file
        # np.load holds while mapping the next one; a handle kept per case would be 24 or 48 here
        assert peak <= 2 * 2 + 2, growth
        assert left <= 0 and threads <= 0, growth  # nothing left open afterwards


def _write_oriented(case, codes: str, path: Path) -> Path:
    t = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(tuple(codes)))
    affine = case.affine @ ornt.inv_ornt_aff(t, case.hu.shape)
    nib.save(nib.Nifti1Image(ornt.apply_orientation(case.hu, t), affine), str(path))
    return path


@pytest.mark.parametrize("codes", ["LPS", "RAI", "SAR"], ids=["axial", "inferior-first", "sagittal-stored"])
def test_streaming_predict_gives_the_whole_volume_mask(trained_tiny, tmp_path, codes, monkeypatch):
    """predict streams a NIfTI file a slab at a time (never materialised) and writes the mask the
    whole-volume path (the float32 volume in memory) gives, in every storage order."""
    from keras_unet3plus.inference import Predictor

    _, path, _ = trained_tiny
    case = phantom.generate_case(77, shape=(72, 64, 29), organ="liver")
    ct = _write_oriented(case, codes, tmp_path / "ct.nii.gz")
    predictor = Predictor.from_path(path, batch_size=4)
    before = predictor.predict_file(ct, volume=load_image(ct))  # the path as it was
    assert before.any() and not before.all()
    if codes != "SAR":

        def whole(self, *a, **k):
            raise AssertionError("the streamed volume was read whole")

        monkeypatch.setattr(NiftiSlabs, "__array__", whole)
    passes, slabs = [], NiftiSlabs.slabs

    def counted(self, chunk=32):
        passes.append(chunk)
        return slabs(self, chunk)

    monkeypatch.setattr(NiftiSlabs, "slabs", counted)
    streamed = predictor.predict_file(ct, tmp_path / "mask.nii.gz")
    assert passes == [4]  # one pass over the file, a batch of slices at a time
    assert np.array_equal(streamed, before)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj), before)
