"""Tests for keras_unet3plus.losses: MS-SSIM maths, NaN-free gradients, hybrid/DS/CGM wiring, saving.

Backend-independent except where marked `tensorflow_only`: tests/test_backends.py runs this module
under JAX too. TensorFlow stays a test dependency on every backend (tf.image.ssim_multiscale is the
reference MS-SSIM; tf.data feeds `fit`, which Keras accepts on any backend).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_unet3plus
from keras_unet3plus import losses as L

BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow backend only")
_np = keras.ops.convert_to_numpy


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _correlated(shape: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    x = rng.random(shape).astype("float32")
    y = np.clip(x + 0.2 * rng.standard_normal(shape), 0.0, 1.0).astype("float32")
    return x, y


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _value_and_grad(fn, pred: np.ndarray, dtype: str = "float32"):
    """``fn(pred)`` and its gradient with respect to ``pred`` (given in ``dtype``), on the backend
    that runs: numpy value, numpy float32 gradient, and the value's dtype name."""
    if BACKEND == "tensorflow":
        var = tf.Variable(tf.cast(pred, dtype))
        with tf.GradientTape() as tape:
            value = fn(var)
        grad = tape.gradient(value, var)
        grad = None if grad is None else tf.cast(grad, tf.float32).numpy()
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        value, grad = jax.value_and_grad(fn)(jnp.asarray(pred, dtype))
        grad = np.asarray(grad, np.float32)
    elif BACKEND == "torch":
        import torch

        var = torch.tensor(pred, dtype=getattr(torch, dtype), requires_grad=True)
        value = fn(var)
        value.backward()
        grad = None if var.grad is None else var.grad.float().numpy()
        value = value.detach()
    else:
        pytest.skip(f"no gradient helper for the {BACKEND} backend")
    return _np(value), grad, keras.backend.standardize_dtype(value.dtype)


# ------------------------------------------------------------------ MS-SSIM configuration rule
def test_ms_ssim_config_paper_size_is_unchanged():
    assert L.ms_ssim_config(320, 320) == (11, L.MSSSIM_POWER_FACTORS)
    assert L.ms_ssim_config(161, 400) == (11, L.MSSSIM_POWER_FACTORS)


@pytest.mark.parametrize(
    "side, filt, n",
    [
        (160, 11, 4),
        (81, 11, 4),
        (80, 11, 3),
        (64, 11, 3),
        (41, 11, 3),
        (40, 11, 2),
        (21, 11, 2),
        (20, 11, 1),
        (11, 11, 1),
        (10, 9, 1),
        (9, 9, 1),
        (8, 7, 1),
        (1, 1, 1),
    ],
)
def test_ms_ssim_config_drops_coarse_scales_then_shrinks_filter(side, filt, n):
    f, factors = L.ms_ssim_config(side, side + 7)
    assert (f, len(factors)) == (filt, n)
    assert (f - 1) * 2 ** (len(factors) - 1) + 1 <= side
    # Kept factors are the finest ones, rescaled to the full set's total.
    assert sum(factors) == pytest.approx(sum(L.MSSSIM_POWER_FACTORS), abs=1e-12)
    ratios = np.asarray(factors) / np.asarray(L.MSSSIM_POWER_FACTORS[:n])
    assert np.allclose(ratios, ratios[0])


def test_ms_ssim_config_rejects_bad_filter():
    with pytest.raises(ValueError, match="odd"):
        L.ms_ssim_config(64, 64, filter_size=10)


# ------------------------------------------------------------------ MS-SSIM values
def test_ms_ssim_equals_tf_at_paper_size():
    x, y = _correlated((2, 320, 320, 1))
    ref = tf.image.ssim_multiscale(x, y, max_val=1.0)
    ours = _np(L.ms_ssim(x, y)).mean(axis=-1)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)
    assert float(tf.reduce_min(ref)) > 0.5  # no scale clamped: this is the paper's exact value


@pytest.mark.parametrize("shape", [(2, 64, 64, 2), (1, 65, 67, 1), (1, 23, 30, 1)])
def test_ms_ssim_adapted_equals_tf_with_adapted_arguments(shape):
    """Small and odd sizes: same value as TF called with the filter/factors the rule picks."""
    x, y = _correlated(shape, seed=1)
    f, factors = L.ms_ssim_config(shape[1], shape[2])
    ref = tf.image.ssim_multiscale(x, y, max_val=1.0, power_factors=factors, filter_size=f)
    ours = _np(L.ms_ssim(x, y)).mean(axis=-1)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_tf_fails_at_64_but_loss_adapts():
    x, y = _correlated((1, 64, 64, 1))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.image.ssim_multiscale(x, y, max_val=1.0)
    value = L.MSSSIMLoss()(y > 0.5, x)
    assert np.isfinite(_np(value))


def test_ms_ssim_identical_is_one():
    x, _ = _correlated((1, 32, 32, 1))
    np.testing.assert_allclose(_np(L.ms_ssim(x, x)), 1.0, atol=1e-6)


@tensorflow_only  # only a TensorFlow trace has unknown sizes; JAX and PyTorch always see concrete ones
def test_ms_ssim_needs_static_size():
    fn = tf.function(lambda a: L.ms_ssim(a, a), input_signature=[tf.TensorSpec((None, None, None, 1))])
    with pytest.raises(ValueError, match="statically"):
        fn.get_concrete_function()


# ------------------------------------------------------------------ gradients stay finite
def _grad_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(3)
    shape = (2, 48, 48, 1)
    x = rng.random(shape).astype("float32")
    cases = {
        "anticorrelated": ((x > 0.5).astype("float32"), 1.0 - (x > 0.5).astype("float32")),
        "anticorrelated_soft": (x, 1.0 - x),
        "zero_zero": (np.zeros(shape, "float32"), np.zeros(shape, "float32")),
        "one_one": (np.ones(shape, "float32"), np.ones(shape, "float32")),
        "zero_one": (np.zeros(shape, "float32"), np.ones(shape, "float32")),
        "one_zero": (np.ones(shape, "float32"), np.zeros(shape, "float32")),
    }
    return cases[name]


@pytest.mark.parametrize(
    "case", ["anticorrelated", "anticorrelated_soft", "zero_zero", "one_one", "zero_one", "one_zero"]
)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_hybrid_gradients_finite(case, dtype):
    mask, pred = _grad_case(case)
    loss_fn = L.HybridLoss()
    value, grad, value_dtype = _value_and_grad(lambda p: loss_fn(mask, p), pred, dtype)
    assert value_dtype == "float32"
    assert np.isfinite(value)
    assert grad is not None and np.all(np.isfinite(grad))


def test_ms_ssim_anticorrelated_gradient_where_tf_gives_nan():
    mask, pred = _grad_case("anticorrelated_soft")
    value, grad, _ = _value_and_grad(lambda p: L.MSSSIMLoss()(mask, p), pred)
    assert 0.99 < float(value) <= 1.0
    assert np.all(np.isfinite(grad))


def test_losses_under_mixed_precision_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inp = keras.Input((32, 32, 3))
        h = keras.layers.Conv2D(4, 3, padding="same")(inp)
        seg = keras.layers.Activation("sigmoid", dtype="float32", name="seg")(keras.layers.Conv2D(1, 1)(h))
        model = keras.Model(inp, {"seg": seg})
        model.compile(keras.optimizers.SGD(0.01), **L.for_model(model))
        mask = (_rng(0).random((2, 32, 32, 1)) > 0.5).astype("float32")
        x = _rng(1).random((2, 32, 32, 3)).astype("float32")
        history = model.fit(x, {"seg": mask}, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ------------------------------------------------------------------ individual terms
def test_focal_matches_keras_binary_and_categorical():
    rng = _rng(4)
    mask = (rng.random((2, 8, 8, 1)) > 0.6).astype("float32")
    prob = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    ours = _np(L.FocalLoss(gamma=2.0, reduction=None)(mask, prob))
    ref = _np(keras.losses.binary_focal_crossentropy(mask, prob, gamma=2.0)).mean(axis=(1, 2))
    np.testing.assert_allclose(ours, ref, rtol=1e-5)

    balanced = _np(L.FocalLoss(alpha=0.25, reduction=None)(mask, prob))
    ref_b = keras.losses.binary_focal_crossentropy(mask, prob, apply_class_balancing=True, alpha=0.25)
    np.testing.assert_allclose(balanced, _np(ref_b).mean(axis=(1, 2)), rtol=1e-5)

    labels = rng.integers(0, 3, (2, 8, 8, 1)).astype("int32")
    logits = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    soft = _softmax(logits)
    ours_c = _np(L.FocalLoss(reduction=None)(labels, soft))
    onehot = np.eye(3, dtype="float32")[labels[..., 0]]
    ref_c = _np(keras.losses.categorical_focal_crossentropy(onehot, soft, alpha=1.0, gamma=2.0)).mean(axis=(1, 2))
    np.testing.assert_allclose(ours_c, ref_c, rtol=1e-5)


def test_iou_loss_by_hand():
    mask = np.zeros((1, 4, 4, 1), "float32")
    mask[0, :2, :2] = 1  # 4 voxels
    pred = np.zeros((1, 4, 4, 1), "float32")
    pred[0, :2, :] = 0.5  # sum 4, intersection 2
    value = _np(L.IoULoss(smooth=1.0, reduction=None)(mask, pred))[0]
    assert value == pytest.approx(1 - (2 + 1) / (4 + 4 - 2 + 1))
    assert _np(L.IoULoss()(mask, mask)) == pytest.approx(0.0, abs=1e-7)
    empty = np.zeros_like(mask)
    assert _np(L.IoULoss()(empty, empty)) == pytest.approx(0.0, abs=1e-7)


def test_hybrid_is_weighted_sum_and_zero_for_perfect_prediction():
    rng = _rng(5)
    mask = (rng.random((2, 32, 32, 1)) > 0.5).astype("float32")
    prob = rng.uniform(0.01, 0.99, (2, 32, 32, 1)).astype("float32")
    parts = [_np(cls(reduction=None)(mask, prob)) for cls in (L.FocalLoss, L.MSSSIMLoss, L.IoULoss)]
    hybrid = L.HybridLoss(focal_weight=2.0, ms_ssim_weight=0.5, iou_weight=3.0, reduction=None)(mask, prob)
    np.testing.assert_allclose(_np(hybrid), 2 * parts[0] + 0.5 * parts[1] + 3 * parts[2], rtol=1e-5)
    assert float(L.HybridLoss()(mask, mask)) < 1e-4


def test_hybrid_multiclass_label_map_equals_one_hot():
    rng = _rng(6)
    labels = rng.integers(0, 3, (2, 24, 24, 1)).astype("int32")
    soft = _softmax(rng.standard_normal((2, 24, 24, 3)).astype("float32"))
    loss = L.HybridLoss(reduction=None)
    a = _np(loss(labels, soft))
    b = _np(loss(np.eye(3, dtype="float32")[labels[..., 0]], soft))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.all(np.isfinite(a))


def test_loss_rejects_wrong_mask_shape():
    with pytest.raises(ValueError, match="binary mask"):
        L.HybridLoss()(np.zeros((1, 8, 8, 2), "float32"), np.zeros((1, 8, 8, 1), "float32"))


def test_cgm_target_from_mask():
    mask = np.zeros((3, 8, 8, 1), "float32")
    mask[1, 2, 3] = 1.0
    mask[2] = 2.0  # int label map style
    pred = np.array([[0.9, 0.2], [0.3, 0.6], [0.5, 0.5]], "float32")
    value = _np(L.CGMLoss(reduction=None)(mask, pred))
    targets = np.array([[1, 0], [0, 1], [0, 1]], "float32")
    p = np.clip(pred, 1e-7, 1 - 1e-7)
    ref = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=-1)
    np.testing.assert_allclose(value, ref, rtol=1e-5)
    np.testing.assert_array_equal(_np(L.CGMLoss.presence(mask)), [0.0, 1.0, 1.0])
    # An explicit presence flag or one-hot label is accepted too.
    np.testing.assert_allclose(_np(L.CGMLoss(reduction=None)(np.array([0, 1, 1], "float32"), pred)), ref, rtol=1e-5)
    np.testing.assert_allclose(_np(L.CGMLoss(reduction=None)(targets, pred)), ref, rtol=1e-5)


# ------------------------------------------------------------------ serialization
@pytest.mark.parametrize(
    "loss",
    [
        L.FocalLoss(alpha=0.3, gamma=1.5),
        L.MSSSIMLoss(filter_size=7, power_factors=(0.5, 0.5)),
        L.IoULoss(smooth=0.5),
        L.HybridLoss(focal_weight=0.5, alpha=[0.2, 0.3, 0.5], iou_smooth=2.0, name="seg_hybrid"),
        L.CGMLoss(label_smoothing=0.1),
    ],
)
def test_losses_serialize(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


# ------------------------------------------------------------------ wiring into a model
def _tiny_model(channels: int = 1, size: int = 32) -> keras.Model:
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    act = "sigmoid" if channels == 1 else "softmax"
    seg = keras.layers.Conv2D(channels, 1, activation=act, name="seg")(h)
    side = keras.layers.Conv2D(channels, 1, activation=act, name="side_2")(h)
    cls = keras.layers.Dense(2, activation="sigmoid", name="cls")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, {"seg": seg, "side_2": side, "cls": cls})


def test_for_model_structure_and_weights():
    model = _tiny_model()
    cfg = L.for_model(model, side_weights=0.25, cls_weight=0.5, ms_ssim_weight=0.0)
    assert set(cfg) == {"loss", "loss_weights"}
    assert isinstance(cfg["loss"]["seg"], L.HybridLoss) and isinstance(cfg["loss"]["side_2"], L.HybridLoss)
    assert isinstance(cfg["loss"]["cls"], L.CGMLoss)
    assert cfg["loss_weights"] == {"seg": 1.0, "side_2": 0.25, "cls": 0.5}
    assert cfg["loss"]["seg"].ms_ssim_weight == 0.0
    assert L.for_model(model, side_weights={"side_2": 0.7})["loss_weights"]["side_2"] == 0.7
    assert L.for_model(model, side_weights=[0.3])["loss_weights"]["side_2"] == 0.3
    with pytest.raises(ValueError, match="side_2"):
        L.for_model(model, side_weights={"side_3": 1.0})


def test_for_model_rejects_unknown_output():
    inp = keras.Input((8, 8, 1))
    model = keras.Model(
        inp, {"seg": keras.layers.Identity(name="seg")(inp), "other": keras.layers.Identity(name="other")(inp)}
    )
    with pytest.raises(ValueError, match="other"):
        L.for_model(model)


def test_expand_targets():
    fn = L.expand_targets(["seg", "side_2", "cls"])
    image, targets = fn("img", "mask")
    assert image == "img" and targets == {"seg": "mask", "side_2": "mask", "cls": "mask"}
    assert fn("img", "mask", "w")[2] == "w"
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), "float32"), np.zeros((2, 8, 8, 1), "float32")))
    spec = ds.batch(2).map(L.expand_targets(_tiny_model(size=8))).element_spec
    assert set(spec[1]) == {"seg", "side_2", "cls"}


@pytest.mark.parametrize("channels", [1, 3])
def test_compiled_model_trains_saves_and_reloads(tmp_path, channels):
    model = _tiny_model(channels)
    model.compile(keras.optimizers.Adam(1e-3), **L.for_model(model, side_weights=0.5))
    rng = _rng(7)
    x = rng.random((4, 32, 32, 3)).astype("float32")
    if channels == 1:
        mask = (rng.random((4, 32, 32, 1)) > 0.7).astype("float32")
    else:
        mask = rng.integers(0, channels, (4, 32, 32, 1)).astype("int32")
    mask[0] = 0  # an empty slice: CGM target "absent"
    ds = tf.data.Dataset.from_tensor_slices((x, mask)).batch(2).map(L.expand_targets(model))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    before = model.evaluate(ds, verbose=0, return_dict=True)
    from helpers import assert_save_reload_same

    restored = assert_save_reload_same(model, x, tmp_path / "model.keras", compile=True)
    assert isinstance(restored.loss["seg"], L.HybridLoss) and isinstance(restored.loss["cls"], L.CGMLoss)
    after = restored.evaluate(ds, verbose=0, return_dict=True)
    for key in ("loss", "seg_loss", "side_2_loss", "cls_loss"):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key


@pytest.mark.skipif(not hasattr(keras_unet3plus, "build"), reason="keras_unet3plus.build not available yet")
def test_build_end_to_end_two_steps():
    model = keras_unet3plus.build(
        input_shape=(64, 64, 3),
        num_classes=1,
        filters=(8, 16, 32, 64, 128),
        cat_channels=8,
        deep_supervision=True,
        cgm=True,
    )
    assert {"seg", "side_2", "side_5", "cls"} <= set(model.output_names)
    model.compile(keras.optimizers.Adam(1e-3), **L.for_model(model))
    rng = _rng(8)
    x = rng.random((4, 64, 64, 3)).astype("float32")
    mask = np.zeros((4, 64, 64, 1), "float32")
    mask[1:, 20:40, 16:44] = 1.0
    ds = tf.data.Dataset.from_tensor_slices((x, mask)).batch(2).map(L.expand_targets(model))
    history = model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    logs = history.history
    assert {"seg_loss", "side_5_loss", "cls_loss"} <= set(logs)
    assert all(np.isfinite(v[0]) for v in logs.values())


def test_hybrid_loss_is_composed_and_old_flat_configs_load():
    """HybridLoss holds its parts' instances (each option declared once, in its part); the flat
    config of files saved before (alpha=, iou_smooth=, ... beside the weights) still loads."""
    import keras

    old = {
        "name": "seg_hybrid",
        "reduction": "sum_over_batch_size",
        "focal_weight": 0.5,
        "ms_ssim_weight": 1.0,
        "iou_weight": 1.0,
        "alpha": [0.2, 0.3, 0.5],
        "gamma": 2.0,
        "iou_smooth": 2.0,
        "power_factors": list(L.MSSSIM_POWER_FACTORS),
        "filter_size": 11,
        "filter_sigma": 1.5,
        "k1": 0.01,
        "k2": 0.03,
        "ms_ssim_eps": 1e-6,
    }
    loaded = L.HybridLoss.from_config(old)
    assert loaded.focal.alpha == [0.2, 0.3, 0.5] and loaded.iou.smooth == 2.0 and loaded.ms_ssim.eps == 1e-6
    config = loaded.get_config()
    assert "alpha" not in config and config["focal"]["alpha"] == [0.2, 0.3, 0.5]
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loaded), safe_mode=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (2, 32, 32, 1)).astype("int32")
    p = rng.dirichlet(np.ones(3), (2, 32, 32)).astype("float32")
    assert float(again(y, p)) == pytest.approx(float(loaded(y, p)), rel=1e-6)
    parts = L.HybridLoss(focal=L.FocalLoss(gamma=3.0), iou=L.IoULoss(smooth=2.0))
    assert parts.focal.gamma == 3.0 and parts.iou.smooth == 2.0
    with pytest.raises(TypeError, match="unexpected option"):
        L.HybridLoss(smoothness=1.0)


# ------------------------------------------------------------------ weighted terms, registries
LEGACY = __import__("pathlib").Path(__file__).parent / "data"


def test_hybrid_loss_is_a_weighted_sum_of_registered_terms():
    rng = _rng(3)
    y = rng.integers(0, 3, (2, 32, 32, 1)).astype("int32")
    p = rng.dirichlet(np.ones(3), (2, 32, 32)).astype("float32")
    loss = L.HybridLoss(terms=[("focal", 0.5, None), ("iou", 2.0, {"smooth": 2.0})], reduction=None)
    expected = 0.5 * _np(L.FocalLoss(reduction=None)(y, p)) + 2.0 * _np(L.IoULoss(smooth=2.0, reduction=None)(y, p))
    np.testing.assert_allclose(_np(loss(y, p)), expected, rtol=1e-6)
    assert [t for t, _, _ in loss.terms] == ["focal", "iou"] and loss.iou_weight == 2.0 and loss.iou.smooth == 2.0
    config = loss.get_config()
    assert config["terms"] == ["focal", "iou"] and "ms_ssim" not in config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss), safe_mode=True)
    np.testing.assert_allclose(_np(again(y, p)), _np(loss(y, p)), rtol=1e-6)
    # the paper's default: the three terms, summed with weight 1, in the order they always were
    assert [(t, w) for t, w, _ in L.HybridLoss().terms] == [("focal", 1.0), ("ms_ssim", 1.0), ("iou", 1.0)]
    with pytest.raises(ValueError, match="registered terms"):
        L.HybridLoss(terms=[("tversky", 1.0, None)])
    with pytest.raises(TypeError, match="'iou' term"):
        L.HybridLoss(terms=["focal"], iou_smooth=2.0)


@keras.saving.register_keras_serializable(package="keras_unet3plus_tests")
class SquaredError(keras.losses.Loss):
    """A term of the test's own: one value per sample."""

    def call(self, y_true, y_pred):
        return keras.ops.mean(keras.ops.square(keras.ops.cast(y_true, "float32") - y_pred), axis=(1, 2, 3))


def test_a_registered_term_is_one_class_and_one_line():
    L.register_term("squared_error", SquaredError)
    try:
        y = np.zeros((2, 8, 8, 1), "float32")
        p = np.full((2, 8, 8, 1), 0.5, "float32")
        loss = L.HybridLoss(terms=[("squared_error", 3.0, None)])
        assert float(loss(y, p)) == pytest.approx(0.75)
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert float(again(y, p)) == pytest.approx(0.75)
    finally:
        del L.HYBRID_TERMS["squared_error"]


def test_registered_model_losses():
    assert L.get_loss("hybrid") is L.for_model
    assert L.get_loss("dice_ce") is L.dice_ce_for_model
    with pytest.raises(ValueError, match="registered losses are .*dice_ce, hybrid"):
        L.get_loss("dice")


def test_dice_and_cross_entropy_terms_against_their_formulas():
    rng = np.random.default_rng(3)
    y = (rng.random((2, 16, 16, 1)) > 0.6).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 16, 16, 1)).astype("float32")
    inter, sizes = (y * p).sum(axis=(1, 2, 3)), y.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(L.DiceLoss(reduction=None)(y, p)), 1 - (2 * inter + 1) / (sizes + 1), rtol=1e-5)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(L.CrossEntropyLoss(reduction=None)(y, p)), bce, rtol=1e-5)
    assert float(L.DiceLoss()(y, y)) == pytest.approx(0.0, abs=1e-6)
    # K softmax channels: an int label map, background left out of the Dice, CE over the classes
    labels = rng.integers(0, 3, (2, 16, 16, 1)).astype("float32")
    probs = rng.dirichlet(np.ones(3), (2, 16, 16)).astype("float32")
    onehot = np.eye(3, dtype="float32")[labels[..., 0].astype(int)]
    fg = (2 * (onehot * probs)[..., 1:].sum(axis=(1, 2)) + 1) / (
        onehot[..., 1:].sum(axis=(1, 2)) + probs[..., 1:].sum(axis=(1, 2)) + 1
    )
    np.testing.assert_allclose(_np(L.DiceLoss(reduction=None)(labels, probs)), 1 - fg.mean(axis=-1), rtol=1e-5)
    cce = -(onehot * np.log(probs)).sum(axis=-1).mean(axis=(1, 2))
    np.testing.assert_allclose(_np(L.CrossEntropyLoss(reduction=None)(labels, probs)), cce, rtol=1e-5)


def test_dice_ce_loss_on_every_output_and_hybrid_weights_refused():
    model = keras_unet3plus.build((32, 32, 3), filters=(4, 8, 16, 32, 64), cat_channels=4)
    got = L.dice_ce_for_model(model, side_weights=0.5, cls_weight=0.3)
    assert set(got["loss"]) == {"seg", "side_2", "side_3", "side_4", "side_5", "cls"}
    assert [t for t, _, _ in got["loss"]["seg"].terms] == ["dice", "ce"]
    assert isinstance(got["loss"]["cls"], L.CGMLoss) and got["loss_weights"]["side_3"] == 0.5
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(got["loss"]["side_2"]))
    y = np.zeros((1, 32, 32, 1), "float32")
    y[0, 8:20, 8:20] = 1
    p = np.full((1, 32, 32, 1), 0.3, "float32")
    assert float(again(y, p)) == pytest.approx(float(got["loss"]["side_2"](y, p)), rel=1e-6)
    with pytest.raises(ValueError, match="no focal / MS-SSIM / IoU term: focal_weight"):
        L.dice_ce_for_model(model, focal_weight=0.5)


def test_keras_file_saved_by_the_previous_loss_code_loads_with_the_same_values():
    """tests/data/hybrid_loss_v0.*: a compiled model saved by the code before the weighted terms
    (commit 47ccb0f: HybridLoss with focal/ms_ssim/iou keywords), and the loss values it gave."""
    import json

    expected = json.loads((LEGACY / "hybrid_loss_v0.json").read_text())
    data = np.load(LEGACY / "hybrid_loss_v0.npz")
    model = keras.saving.load_model(LEGACY / "hybrid_loss_v0.keras", compile=True, safe_mode=True)
    assert isinstance(model.loss["seg"], L.HybridLoss) and isinstance(model.loss["cls"], L.CGMLoss)
    assert model.loss["seg"].focal_weight == 0.7 and model.loss["seg"].iou.smooth == 2.0
    pred = model.predict(data["x"], verbose=0)
    fresh = L.for_model(model, side_weights=0.5, focal_weight=0.7, iou_smooth=2.0, alpha=0.25, cls_weight=0.3)
    for name, value in expected["loss"].items():
        assert float(model.loss[name](data["mask"], pred[name])) == pytest.approx(value, rel=1e-5), name
        assert float(fresh["loss"][name](data["mask"], pred[name])) == pytest.approx(value, rel=1e-5), name
    targets = {k: data["mask"] for k in expected["loss"]}
    total = model.evaluate(data["x"], targets, verbose=0, return_dict=True)["loss"]
    assert float(total) == pytest.approx(expected["total"], rel=1e-5)
