"""2.5D preprocessing (shared by training and inference) and case splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keras_unet3plus.data import (
    Case,
    PreprocessConfig,
    label_to_slices,
    slices_to_volume,
    split_cases,
    volume_to_slices,
)
from keras_unet3plus.data.preprocess import context_indices, window_hu
from keras_unet3plus.data.splits import default_test_size


def _volume(shape=(40, 36, 6), seed=0):
    return np.random.default_rng(seed).integers(-400, 400, size=shape).astype(np.int16)


def test_config_round_trip_and_task_default():
    cfg = PreprocessConfig(image_size=64, resize_mode="crop")
    assert cfg.hu_window is None and cfg.channels == 3
    liver = cfg.for_task("liver")
    assert liver.hu_window == (-200.0, 250.0)
    assert cfg.for_task("spleen").hu_window == (-160.0, 240.0)
    d = json.loads(json.dumps(liver.to_dict()))
    assert PreprocessConfig.from_dict(d) == liver
    assert PreprocessConfig(hu_window=(-100, 100)).for_task("liver").hu_window == (-100.0, 100.0)
    with pytest.raises(ValueError, match="hu_window"):
        PreprocessConfig(hu_window=(100, -100))
    with pytest.raises(ValueError, match="unknown"):
        PreprocessConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="for_task"):
        volume_to_slices(_volume(), cfg)


def test_window_scales_to_unit_interval():
    out = window_hu(np.array([-1000, -200, 25, 250, 3000]), (-200, 250))
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    assert out.dtype == np.float32


def test_channels_are_neighbouring_slices_with_edges_replicated():
    vol = _volume()
    cfg = PreprocessConfig(hu_window=(-200, 250), image_size=40, resize_mode="crop")  # crop: exact
    x = volume_to_slices(vol, PreprocessConfig(hu_window=(-200, 250), image_size=48, resize_mode="crop"))
    assert x.shape == (6, 48, 48, 3) and x.dtype == np.float32
    x = volume_to_slices(vol[:, :36], cfg)  # 40 x 36 -> 40 x 40 (zero pad in W)
    w = window_hu(vol[:, :36], cfg.hu_window)
    for z in range(6):
        for ch, src in enumerate((max(z - 1, 0), z, min(z + 1, 5))):
            np.testing.assert_array_equal(x[z, :, 2:38, ch], w[:, :, src])
    np.testing.assert_array_equal(context_indices([0, 5], 6, 2), [[0, 0, 0, 1, 2], [3, 4, 5, 5, 5]])
    x5 = volume_to_slices(vol, PreprocessConfig(hu_window=(-200, 250), image_size=40, context=2, resize_mode="crop"))
    assert x5.shape[-1] == 5


def test_resize_mode_and_inverse():
    vol = _volume((64, 64, 5))
    cfg = PreprocessConfig(hu_window=(-200, 250), image_size=32)
    x = volume_to_slices(vol, cfg)
    assert x.shape == (5, 32, 32, 3) and 0.0 <= x.min() and x.max() <= 1.0
    # identity size leaves values untouched
    same = volume_to_slices(vol, PreprocessConfig(hu_window=(-200, 250), image_size=64))
    np.testing.assert_allclose(same[..., 1], np.moveaxis(window_hu(vol, (-200, 250)), 2, 0), atol=1e-6)
    # a smooth probability map survives down- and up-sampling
    label = np.zeros((64, 64, 5), np.uint8)
    label[10:40, 20:50, 1:4] = 1
    m = label_to_slices(label, cfg)
    assert m.shape == (5, 32, 32, 1) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    back = slices_to_volume(m.astype(np.float32), (64, 64))
    assert back.shape == (64, 64, 5, 1)
    rec = back[..., 0] > 0.5
    assert (rec == label.astype(bool)).mean() > 0.99
    # crop mode inverse: padded border is background
    crop = PreprocessConfig(hu_window=(-200, 250), image_size=48, resize_mode="crop")
    probs = np.zeros((5, 48, 48, 3), np.float32)
    probs[..., 1] = 1.0
    vol_probs = slices_to_volume(probs, (64, 64), crop)
    assert vol_probs.shape == (64, 64, 5, 3)
    assert vol_probs[0, 0, 0].tolist() == [1.0, 0.0, 0.0] and vol_probs[32, 32, 0].tolist() == [0.0, 1.0, 0.0]
    ml = label_to_slices(label, crop)
    np.testing.assert_array_equal(slices_to_volume(ml.astype(np.float32), (64, 64), crop)[..., 0], label)


def _disc(shape, centre, radius):
    x, y = np.ogrid[: shape[0], : shape[1]]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2


def _extent(mask2d):
    xs, ys = np.nonzero(mask2d)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_pad_mode_keeps_the_aspect_ratio_and_inverts_exactly():
    """A round organ on a cropped 80 x 56 field of view stays round at the model's size ("pad"),
    where "resize" squeezes it by 80/56; the pad is air (0 after windowing); and the way back puts
    the mask where it was."""
    shape = (80, 56, 3)
    disc = np.repeat(_disc(shape, (44, 30), 15)[..., None], 3, axis=2)
    hu = np.where(disc, 100, -50).astype(np.int16)
    pad = PreprocessConfig(image_size=40).for_task("liver")
    assert PreprocessConfig().resize_mode == "pad"  # the default for new models
    m = label_to_slices(disc.astype(np.uint8), pad)[1, ..., 0]
    w, h = _extent(m)
    assert abs(w - h) <= 1 and abs(w - 31 * 40 / 80) <= 1.5  # round, scaled by S / max(X, Y)
    stretched = label_to_slices(disc.astype(np.uint8), PreprocessConfig(image_size=40, resize_mode="resize"))
    w2, h2 = _extent(stretched[1, ..., 0])
    assert h2 / w2 > 1.3  # the old mode distorts by ~80/56
    x = volume_to_slices(hu, pad)
    assert np.all(x[:, :, :5] == 0) and np.all(x[:, :, -5:] == 0)  # 12 padded columns each side -> 6 at 40/80
    assert x[1, 20, 20, 1] > 0.5  # the body is there
    for in_plane in [(80, 56), (51, 64), (64, 64)]:
        lab = np.repeat(_disc(in_plane + (1,), (in_plane[0] // 2, in_plane[1] // 3), 12)[..., None], 2, axis=2)
        back = slices_to_volume(label_to_slices(lab.astype(np.uint8), pad).astype(np.float32), in_plane, pad)
        assert back.shape == in_plane + (2, 1)
        rec = back[..., 0] > 0.5
        assert ((rec == lab).mean()) > 0.985, in_plane  # only the rim differs (2x down and up)
        # the same as padding by hand and resizing a square: the way back cuts off the same pad
        side, top, left = max(in_plane), (max(in_plane) - in_plane[0]) // 2, (max(in_plane) - in_plane[1]) // 2
        square = np.zeros((side, side, 2), np.uint8)
        square[top : top + in_plane[0], left : left + in_plane[1]] = lab
        stretch = PreprocessConfig(image_size=40, resize_mode="resize")
        by_hand = slices_to_volume(label_to_slices(square, stretch).astype(np.float32), (side, side), stretch)
        np.testing.assert_array_equal(back, by_hand[top : top + in_plane[0], left : left + in_plane[1]])
    from keras_unet3plus.inference.postprocess import resize_labels

    labels = resize_labels(label_to_slices(lab.astype(np.uint8), pad)[..., 0], in_plane, pad)
    assert labels.shape == in_plane + (2,) and (labels.astype(bool) == lab).mean() > 0.99


def _fake_cases(n):
    return [Case(f"case-{i:03d}", Path(f"/x/{i}.nii.gz"), Path(f"/y/{i}.nii.gz")) for i in range(n)]


def test_lits_default_split_sizes():
    cases = _fake_cases(131)
    s = split_cases(cases, seed=0, val_fraction=0.0)
    assert s.sizes() == (103, 0, 28)
    s = split_cases(cases, seed=0)
    assert s.sizes() == (93, 10, 28)
    assert {c.case_id for c in s.test} == {c.case_id for c in split_cases(cases, 0, val_fraction=0.0).test}


def test_split_deterministic_disjoint_order_independent():
    cases = _fake_cases(40)
    a = split_cases(cases, seed=3, val_fraction=0.2)
    b = split_cases(list(reversed(cases)), seed=3, val_fraction=0.2)
    assert a.to_dict() == b.to_dict()
    ids = [set(a.to_dict()[k]) for k in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == {c.case_id for c in cases}
    assert split_cases(cases, seed=4).to_dict()["test"] != a.to_dict()["test"]
    assert a.sizes() == (25, 6, 9)  # test: round(40 * 28 / 131) = 9
    assert default_test_size(20) == 4 and default_test_size(3) == 1 and default_test_size(2) == 0
    assert split_cases(cases, n_test=5, val_fraction=0).sizes() == (35, 0, 5)
    with pytest.raises(ValueError):
        split_cases(cases, n_test=41)


@pytest.mark.parametrize("context,mode", [(1, "resize"), (2, "resize"), (1, "crop"), (0, "resize"), (1, "pad")])
def test_planes_resized_once_equal_stacks_resized_whole(context, mode):
    """volume_to_slices resizes each plane once and gathers the stacks: it must equal resizing
    every (X, Y, 2c+1) stack as a whole, bit for bit, across chunk borders and volume edges."""
    from keras_unet3plus.data.preprocess import resize_images, stack_context

    rng = np.random.default_rng(context)
    hu = rng.normal(0, 400, (70, 90, 37)).astype(np.int16)  # 37 slices: chunks of 16 plus a rest
    cfg = PreprocessConfig(image_size=64, context=context, resize_mode=mode).for_task("liver")
    stacks = window_hu(stack_context(hu, np.arange(hu.shape[2]), context), cfg.window())
    expected = resize_images(stacks, cfg).numpy()
    got = volume_to_slices(hu, cfg)
    assert got.shape == (37, 64, 64, 2 * context + 1)
    np.testing.assert_array_equal(got, expected)
