"""Tests for keras_unet3plus.metrics: streaming Dice/IoU and the per-volume LiTS metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import keras
from scipy import ndimage
from scipy.spatial.distance import cdist

from keras_unet3plus import metrics as M
from keras_unet3plus.metrics import volume as V

REPO = Path(__file__).resolve().parents[1]
# Backend-independent but for the tf.distribute test; tests/test_backends.py runs this module under JAX.
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow backend only")


# ====================================================================== training metrics
def _pooled_dice(trues, preds):
    t = np.concatenate([a.ravel() for a in trues]) > 0.5
    p = np.concatenate([a.ravel() for a in preds]) >= 0.5
    return 2 * (t & p).sum() / (t.sum() + p.sum())


def test_dice_iou_stream_pooled_sums_not_batch_average():
    # Batch 1: tiny object, missed. Batch 2: large object, found. Pooled Dice != mean of the two.
    t1 = np.zeros((1, 8, 8, 1), "float32")
    t1[0, 0, 0] = 1
    p1 = np.zeros_like(t1)
    t2 = np.zeros((1, 8, 8, 1), "float32")
    t2[0, :4, :4] = 1
    p2 = t2 * 0.9
    dice, iou = M.DiceScore(), M.IoUScore()
    for t, p in ((t1, p1), (t2, p2)):
        dice.update_state(t, p)
        iou.update_state(t, p)
    assert float(dice.result()) == pytest.approx(2 * 16 / (17 + 16))
    assert float(dice.result()) == pytest.approx(_pooled_dice([t1, t2], [p1, p2]))
    assert float(iou.result()) == pytest.approx(16 / 17)
    dice.reset_state()
    assert float(dice.result()) == 1.0  # nothing seen: empty convention


def test_threshold_and_empty_convention():
    t = np.zeros((2, 4, 4, 1), "float32")
    p = np.full((2, 4, 4, 1), 0.4, "float32")
    m = M.DiceScore(threshold=0.5)
    m.update_state(t, p)
    assert float(m.result()) == 1.0  # both empty
    m2 = M.DiceScore(threshold=0.3)
    m2.update_state(t, p)
    assert float(m2.result()) == 0.0  # predicted everywhere, nothing there


def test_multiclass_argmax_per_class_and_mean():
    labels = np.array([[0, 1, 1, 2], [2, 2, 0, 1]], "int32").reshape(1, 2, 4, 1)
    pred_labels = np.array([[0, 1, 2, 2], [2, 0, 0, 1]], "int32").reshape(1, 2, 4)
    probs = np.eye(3, dtype="float32")[pred_labels] * 0.8 + 0.2 / 3
    # class 1: G = 3, P = 2, I = 2 -> Dice 0.8, IoU 2/3; class 2: G = 3, P = 3, I = 2 -> Dice 2/3, IoU 0.5
    expected_dice = {1: 0.8, 2: 2 / 3}
    expected_iou = {1: 2 / 3, 2: 0.5}
    for k in (1, 2):
        d = M.DiceScore(num_classes=3, class_id=k)
        d.update_state(labels, probs)
        assert float(d.result()) == pytest.approx(expected_dice[k])
        i = M.IoUScore(num_classes=3, class_id=k)
        i.update_state(labels, probs)
        assert float(i.result()) == pytest.approx(expected_iou[k])
    mean = M.DiceScore(num_classes=3)
    mean.update_state(labels, probs)
    assert float(mean.result()) == pytest.approx((0.8 + 2 / 3) / 2)
    with_bg = M.DiceScore(num_classes=3, include_background=True)
    with_bg.update_state(labels, probs)
    # class 0: G = 2, P = 3, I = 2 -> Dice 0.8
    assert float(with_bg.result()) == pytest.approx((0.8 + 0.8 + 2 / 3) / 3)
    # A one-hot y_true gives the same result.
    onehot = M.DiceScore(num_classes=3)
    onehot.update_state(np.eye(3, dtype="float32")[labels[..., 0]], probs)
    assert float(onehot.result()) == pytest.approx(float(mean.result()))


def test_sample_weight_and_channel_check():
    t = np.zeros((2, 4, 4, 1), "float32")
    t[:, :2] = 1
    p = np.zeros_like(t)
    p[0] = t[0]  # sample 0 perfect, sample 1 empty prediction
    m = M.DiceScore()
    m.update_state(t, p, sample_weight=np.array([1.0, 0.0], "float32"))
    assert float(m.result()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="channels"):
        M.DiceScore(num_classes=3).update_state(t, p)


def test_metric_serialization():
    m = M.IoUScore(num_classes=3, class_id=2, threshold=0.4, name="iou_tumour")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert type(restored) is M.IoUScore
    assert restored.get_config() == m.get_config()


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_unet3plus.metrics import DiceScore, IoUScore
    rng = np.random.default_rng(0)
    # Object sizes differ a lot between samples, so per-replica ratios would not average to the pooled value.
    t = np.zeros((8, 16, 16, 1), "float32"); p = np.zeros_like(t)
    for i in range(8):
        s = 1 + 2 * i
        t[i, :s, :s] = 1
        p[i, :s, : max(1, s - i)] = 0.9
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        dice, iou = DiceScore(), IoUScore()
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((t, p)).batch(4))
    @tf.function
    def step(a, b):
        strategy.run(lambda x, y: (dice.update_state(x, y), iou.update_state(x, y)), args=(a, b))
    n = 0
    for a, b in ds:
        step(a, b); n += 1
    tt, pp = t > 0.5, p >= 0.5
    inter = (tt & pp).sum()
    print("RESULT", n, float(dice.result()), 2 * inter / (tt.sum() + pp.sum()),
          float(iou.result()), inter / (tt | pp).sum())
    """
)


@tensorflow_only
def test_streaming_metrics_exact_under_mirrored_strategy():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="3"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout + proc.stderr
    _, n, dice, dice_ref, iou, iou_ref = line[0].split()
    assert int(n) == 2
    assert float(dice) == pytest.approx(float(dice_ref), rel=1e-6)
    assert float(iou) == pytest.approx(float(iou_ref), rel=1e-6)


def test_metrics_in_compile_logs():
    inp = keras.Input((8, 8, 1))
    seg = keras.layers.Conv2D(1, 1, activation="sigmoid", name="seg")(inp)
    model = keras.Model(inp, {"seg": seg})
    model.compile("sgd", loss={"seg": "binary_crossentropy"}, metrics={"seg": [M.DiceScore(), M.IoUScore()]})
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    logs = model.evaluate(x, {"seg": (x > 0.5).astype("float32")}, verbose=0, return_dict=True)
    # Single-output models log the bare metric names; multi-output ones prefix the output name.
    assert {"dice", "iou"} <= set(logs)
    assert 0.0 <= logs["dice"] <= 1.0


# ====================================================================== volume metrics
def _cube(shape, start, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def _brute_force(pred, gt, spacing):
    """Independent reference: pairwise distances between surface voxel coordinates (mm)."""
    st = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
    sp = np.argwhere(pred & ~ndimage.binary_erosion(pred, st)) * np.asarray(spacing)
    sg = np.argwhere(gt & ~ndimage.binary_erosion(gt, st)) * np.asarray(spacing)
    d = cdist(sp, sg)
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return pooled.mean(), pooled.max(), np.percentile(pooled, 95)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_two_cubes_offset_by_k(k, spacing):
    n = 6
    gt = _cube((16, 14, 14), (3, 4, 4), n)
    pred = _cube((16, 14, 14), (3 + k, 4, 4), n)  # shifted k voxels along axis 0
    row = V.evaluate_case(pred, gt, spacing)
    assert row["dice"] == pytest.approx((n - k) / n)
    assert row["jaccard"] == pytest.approx((n - k) / (n + k))
    assert row["voe"] == pytest.approx(2 * k / (n + k))
    assert row["rvd"] == 0.0
    assert row["mssd"] == pytest.approx(k * spacing[0])  # Hausdorff = the shift in mm
    assert (row["tp"], row["fp"], row["fn"]) == ((n - k) * n * n, k * n * n, k * n * n)
    assd_ref, hd_ref, hd95_ref = _brute_force(pred, gt, spacing)
    assert row["assd"] == pytest.approx(assd_ref)
    assert row["mssd"] == pytest.approx(hd_ref)
    assert row["hd95"] == pytest.approx(hd95_ref)


def test_single_voxels_offset_anisotropic_by_hand():
    gt = np.zeros((5, 5, 5), bool)
    gt[1, 2, 2] = True
    pred = np.zeros_like(gt)
    pred[4, 2, 2] = True
    row = V.evaluate_case(pred, gt, spacing=(2.5, 0.8, 0.8))
    # Every surface distance is 3 voxels * 2.5 mm.
    assert row["assd"] == row["mssd"] == row["hd95"] == pytest.approx(7.5)
    assert row["dice"] == 0.0 and row["voe"] == 1.0 and row["rvd"] == 0.0
    # Shift along a 0.8 mm axis instead, diagonal neighbour: sqrt((1*2.5)^2 + (2*0.8)^2).
    pred2 = np.zeros_like(gt)
    pred2[2, 4, 2] = True
    assert V.mssd(pred2, gt, (2.5, 0.8, 0.8)) == pytest.approx(np.hypot(2.5, 1.6))


def test_sphere_against_itself():
    zz, yy, xx = np.mgrid[:21, :21, :21]
    sphere = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 7**2
    row = V.evaluate_case(sphere, sphere, spacing=(1.5, 0.8, 0.8))
    assert row["dice"] == 1.0 and row["jaccard"] == 1.0 and row["voe"] == 0.0 and row["rvd"] == 0.0
    assert row["assd"] == row["mssd"] == row["hd95"] == 0.0


def test_rvd_sign_and_random_blobs_against_brute_force():
    rng = np.random.default_rng(0)
    gt = ndimage.binary_opening(rng.random((14, 16, 12)) > 0.45, iterations=1)
    pred = ndimage.binary_dilation(gt)
    assert V.rvd(pred, gt) == pytest.approx((pred.sum() - gt.sum()) / gt.sum())
    assert V.rvd(pred, gt) > 0 and V.rvd(gt, pred) < 0
    spacing = (3.0, 0.9, 1.1)
    ref = _brute_force(pred, gt, spacing)
    got = (V.assd(pred, gt, spacing), V.mssd(pred, gt, spacing), V.hd95(pred, gt, spacing))
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_connectivity_changes_the_surface():
    ball = ndimage.binary_dilation(np.pad(np.ones((1, 1, 1), bool), 5), iterations=3)  # an octahedron
    d6 = V.surface_distances(ball, ball, connectivity=1)
    d26 = V.surface_distances(ball, ball)
    assert d26[0].size > d6[0].size  # full connectivity marks more voxels as surface
    with pytest.raises(ValueError, match="connectivity"):
        V.surface_distances(ball, ball, connectivity=4)


def test_empty_mask_conventions():
    empty = np.zeros((6, 6, 6), bool)
    full = _cube((6, 6, 6), (1, 1, 1), 3)
    both = V.evaluate_case(empty, empty, spacing=(1, 1, 2))
    assert both["dice"] == 1.0 and both["jaccard"] == 1.0 and both["voe"] == 0.0 and both["rvd"] == 0.0
    assert both["assd"] == both["mssd"] == both["hd95"] == 0.0
    fp = V.evaluate_case(full, empty)  # ground truth empty
    assert fp["dice"] == 0.0 and fp["voe"] == 1.0 and fp["rvd"] == float("inf")
    assert fp["assd"] == fp["mssd"] == fp["hd95"] == float("inf")
    fn = V.evaluate_case(empty, full)  # prediction empty
    assert fn["dice"] == 0.0 and fn["voe"] == 1.0 and fn["rvd"] == -1.0
    assert fn["hd95"] == float("inf")
    lits = V.evaluate_case(empty, full, empty_distance=0.0)
    assert lits["assd"] == lits["mssd"] == 0.0
    for row in (both, fp, fn, lits):
        assert not any(np.isnan(v) for v in row.values())
    with pytest.raises(ValueError, match="non-empty"):
        V.surface_distances(empty, full)


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        V.dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        V.assd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1, 1))
    with pytest.raises(ValueError, match="positive"):
        V.assd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1, 0, 1))


def test_two_dimensional_masks_work():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True
    pred = np.roll(gt, 2, axis=1)
    assert V.mssd(pred, gt, spacing=(1.0, 0.5)) == pytest.approx(1.0)
    assert V.dice(pred, gt) == pytest.approx(0.5)


def test_global_dice_and_summarize_by_hand():
    a_gt = _cube((8, 8, 8), (0, 0, 0), 2)  # 8 voxels
    a_pr = _cube((8, 8, 8), (0, 0, 0), 2)  # perfect: tp 8
    b_gt = _cube((8, 8, 8), (0, 0, 0), 4)  # 64 voxels
    b_pr = _cube((8, 8, 8), (2, 0, 0), 4)  # tp 32, fp 32, fn 32
    c_gt = np.zeros((8, 8, 8), bool)  # empty gt, empty pred
    c_pr = np.zeros((8, 8, 8), bool)
    pairs = [(a_pr, a_gt), (b_pr, b_gt), (c_pr, c_gt)]
    expected_global = 2 * 40 / (2 * 40 + 32 + 32)
    assert V.global_dice(pairs) == pytest.approx(expected_global)
    acc = V.GlobalDice()
    for p, g in pairs:
        acc.update(p, g)
    assert acc.result() == pytest.approx(expected_global)

    rows = [V.evaluate_case(p, g) for p, g in pairs] + [V.evaluate_case(a_pr, c_gt)]  # + an FP-only case
    summary = V.summarize(rows)
    dices = [1.0, 0.5, 1.0, 0.0]
    assert summary["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert summary["dice"]["std"] == pytest.approx(np.std(dices))
    assert summary["dice"]["n"] == 4 and summary["dice"]["n_nonfinite"] == 0
    assert summary["mssd"]["n"] == 3 and summary["mssd"]["n_nonfinite"] == 1
    assert summary["mssd"]["mean"] == pytest.approx(np.mean([0.0, 2.0, 0.0]))
    assert summary["global_dice"] == pytest.approx(2 * 40 / (2 * 40 + 40 + 32))
    with pytest.raises(ValueError):
        V.summarize([])
