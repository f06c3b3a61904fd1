"""build(): architectures x backbones, deep supervision, CGM gate, save/load, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import keras_unet3plus as ku
from keras_unet3plus.complexity import count
from keras_unet3plus.encoders import BACKBONES

TINY = dict(filters=(4, 8, 16, 32, 64), cat_channels=4)
ARCHS = ("unet3plus", "unet", "unet++")
SIDES = {
    "unet3plus": ["side_2", "side_3", "side_4", "side_5"],
    "unet": ["side_2", "side_3", "side_4", "side_5"],
    "unet++": ["side_2", "side_3", "side_4"],
}


def _image(batch=2, size=64, channels=3, seed=0):
    return np.random.default_rng(seed).random((batch, size, size, channels), dtype=np.float32)


# every backbone under UNet 3+, and every architecture over the plain encoder and over two
# backbones of different families (the decoders meet backbones only through their feature list)
ARCH_BACKBONE = [("unet3plus", b) for b in ("unet", *BACKBONES)] + [
    (a, b) for a in ARCHS if a != "unet3plus" for b in ("unet", "vgg16", "efficientnetv2b0")
]


@pytest.mark.parametrize("arch,backbone", ARCH_BACKBONE)
def test_output_names_and_shapes_every_architecture_and_backbone(arch, backbone):
    model = ku.build((64, 64, 3), architecture=arch, backbone=backbone, deep_supervision=True, cgm=True, **TINY)
    assert sorted(model.output_names) == sorted(["seg", *SIDES[arch], "cls"])
    for name in ["seg", *SIDES[arch]]:
        assert tuple(model.output[name].shape) == (None, 64, 64, 1), name
    assert tuple(model.output["cls"].shape) == (None, 2)
    keras.backend.clear_session()


@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("cgm", [True, False])
def test_forward_pass_switches(deep_supervision, cgm):
    model = ku.build((64, 64, 1), deep_supervision=deep_supervision, cgm=cgm, **TINY)
    out = model.predict(_image(channels=1), verbose=0)
    expected = {"seg"} | (set(SIDES["unet3plus"]) if deep_supervision else set()) | ({"cls"} if cgm else set())
    assert set(out) == expected
    assert out["seg"].shape == (2, 64, 64, 1)
    assert np.all((out["seg"] >= 0) & (out["seg"] <= 1))
    if cgm:
        assert out["cls"].shape == (2, 2)


def _set_cgm_decision(model, present: bool):
    conv = model.get_layer("cgm_conv")
    kernel, _ = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.array([-8.0, 8.0] if present else [8.0, -8.0], np.float32)])


@pytest.mark.parametrize("present", [True, False])
def test_cgm_gate_zeroes_or_keeps_segmentation(present):
    model = ku.build((64, 64, 3), **TINY)
    _set_cgm_decision(model, present)
    x = _image()
    raw = model.predict(x, verbose=0)
    gated = ku.deploy_model(model).predict(x, verbose=0)
    assert set(gated) == {"seg"}
    assert raw["seg"].max() > 0.0  # something to gate
    if present:
        np.testing.assert_allclose(gated["seg"], raw["seg"], rtol=0, atol=1e-6)
    else:
        assert np.all(gated["seg"] == 0.0)


def test_deploy_model_threshold_and_all_outputs():
    model = ku.build((64, 64, 3), num_classes=3, **TINY)
    _set_cgm_decision(model, True)
    deploy = ku.deploy_model(model, threshold=0.5, all_outputs=True)
    out = deploy.predict(_image(), verbose=0)
    assert set(out) == {"seg", "side_2", "side_3", "side_4", "side_5", "cls"}
    assert out["seg"].shape == (2, 64, 64, 1)
    labels = np.unique(out["seg"])
    assert set(labels.tolist()) <= {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(out["seg"][..., 0], np.argmax(model.predict(_image(), verbose=0)["seg"], -1))


def test_multiclass_softmax_sums_to_one():
    out = ku.build((64, 64, 3), num_classes=3, **TINY).predict(_image(), verbose=0)
    assert out["seg"].shape == (2, 64, 64, 3)
    np.testing.assert_allclose(out["seg"].sum(-1), 1.0, atol=1e-5)


def test_fully_convolutional_input():
    model = ku.build((None, None, 3), **TINY)
    for size in (64, 96):
        assert model.predict(_image(1, size), verbose=0)["seg"].shape == (1, size, size, 1)


def test_save_load_round_trip_safe_mode(tmp_path):
    from helpers import assert_save_reload_same

    model = ku.build((64, 64, 3), **TINY)
    x = _image()
    loaded = assert_save_reload_same(model, x, tmp_path / "m.keras")
    reloaded = assert_save_reload_same(ku.deploy_model(loaded, threshold=0.5), x, tmp_path / "d.keras")
    np.testing.assert_array_equal(
        reloaded.predict(x, verbose=0)["seg"], ku.deploy_model(model, threshold=0.5).predict(x, verbose=0)["seg"]
    )


def test_trains_with_fit():
    model = ku.build((64, 64, 3), architecture="unet3plus", **TINY)
    # eager-compiled graph (no XLA): test_losses' end-to-end test covers Keras' default jit_compile
    model.compile("adam", loss={name: "binary_crossentropy" for name in model.output_names}, jit_compile=False)
    x = _image(4)
    y = (x[..., :1] > 0.5).astype("float32")
    targets = {name: y for name in model.output_names if name != "cls"}
    targets["cls"] = np.tile([[0.0, 1.0]], (4, 1)).astype("float32")
    before = [w.numpy().copy() for w in model.trainable_weights[:2]]
    history = model.fit(x, targets, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights[:2]))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ku.build((64, 64, 3), **TINY)
        assert model.get_layer("dec1_fuse_conv").compute_dtype == policy.split("_")[1]
        out = model.predict(_image(), verbose=0)
        for value in out.values():
            assert value.dtype == np.float32 and np.isfinite(value).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_paper_parameter_counts():
    """The official code's counts (paper Table 1, 'VGG-16' column): exact."""
    counts = {
        ("unet3plus", False, False): 26_971_777,
        ("unet3plus", True, False): 26_989_637,
        ("unet3plus", True, True): 26_991_687,
        ("unet", False, False): 39_396_033,
        ("unet++", True, False): 47_176_132,
    }
    for (arch, ds, cgm), expected in counts.items():
        model = ku.build((320, 320, 3), architecture=arch, deep_supervision=ds, cgm=cgm)
        assert count(model).trainable_params == expected, (arch, ds, cgm)
        keras.backend.clear_session()


def test_efficient_decoder_same_parameters_fewer_flops():
    paper = count(ku.build((320, 320, 3), decoder="paper"))
    efficient = count(ku.build((320, 320, 3), decoder="efficient"))
    assert paper.trainable_params == efficient.trainable_params
    assert 308e9 < paper.macs < 310e9  # the official code's ~309 GMAC at 320x320
    assert efficient.macs < 0.6 * paper.macs


def test_local_backbone_weights_are_loaded(tmp_path):
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg16.weights.h5"
    reference.save_weights(path)
    model = ku.build((64, 64, 3), backbone="vgg16", weights=str(path), **TINY)
    for name in ("block1_conv1", "block5_conv3"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_imagenet_weights_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        ku.build((64, 64, 3), backbone="resnet101", weights="imagenet")


def test_corrupt_weights_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.weights.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="broken.weights.h5"):
        ku.build((64, 64, 3), backbone="vgg16", weights=str(bad), **TINY)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(100, 64, 3)), "multiple of 16"),
        (dict(input_shape=(48, 48, 3), backbone="resnet50"), "multiple of 32"),
        (dict(input_shape=(64, 64)), "height, width, channels"),
        (dict(input_shape=(64, 64, 0)), "channels"),
        (dict(architecture="segnet"), "architecture"),
        (dict(backbone="resnet18"), "backbone must be one of"),
        (dict(num_classes=0), "num_classes"),
        (dict(filters=(8, 16, 32)), "5 positive ints"),
        (dict(cat_channels=0), "cat_channels"),
        (dict(decoder="fast"), "decoder must be one of"),
        (dict(decoder="efficient", architecture="unet"), "full-scale"),
        (dict(weights="imagenet"), "no pretrained weights"),
        (dict(cgm_dropout=1.5), "cgm_dropout"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = dict(input_shape=(64, 64, 3), **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ku.build(**args)


def test_deploy_model_rejects_foreign_model():
    inp = keras.Input((8, 8, 1))
    other = keras.Model(inp, {"mask": keras.layers.Conv2D(1, 1)(inp)})
    with pytest.raises(ValueError, match="no 'seg' output"):
        ku.deploy_model(other)
