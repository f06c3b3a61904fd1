"""The fast CPU inference paths (issue 16): each must give the mask the plain path gives.

Blank slices computed once, the paper decoder's upsample-then-convolve pairs in their exact cheaper
form, the decoder skipped where the CGM calls the organ absent, bf16 compute,
the export-time speed/parity record and ``--runtime auto`` choosing from it. No test times
anything: the choice is tested on records, the records on their content.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from keras_unet3plus import build
from keras_unet3plus.inference import Predictor
from keras_unet3plus.data import phantom
from keras_unet3plus.inference.predictor import run_once_per_blank
from keras_unet3plus.metrics import dice
from keras_unet3plus.modelinfo import sidecar_path
from keras_unet3plus.runtimes import KerasRuntime
from keras_unet3plus.runtimes.auto import export_candidates, file_sha256
from keras_unet3plus.runtimes.cpu import CpuInfo, _parse_cpuinfo, cpu_info, precision_note
from keras_unet3plus.runtimes.keras import split_at_classifier


@pytest.fixture(scope="module")
def volume():
    return phantom.generate_case(11, shape=(80, 72, 28))


def test_blank_slices_run_once_and_land_in_place():
    calls = []

    def run(batch):
        calls.append(len(batch))
        return batch.sum(axis=(1, 2, 3)) + 1.0, None

    batch = np.zeros((6, 4, 4, 3), np.float32)
    batch[[1, 4]] = np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3) * np.array([1, 2]).reshape(2, 1, 1, 1)
    out, cls = run_once_per_blank(run, batch)
    assert calls == [3] and cls is None  # two non-blank + one blank
    np.testing.assert_array_equal(out, run(batch)[0])


def _with_random_bn_statistics(model, seed=0):
    """Fresh BN layers are identities at inference; give them statistics so the test sees them."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape),
                    beta + rng.normal(0, 0.1, beta.shape),
                    mean + rng.normal(0, 0.1, mean.shape),
                    var * rng.uniform(0.5, 2.0, var.shape),
                ]
            )
    return model


@pytest.mark.parametrize("size", [(64, 64, 3), (None, None, 3)])
def test_fused_decoder_computes_the_paper_decoder_exactly(size):
    from keras_unet3plus.fused_decoder import fuse_upsampled_convs, fusible_pairs
    from keras_unet3plus.layers import UpsampledConv

    model = _with_random_bn_statistics(
        build(size, filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=True, cgm=True)
    )
    pairs = fusible_pairs(model)
    # every deeper-to-shallower branch of De4..De1: 1 + 2 + 3 + 4, factors 2..16
    assert len(pairs) == 10 and sorted(set(pairs.values())) == [2, 4, 8, 16]
    fused = fuse_upsampled_convs(model)
    assert sum(isinstance(layer, UpsampledConv) for layer in fused.layers) == 10 and not fusible_pairs(fused)
    rng = np.random.default_rng(1)
    for shape in [(2, 64, 64, 3)] if size[0] else [(2, 64, 64, 3), (1, 48, 80, 3)]:
        x = rng.normal(size=shape).astype(np.float32)
        want, got = model(x, training=False), fused(x, training=False)
        for name in want:
            np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), atol=2e-5, err_msg=name)
    # the unfused model is untouched, and decoders without the pairs come back as they are
    assert len(fusible_pairs(model)) == 10
    for other in (dict(decoder="efficient"), dict(architecture="unet")):
        plain = build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, **other)
        assert fuse_upsampled_convs(plain) is plain


def test_training_view_shares_the_variables_and_gives_the_same_gradients(tmp_path):
    """Training runs the paper decoder through the fused view (TrainConfig.fused_decoder): it must
    compute with the model's own variables (no copies) and give the same loss and gradients."""
    import keras
    import tensorflow as tf

    from keras_unet3plus.fused_decoder import fuse_upsampled_convs, fusible_pairs
    from keras_unet3plus.layers import UpsampledConv

    model = _with_random_bn_statistics(
        build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=True, cgm=True, cgm_dropout=0.0)
    )  # deterministic
    view = fuse_upsampled_convs(model, share_weights=True)
    assert {id(v) for v in view.trainable_variables} == {id(v) for v in model.trainable_variables}
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    y = tf.constant((rng.random((2, 64, 64, 1)) > 0.6).astype(np.float32))

    def loss_and_grads(net):
        with tf.GradientTape() as tape:
            outs = net(x, training=True)
            loss = tf.add_n(
                [tf.reduce_mean(keras.losses.binary_crossentropy(y, v)) for k, v in outs.items() if k != "cls"]
            )
            loss += tf.reduce_mean(keras.losses.categorical_crossentropy(tf.one_hot([0, 1], 2), outs["cls"]))
        return loss, tape.gradient(loss, model.trainable_variables)

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(model), loss_and_grads(view)
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)
    assert all(g is not None for g in grads_b)
    scale = max(float(np.abs(a).max()) for a in grads_a)  # biases before BN have ~0 gradients: rounding only
    for v, a, b in zip(model.trainable_variables, grads_a, grads_b):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4 * scale, err_msg=v.path)
    with pytest.raises(TypeError, match="training view"):
        view.get_layer(next(iter(fusible_pairs(model)))).get_config()
    model.save(tmp_path / "m.keras")  # the model itself saves as the paper graph
    assert not any(isinstance(layer, UpsampledConv) for layer in keras.models.load_model(tmp_path / "m.keras").layers)


def test_keras_runtime_fuses_a_model_it_loads_not_one_it_is_given(tmp_path):
    from keras_unet3plus.layers import UpsampledConv

    model = _with_random_bn_statistics(build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, cgm=True))
    model.save(tmp_path / "m.keras")
    loaded, given = KerasRuntime(tmp_path / "m.keras"), KerasRuntime(model)
    assert loaded.fused_decoder and not given.fused_decoder
    assert loaded._fast is None  # fused on first use, not at construction
    assert any(isinstance(layer, UpsampledConv) for layer in loaded.fast_model.layers)
    assert given.fast_model is model
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    (seg_f, cls_f), (seg, cls) = loaded.segment(x), given.segment(x)
    np.testing.assert_allclose(seg_f, seg, atol=2e-5)
    np.testing.assert_allclose(cls_f, cls, atol=1e-6)
    features, _ = loaded.encode(x)  # the skip-absent split runs the fused decoder too
    np.testing.assert_allclose(loaded.decode(features), seg, atol=2e-5)


@pytest.mark.parametrize("decoder", ["paper", "efficient"])
def test_split_at_classifier_is_exact(decoder):
    model = build(
        (64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=True, cgm=True, decoder=decoder
    )
    encoder, dec = split_at_classifier(model)
    x = np.random.default_rng(0).random((3, 64, 64, 3)).astype(np.float32)
    whole = model(x, training=False)
    *features, cls = encoder([x], training=False)
    assert len(features) >= 5
    np.testing.assert_array_equal(np.asarray(dec(features, training=False)), np.asarray(whole["seg"]))
    np.testing.assert_array_equal(np.asarray(cls), np.asarray(whole["cls"]))
    with pytest.raises(ValueError, match="no CGM"):
        split_at_classifier(build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, cgm=False))


def test_skip_absent_gives_the_gated_mask_with_less_decoding(trained_tiny, volume):
    model, _, info = trained_tiny
    plain = Predictor(model, info, batch_size=4).predict_volume(volume.hu)
    skipping = Predictor(model, info, batch_size=4, skip_absent=True)
    decoded = []
    rt = skipping.runtime
    original = rt.segment_present

    def counting(batch):
        seg, cls = original(batch)
        decoded.append(int((np.argmax(cls, -1) == 1).sum()))
        return seg, cls

    rt.segment_present = counting
    fast = skipping.predict_volume(volume.hu)
    assert plain.any() and dice(fast, plain) >= 0.999
    assert 0 < sum(decoded) < volume.hu.shape[2]  # some slices were not decoded
    assert dice(fast, volume.label_for("liver")) > 0.6


def test_skip_absent_refuses_a_model_without_cgm(volume, trained_tiny):
    _, _, info = trained_tiny
    model = build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, cgm=False)
    with pytest.raises(ValueError, match="skip-absent needs"):
        Predictor(model, info, skip_absent=True).predict_volume(volume.hu)


def test_bf16_mask_agrees_with_fp32(trained_tiny, volume):
    model, _, info = trained_tiny
    fp32 = Predictor(model, info).predict_volume(volume.hu)
    bf16 = Predictor(KerasRuntime(model, info=info, precision="bf16"), info).predict_volume(volume.hu)
    assert fp32.any() and dice(bf16, fp32) >= 0.97
    fused = Predictor(KerasRuntime(model, info=info, precision="bf16", fuse_decoder=True), info)
    assert fused.runtime.fused_decoder and dice(fused.predict_volume(volume.hu), fp32) >= 0.97
    with pytest.raises(ValueError, match="precision"):
        KerasRuntime(model, precision="int4")


def test_runtime_says_what_it_computes_in():
    """`predict` prints this line: a Keras model's chosen precision, an export's recorded one."""
    from keras_unet3plus.modelinfo import ModelInfo
    from keras_unet3plus.runtimes.base import Runtime

    info = ModelInfo(task="liver", preprocess={}, num_classes=1, extra={"export": {"precision": "int8"}})
    runtime = Runtime("/x/model_int8.onnx", info)
    runtime.kind = "onnxruntime"
    assert runtime.compute_precision == "int8" and runtime.describe() == "ONNX Runtime int8 (model_int8.onnx)"
    assert Runtime("/x/m.tflite", ModelInfo(task="liver", preprocess={})).compute_precision == "fp32"
    assert "VNNI" in precision_note(runtime.compute_precision, CpuInfo("x", 2, frozenset({"avx2"})))


def test_cpu_flags_decide_what_is_fast():
    name, flags = _parse_cpuinfo(
        "processor : 0\nmodel name : Some CPU\nflags : fpu avx2 avx512f avx512_bf16\n"
        "processor : 1\nmodel name : Some CPU\nflags : fpu avx2\n"
    )
    info = CpuInfo(name, 2, flags)
    assert name == "Some CPU" and info.fast_bf16 and not info.fast_int8 and info.vector == "avx512"
    assert precision_note("bf16", info) == "" and "VNNI" in precision_note("int8", info)
    assert "emulated" in precision_note("bf16", CpuInfo("x", 2, frozenset({"avx2"})))


@pytest.fixture()
def exported(trained_tiny, tmp_path):
    """A copy of the tiny model with an ONNX export beside it, as `unet3plus export` writes it."""
    pytest.importorskip("onnx")
    from keras_unet3plus import cli

    _, path, _ = trained_tiny
    model = tmp_path / "model.keras"
    shutil.copy(path, model)
    shutil.copy(sidecar_path(path), sidecar_path(model))
    assert cli.main(["export", str(model), "--to", "onnx", "--verify-slices", "8"]) == 0
    return model, tmp_path / "model.onnx"


def count_decoded_slices(runtime, counts: list[int] | None = None) -> list[int]:
    """Wrap ``runtime.decode`` to append each call's slice count to ``counts`` (returned)."""
    counts = [] if counts is None else counts
    original = runtime.decode
    runtime.decode = lambda features: counts.append(len(features[0])) or original(features)
    return counts


def test_onnx_skip_absent_pair_gives_the_gated_mask(exported, volume):
    from keras_unet3plus.runtimes.onnx import part_paths

    _, onnx = exported
    encoder, decoder = part_paths(onnx)
    assert encoder.is_file() and decoder.is_file()
    assert not sidecar_path(encoder).exists() and not sidecar_path(decoder).exists()  # parts, not models
    gated = Predictor(onnx).predict_volume(volume.hu)
    skipping = Predictor(onnx, skip_absent=True)
    rt = skipping.runtime
    decoded = count_decoded_slices(rt)
    fast = skipping.predict_volume(volume.hu)
    assert gated.any() and dice(fast, gated) >= 0.999
    assert 0 < sum(decoded) < volume.hu.shape[2]  # organ-free slices were not decoded


def test_litert_skip_absent_pair_gives_the_gated_mask_and_a_foreign_pair_is_refused(trained_tiny, volume, tmp_path):
    """The LiteRT export writes the pair too, checked at export like the ONNX one; the model's info
    records the pair's SHA-256, so a pair from another export is not used. (fp16: the tiny model's
    int8 main graph sits at the parity bound on some CPUs; the int8 pair is built below.)"""
    pytest.importorskip("ai_edge_litert")
    from keras_unet3plus.export import export_model
    from keras_unet3plus.export.litert import export_tflite_pair
    from keras_unet3plus.export.verify import phantom_slices
    from keras_unet3plus.runtimes import load_runtime
    from keras_unet3plus.runtimes.base import part_paths
    from keras_unet3plus.runtimes.litert import _Signature

    model, _, info = trained_tiny
    out = tmp_path / "model_fp16.tflite"
    result = export_model(model, "tflite", "fp16", out=out, info=info, verify_slices=8, log=lambda *_: None)
    encoder, decoder = part_paths(out)
    assert {p.name for p in result.artefacts} >= {out.name, encoder.name, decoder.name}
    assert any(row.artefact == f"{encoder.name} + {decoder.name}" and row.passed for row in result.rows)
    gated = Predictor(out).predict_volume(volume.hu)
    skipping = Predictor(out, skip_absent=True)
    decoded = count_decoded_slices(skipping.runtime)
    fast = skipping.predict_volume(volume.hu)
    assert gated.any() and dice(fast, gated) >= 0.99
    assert 0 < sum(decoded) < volume.hu.shape[2]  # organ-free slices were not decoded
    assert load_runtime(out).can_skip_absent
    data = bytearray(decoder.read_bytes())  # same size, another model: refused
    data[-1] ^= 1
    decoder.write_bytes(bytes(data))
    assert not load_runtime(out).can_skip_absent

    # int8: the decoder is calibrated on the encoder's features, one int8 input per feature map
    work = tmp_path / "int8"
    work.mkdir()
    paths = export_tflite_pair(
        model,
        (work / "e.tflite", work / "d.tflite"),
        work,
        precision="int8",
        calibration=phantom_slices(info, n=8, seed=5),
    )
    inputs = _Signature(paths[1], 1).inputs
    assert sorted(inputs) == [f"feature_{i}" for i in range(len(inputs))] and len(inputs) >= 4
    assert all(d["dtype"] == np.int8 and d["quantization"][0] > 0 for d in inputs.values())


def _edit_record(artefact, **changes):
    side = sidecar_path(artefact)
    data = json.loads(side.read_text())
    data["extra"]["export"]["checks"][artefact.name].update(changes.pop("check", {}))
    data["extra"]["export"].update(changes)
    side.write_text(json.dumps(data))


def test_export_records_parity_speed_and_source(exported):
    model, onnx = exported
    record = json.loads(sidecar_path(onnx).read_text())["extra"]["export"]
    check = record["checks"]["model.onnx"]
    assert check["passed"] and check["dice"] == 1.0 and check["runtime"] == "onnxruntime"
    assert check["seconds_per_slice"] > 0 and check["keras_seconds_per_slice"] > 0 and check["cpu"]
    assert record["source"] == {"name": "model.keras", "sha256": file_sha256(model)}


def test_runtime_auto_picks_the_fastest_passed_current_export(exported, volume, capsys):
    model, onnx = exported
    from keras_unet3plus.inference import open_runtime

    _edit_record(onnx, check={"seconds_per_slice": 0.01, "keras_seconds_per_slice": 0.03})
    assert [c.path for c in export_candidates(model)] == [onnx]
    notes = []
    rt = open_runtime(model, runtime="auto", notes=notes)
    assert rt.kind == "onnxruntime" and "model.onnx" in notes[-1] and "3.0x" in notes[-1]
    info = rt.info
    assert dice(Predictor(rt, info).predict_volume(volume.hu), Predictor(model, info).predict_volume(volume.hu)) >= 0.99

    _edit_record(onnx, check={"seconds_per_slice": 0.05})  # slower than Keras: Keras runs
    assert open_runtime(model, runtime="auto").kind == "keras"
    _edit_record(onnx, check={"seconds_per_slice": 0.01, "passed": False})
    notes = []
    assert open_runtime(model, runtime="auto", notes=notes).kind == "keras"
    assert any("failed its parity" in n for n in notes)
    _edit_record(onnx, check={"passed": True}, source={"name": "model.keras", "sha256": "0" * 64})
    notes = []
    assert open_runtime(model, runtime="auto", notes=notes).kind == "keras"
    assert any("another version" in n for n in notes)


def test_cli_predict_says_which_runtime_ran_and_rejects_misused_flags(exported, volume, tmp_path, capsys):
    import nibabel as nib

    from keras_unet3plus import cli

    model, onnx = exported
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume.hu, volume.affine), src)
    assert (
        cli.main(["predict", str(model), str(src), "-o", str(tmp_path / "m.nii.gz"), "--runtime", "auto", "--quiet"])
        == 0
    )
    out = capsys.readouterr().out
    assert "runtime auto: model." in out
    # every run says which runtime and precision ran, on which CPU (what the speed depends on)
    assert re.search(
        r"running: (Keras|ONNX Runtime) fp32 \(model\.(keras|onnx)\) on " + re.escape(cpu_info().summary()), out
    ), out
    assert cli.main(["predict", str(onnx), str(src), "-o", str(tmp_path / "n.nii.gz"), "--precision", "bf16"]) == 1
    assert "applies to .keras models" in capsys.readouterr().err
    assert cli.main(["predict", str(onnx), str(src), "-o", str(tmp_path / "n.nii.gz"), "--skip-absent", "--quiet"]) == 0
    assert f"running: ONNX Runtime fp32 (model.onnx), skip-absent on {cpu_info().summary()}" in capsys.readouterr().out
    (tmp_path / "n.nii.gz").unlink()
    from keras_unet3plus.runtimes.onnx import part_paths

    encoder, decoder = part_paths(onnx)
    import onnx as onnx_lib

    proto = onnx_lib.load(str(encoder))  # a pair from another export: refused
    entry = next(e for e in proto.metadata_props if e.key == "unet3plus_info")
    assert '"sha256": "' in entry.value
    entry.value = entry.value.replace('"sha256": "', '"sha256": "0')
    onnx_lib.save(proto, str(encoder))
    assert cli.main(["predict", str(onnx), str(src), "-o", str(tmp_path / "n.nii.gz"), "--skip-absent"]) == 1
    assert "skip-absent needs" in capsys.readouterr().err
    encoder.unlink()  # no pair at all: refused
    assert cli.main(["predict", str(onnx), str(src), "-o", str(tmp_path / "n.nii.gz"), "--skip-absent"]) == 1
    assert "skip-absent needs" in capsys.readouterr().err
    assert not (tmp_path / "n.nii.gz").exists()


def test_exports_join_a_skip_absent_ensemble(exported, trained_tiny, volume, tmp_path):
    """Skip-absent pairs of two runtimes (ONNX fp32, LiteRT fp16) in one ensemble: each member runs
    its encoder, the averaged CGM output picks the slices every member decodes. Two exports of one
    model average to that model's gated mask, with organ-free slices left undecoded."""
    pytest.importorskip("ai_edge_litert")
    from keras_unet3plus.export import export_model

    model, _, info = trained_tiny
    _, onnx = exported
    tflite = tmp_path / "model_fp16.tflite"
    export_model(model, "tflite", "fp16", out=tflite, info=info, verify_slices=8, log=lambda *_: None)
    gated = Predictor(model, info).predict_volume(volume.hu)
    ensemble = Predictor([onnx, tflite], skip_absent=True)
    assert [m.kind for m in ensemble.runtime.members] == ["onnxruntime", "litert"]
    decoded: list[int] = []
    for member in ensemble.runtime.members:
        count_decoded_slices(member, decoded)
    mask = ensemble.predict_volume(volume.hu)
    assert gated.any() and dice(mask, gated) >= 0.99
    assert 0 < sum(decoded) < 2 * volume.hu.shape[2] and decoded[0::2] == decoded[1::2]  # the same slices
