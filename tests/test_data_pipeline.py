"""The streaming 2.5D tf.data pipeline: sampling, equivalence with inference, cache, sharding."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from keras_unet3plus.data import (
    AugmentConfig,
    DataError,
    PreprocessConfig,
    SliceCache,
    augment_sample,
    build_dataset,
    find_cases,
    load_case,
    make_dataset,
    volume_to_slices,
)
from keras_unet3plus.data import preprocess as pp
from keras_unet3plus.data import cache as cache_module
from keras_unet3plus.data.cache import settings_key
from keras_unet3plus.data.pipeline import negatives_per_case, select_slices
from keras_unet3plus.data.cache import CaseIndex

EXACT = PreprocessConfig(image_size=64, resize_mode="crop")  # phantom fixtures are 64 x 64 in-plane


def _collect(ds):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _organ_stats(cases, task="liver"):
    n_slices = voxels = n_pos = 0
    for c in cases:
        lab = np.asarray(nib.load(c.label_path).dataobj) > 0
        voxels += int(lab.sum())
        n_pos += int(lab.any((0, 1)).sum())  # axial axis is 2 for every phantom orientation used
        n_slices += lab.shape[2]
    return n_slices, n_pos, voxels


def test_sampling_keeps_every_organ_slice_and_the_negative_share(phantom_lits):
    cases = find_cases(phantom_lits)[:2]  # RAS and LPS: axial is the file's third axis
    n_slices, n_pos, voxels = _organ_stats(cases)
    ds, info = build_dataset(cases, "liver", EXACT, batch_size=4, training=False, negative_fraction=0.25)
    x, y = _collect(ds)
    assert info.n_positive == n_pos
    assert abs(info.negative_share - 0.25) < 0.02
    assert len(x) == info.n_slices == n_pos + info.n_negative
    assert int(y.sum()) == voxels  # every organ slice delivered exactly once
    assert int((y.reshape(len(y), -1).max(1) == 0).sum()) == info.n_negative
    assert info.steps_per_epoch == -(-len(x) // 4) == int(ds.cardinality())
    assert "negative share" in info.summary()
    _, all_info = build_dataset(cases, "liver", EXACT, batch_size=4, training=False, negative_fraction=None)
    assert all_info.n_slices == n_slices


def test_training_redraws_negatives_each_epoch(phantom_lits):
    from keras_unet3plus.data.pipeline import index_cases

    # the two cases with the most organ-free slices, so that a draw is a choice
    index = dict(zip(find_cases(phantom_lits), index_cases(find_cases(phantom_lits), "liver")))
    cases = sorted(index, key=lambda c: len(index[c].positives) - index[c].n_slices)[:2]
    drawn = negatives_per_case([index[c] for c in cases], 0.3)
    assert all(0 < d < index[c].n_slices - len(index[c].positives) for d, c in zip(drawn, cases)), drawn
    ds, info = build_dataset(cases, "liver", EXACT, batch_size=4, training=True, negative_fraction=0.3, seed=1)
    epochs = [_collect(ds) for _ in range(2)]
    for x, y in epochs:
        assert len(x) == info.steps_per_epoch * 4
        assert x.dtype == np.float32 and y.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
    neg = [{round(float(s), 3) for s, m in zip(x.sum((1, 2, 3)), y.max((1, 2, 3))) if m == 0} for x, y in epochs]
    assert neg[0] != neg[1]
    again = _collect(build_dataset(cases, "liver", EXACT, batch_size=4, negative_fraction=0.3, seed=1)[0])
    np.testing.assert_array_equal(again[0], epochs[0][0])  # deterministic by seed


def test_negative_apportioning():
    idx = [
        CaseIndex("a", 10, (4, 4), (2, 3, 4, 5), (1, 1, 1)),
        CaseIndex("b", 20, (4, 4), (1,), (1, 1, 1)),
        CaseIndex("c", 5, (4, 4), (), (1, 1, 1)),
    ]
    counts = negatives_per_case(idx, 0.5)  # 5 positives -> 5 negatives over 6 + 19 + 5 available
    assert sum(counts) == 5 and all(c <= a for c, a in zip(counts, (6, 19, 5)))
    assert negatives_per_case(idx, None) == [6, 19, 5] and negatives_per_case(idx, 0.0) == [0, 0, 0]
    z = select_slices(idx[0], 3, np.random.default_rng(0))
    assert set((2, 3, 4, 5)) <= set(z.tolist()) and len(z) == 7
    with pytest.raises(ValueError):
        negatives_per_case(idx, 1.0)


@pytest.mark.parametrize("cached", [False, True])
def test_pipeline_equals_inference_preprocessing(phantom_lits, tmp_path, cached):
    case = find_cases(phantom_lits)[2]  # PLS on disk
    cfg = PreprocessConfig(image_size=48).for_task("liver")
    ds = make_dataset(
        [case],
        "liver_tumour",
        cfg,
        batch_size=8,
        training=False,
        negative_fraction=None,
        cache_dir=str(tmp_path) if cached else None,
        cycle_length=1,
    )
    x, y = _collect(ds)
    vol = load_case(case, "liver_tumour")
    ref = volume_to_slices(vol.image, cfg)
    np.testing.assert_allclose(x, ref, atol=1e-3 if cached else 0)  # streamed: bit for bit
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, pp.label_to_slices(vol.label, cfg).astype(np.int32))


@pytest.mark.parametrize("cached", [False, True])
def test_pipeline_keeps_the_aspect_ratio_of_non_square_slices(tmp_path, cached):
    """A cropped, non-square field of view goes through training exactly as through inference
    (pad to a square of air, then resize), cached or streamed."""
    from keras_unet3plus.data.phantom import generate_case

    c = generate_case(11, shape=(56, 40, 8), organ="liver")
    folder = tmp_path / "lits"
    folder.mkdir()
    nib.save(nib.Nifti1Image(c.hu, c.affine), folder / "volume-0.nii.gz")
    nib.save(nib.Nifti1Image(c.label, c.affine), folder / "segmentation-0.nii.gz")
    case = find_cases(folder)[0]
    cfg = PreprocessConfig(image_size=32).for_task("liver")
    x, y = _collect(
        make_dataset(
            [case],
            "liver",
            cfg,
            batch_size=4,
            training=False,
            negative_fraction=None,
            cache_dir=str(tmp_path / "cache") if cached else None,
            cycle_length=1,
        )
    )
    vol = load_case(case, "liver")
    np.testing.assert_allclose(x, volume_to_slices(vol.image, cfg), atol=1e-3 if cached else 1e-6)
    np.testing.assert_array_equal(y, (pp.label_to_slices(vol.label, cfg) > 0).astype(np.float32))
    assert np.all(x[:, :, :3] == 0) and np.all(x[:, :, -3:] == 0)  # the air pad: 8 of 56 px per side


def test_cache_is_keyed_by_settings_and_source(phantom_lits, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz"):
        shutil.copy(phantom_lits / name, src / name)
    case = find_cases(src)[0]
    cache_dir = tmp_path / "cache"
    a = PreprocessConfig(image_size=32)
    b = PreprocessConfig(image_size=32, hu_window=(-100, 200))
    assert settings_key("liver", a) != settings_key("liver", b) != settings_key("liver_tumour", b)
    assert settings_key("liver", a) == settings_key("liver", a.for_task("liver"))
    make_dataset([case], "liver", a, batch_size=2, cache_dir=str(cache_dir))
    ca, cb = SliceCache(cache_dir, "liver", a), SliceCache(cache_dir, "liver", b)
    assert ca.get(case) is not None and cb.get(case) is None  # a new window is never served old slices
    make_dataset([case], "liver", b, batch_size=2, cache_dir=str(cache_dir))
    assert cb.get(case) is not None
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 2
    img_a, _ = ca.get(case).load()
    img_b, _ = cb.get(case).load()
    assert not np.allclose(np.asarray(img_a), np.asarray(img_b))
    # an edited source file invalidates its entry; the rebuilt entry replaces the stale one
    st = os.stat(case.image_path)
    os.utime(case.image_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ca.get(case) is None
    ca.get_or_build(case)
    assert len(list(ca.dir.glob("volume-0.*.image.npy"))) == 1


def test_cache_write_is_atomic(phantom_lits, tmp_path, monkeypatch):
    case = find_cases(phantom_lits)[0]
    real = pp.resize_images
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(pp, "resize_images", flaky)
    monkeypatch.setattr(cache_module, "SLAB", 8)  # several slabs: the failure comes mid-build
    cache = SliceCache(tmp_path, "liver", PreprocessConfig(image_size=32))
    with pytest.raises(RuntimeError, match="disk full"):
        cache.build(case)
    assert sorted(p.name for p in cache.dir.iterdir()) == ["settings.json"]
    assert cache.get(case) is None
    monkeypatch.setattr(pp, "resize_images", real)
    assert cache.get_or_build(case).index.n_slices == 32


def test_sharding_two_replicas_is_disjoint(phantom_lits):
    cases = find_cases(phantom_lits)
    out = []
    for k in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=k, num_replicas_in_sync=2)
        ds, info = build_dataset(cases, "liver", EXACT, batch_size=4, training=True, input_context=ctx)
        x, _ = _collect(ds)
        out.append((info, {hash(s.tobytes()) for s in x}, len(x)))
    (i0, f0, n0), (i1, f1, n1) = out
    assert set(i0.case_ids).isdisjoint(i1.case_ids)
    assert set(i0.case_ids) | set(i1.case_ids) == {c.case_id for c in cases}
    assert i0.batch_size == i1.batch_size == 2
    assert i0.steps_per_epoch == i1.steps_per_epoch and n0 == n1 == 2 * i0.steps_per_epoch
    assert f0.isdisjoint(f1)


def test_augmentation():
    img = tf.random.stateless_uniform((32, 32, 3), seed=(1, 2))
    mask = tf.cast(tf.random.stateless_uniform((32, 32, 1), seed=(3, 4)) > 0.5, tf.uint8)
    seed = tf.constant([5, 6], tf.int64)
    a1, m1 = augment_sample(img, mask, seed)
    a2, m2 = augment_sample(img, mask, seed)
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == img.shape and m1.dtype == tf.uint8 and set(np.unique(m1)) <= {0, 1}
    assert 0.0 <= float(tf.reduce_min(a1)) and float(tf.reduce_max(a1)) <= 1.0
    assert not np.allclose(a1, img)
    none = AugmentConfig(
        rotation_deg=0,
        scale=(1, 1),
        translate=0,
        intensity_shift=0,
        intensity_scale=0,
        noise_std=0,
        blur_prob=0,
        resample=(0, 1),
    )
    a0, m0 = augment_sample(img, mask, seed, none)
    np.testing.assert_allclose(a0, img, atol=1e-6)
    np.testing.assert_array_equal(m0, mask)
    assert AugmentConfig().flip_lr is False


def test_pipeline_with_augmentation_runs(phantom_msd):
    cases = find_cases(phantom_msd)
    ds, info = build_dataset(
        cases, "spleen", PreprocessConfig(image_size=48), batch_size=4, augment=True, negative_fraction=0.2
    )
    x, y = next(iter(ds))
    assert x.shape == (4, 48, 48, 3) and y.shape == (4, 48, 48, 1) and y.dtype == tf.float32


def test_bad_cases_name_the_file(phantom_lits, tmp_path):
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz", "volume-1.nii.gz", "segmentation-1.nii.gz"):
        shutil.copy(phantom_lits / name, tmp_path / name)
    seg = nib.load(tmp_path / "segmentation-1.nii.gz")
    good = np.asarray(seg.dataobj).copy()
    lab = good.copy()
    lab[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(lab, seg.affine), tmp_path / "segmentation-1.nii.gz")
    with pytest.raises(DataError, match=r"segmentation-1\.nii\.gz.*\[7\]"):
        make_dataset(find_cases(tmp_path), "liver", EXACT, batch_size=2)
    nib.save(nib.Nifti1Image(good, seg.affine), tmp_path / "segmentation-1.nii.gz")
    data = (tmp_path / "volume-1.nii.gz").read_bytes()
    (tmp_path / "volume-1.nii.gz").write_bytes(data[: len(data) // 3])  # labels fine, image truncated
    ds = make_dataset(find_cases(tmp_path), "liver", EXACT, batch_size=2)
    with pytest.raises(Exception, match=r"volume-1\.nii\.gz.*truncated"):
        _collect(ds)
    with pytest.raises(DataError, match=r"volume-1\.nii\.gz"):
        make_dataset(find_cases(tmp_path), "liver", EXACT, batch_size=2, cache_dir=str(tmp_path / "c"))
    assert not [p for p in (tmp_path / "c").rglob("*") if "volume-1" in p.name]


SHARED_CACHE_SCRIPT = """
import json, sys
from keras_unet3plus.data import find_cases
from keras_unet3plus.data.cache import SliceCache
from keras_unet3plus.data.preprocess import PreprocessConfig
import keras_unet3plus.data.cache as C
root, cache_dir, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
built = []
build = C.SliceCache.build
def counting_build(self, case):
    built.append(case.case_id)
    return build(self, case)
C.SliceCache.build = counting_build
cases = find_cases(root)
cache = SliceCache(cache_dir, "liver", PreprocessConfig(image_size=32))
entries = cache.ensure(cases, first=cases[rank::2])
print(json.dumps({"built": built, "complete": [e is not None for e in entries]}))
"""


def test_two_workers_build_the_cache_once(phantom_lits, tmp_path):
    """Two processes (the workers of a multi-worker run, or two runs) sharing one cache folder:
    every case is built exactly once, both end with every entry, no marker is left."""
    import json
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(SHARED_CACHE_SCRIPT)
    cache_dir = tmp_path / "cache"
    env = dict(__import__("os").environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(phantom_lits), str(cache_dir), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    built = results[0]["built"] + results[1]["built"]
    assert sorted(built) == sorted({"volume-0", "volume-1", "volume-2", "volume-3"}), results
    assert all(all(r["complete"]) for r in results)
    assert not list(cache_dir.rglob("*.building"))


def test_a_dead_builders_marker_is_taken_over(phantom_lits, tmp_path):
    from keras_unet3plus.data import find_cases
    from keras_unet3plus.data.cache import SliceCache

    cases = find_cases(phantom_lits)
    cache = SliceCache(tmp_path / "cache", "liver", PreprocessConfig(image_size=32))
    dead = subprocess_pid_that_is_gone()
    cache._marker(cases[0]).write_text(f"{__import__('socket').gethostname()} {dead}")
    entries = cache.ensure(cases[:1], timeout=30)
    assert entries[0] is not None and not cache._marker(cases[0]).exists()


def subprocess_pid_that_is_gone() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
