"""The export's typed records (modelinfo.ExportRecord) and the export's doors: one module per
target listed in one registry, one pair identity checked the same way for ONNX and LiteRT, the
CLI's export flags without TensorFlow."""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_unet3plus.modelinfo import (
    ArtefactCheck,
    ExportRecord,
    ModelInfo,
    PairIdentity,
    ParityRecord,
    PartRecord,
    SourceRecord,
    SpeedRecord,
    load_export_record,
    load_info,
    save_info,
    sidecar_path,
)

PACKAGE = Path(__file__).resolve().parents[1] / "keras_unet3plus"


def _record() -> ExportRecord:
    return ExportRecord(
        target="onnx",
        precision="int8",
        outputs="deploy",
        threshold_in_graph=0.5,
        gated=True,
        opset=17,
        source=SourceRecord("model.keras", "ab" * 32),
        checks={
            "model_int8.onnx": ArtefactCheck(
                ParityRecord("onnxruntime", True, 0.998, 0.03), SpeedRecord(0.01, 0.04, "Some CPU (2 cores, avx2)")
            )
        },
        pair=PairIdentity(
            PartRecord("model_int8.encoder.onnx", "cd" * 32), PartRecord("model_int8.decoder.onnx", "ef" * 32)
        ),
    )


def test_export_record_round_trips_through_a_sidecar(tmp_path):
    artefact = tmp_path / "model_int8.onnx"
    artefact.write_bytes(b"graph")
    info = ModelInfo(task="liver", preprocess={"image_size": 64}, extra={"epochs": 3})
    info.set_export_record(_record())
    save_info(artefact, info)
    loaded = load_info(artefact)
    assert loaded.export_record() == _record() == load_export_record(artefact)
    assert loaded.extra["epochs"] == 3  # the rest of `extra` is left as it was
    assert loaded.export_record().checks["model_int8.onnx"].speed.speedup == pytest.approx(4.0)
    assert load_export_record(tmp_path / "other.onnx") is None  # no sidecar: no record


def test_a_sidecar_written_before_the_records_reads_the_same(tmp_path):
    """The JSON keys exports have written since the first parity records (a LiteRT one with its pair)."""
    old = {
        "target": "tflite",
        "precision": "fp16",
        "outputs": "deploy",
        "threshold_in_graph": None,
        "gated": True,
        "source": {"name": "model.keras", "sha256": "12" * 32},
        "checks": {
            "m_fp16.tflite": {
                "runtime": "litert",
                "passed": True,
                "dice": 1.0,
                "max_abs_diff": 0.002,
                "seconds_per_slice": 0.02,
                "keras_seconds_per_slice": 0.05,
                "cpu": "x",
            }
        },
        "skip_absent_pair": {
            "encoder": {"name": "m_fp16.encoder.tflite", "sha256": "34" * 32},
            "decoder": {"name": "m_fp16.decoder.tflite", "sha256": "56" * 32},
        },
    }
    artefact = tmp_path / "m_fp16.tflite"
    sidecar_path(artefact).write_text(json.dumps({"task": "liver", "preprocess": {}, "extra": {"export": old}}))
    record = load_export_record(artefact)
    assert record.target == "tflite" and record.source.sha256 == "12" * 32 and record.opset is None
    check = record.checks["m_fp16.tflite"]
    assert check.parity == ParityRecord("litert", True, 1.0, 0.002) and check.speed.speedup == pytest.approx(2.5)
    assert record.pair.decoder == PartRecord("m_fp16.decoder.tflite", "56" * 32)
    assert record.to_dict() == old  # written back with the same keys
    old["checks"]["m_fp16.tflite"]["dice"] = "high"
    sidecar_path(artefact).write_text(json.dumps({"task": "liver", "preprocess": {}, "extra": {"export": old}}))
    with pytest.raises(ValueError, match=r"m_fp16\.tflite\.unet3plus\.json: export record field 'dice'"):
        load_export_record(artefact)


def test_pair_identity_names_the_part_that_differs(tmp_path):
    encoder, decoder = tmp_path / "m.encoder.onnx", tmp_path / "m.decoder.onnx"
    encoder.write_bytes(b"encoder")
    decoder.write_bytes(b"decoder")
    identity = PairIdentity.of((encoder, decoder))
    assert identity.encoder.name == "m.encoder.onnx" and identity.mismatch((encoder, decoder)) is None
    decoder.write_bytes(b"decoder of another export")
    assert identity.mismatch((encoder, decoder)) == ("decoder", decoder)


def _target_modules() -> list[str]:
    """Modules of the export package that declare a ``TARGET`` (read from the source, not imported)."""
    names = []
    for path in sorted((PACKAGE / "export").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TARGET" for t in node.targets)
            for node in tree.body
        ):
            names.append(path.stem)
    return names


def test_registry_lists_every_target_module_and_each_declares_its_parts(tmp_path):
    import keras_unet3plus.runtimes as runtimes
    from keras_unet3plus.export import REGISTRY, ExportTarget, default_output

    extras = re.findall(r'^    "(\w+)": \[', (PACKAGE.parent / "setup.py").read_text(), flags=re.M)
    modules = _target_modules()
    assert len(modules) == 4
    assert sorted(REGISTRY) == sorted(
        importlib.import_module(f"keras_unet3plus.export.{m}").TARGET.name for m in modules
    )
    for name, target in REGISTRY.items():
        assert isinstance(target, ExportTarget) and target.name == name and target.precisions
        assert callable(target.write) and target.write.__module__.startswith("keras_unet3plus.export.")
        runtime = getattr(runtimes, target.runtime)
        assert runtimes.RUNTIMES[runtime.kind] is runtime
        for precision in target.precisions:
            assert all(extra in extras for _module, extra in target.needs(precision)), (name, precision)
            out = default_output(tmp_path / "model.keras", name, precision)
            assert out.suffix == target.suffix and out.parent == tmp_path
            if target.suffix:
                out.write_bytes(b"")
                assert target.suffix in runtime.suffixes
            else:  # a folder artefact
                out.mkdir(exist_ok=True)
                (out / "saved_model.pb").write_bytes(b"")
            assert runtimes.runtime_kind(out) == runtime.kind, (name, precision)
    with pytest.raises(ValueError, match="target must be one of"):
        default_output(tmp_path / "model.keras", "coreml")


def test_no_module_imports_another_modules_private_names():
    for folder in ("export", "runtimes"):
        for path in (PACKAGE / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    assert not private, f"{folder}/{path.name} imports {private} from {node.module}"


def test_export_flags_load_no_tensorflow():
    """`unet3plus export --help` lists the targets without TensorFlow (the package root is stood in
    for, so the check holds whatever the root imports)."""
    code = (
        "import argparse, sys, types\n"
        f"root = types.ModuleType('keras_unet3plus'); root.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['keras_unet3plus'] = root\n"
        "from keras_unet3plus.commands import export\n"
        "parser = argparse.ArgumentParser(); export.add_arguments(parser)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx', 'tf2onnx'))\n"
        "assert not heavy, heavy\n"
        "print(parser.format_help())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "{savedmodel,onnx,tflite,tensorrt}" in done.stdout


def test_export_options_keep_the_old_keywords(trained_tiny, tmp_path):
    pytest.importorskip("tf2onnx")
    from keras_unet3plus.export import ExportOptions, GraphSpec, export_model

    spec = GraphSpec(threshold=0.5)
    options = ExportOptions.of(spec, verify_slices=4, check=False)
    assert options.spec is spec and options.verify_slices == 4 and not options.check and options.opset == 17
    model, _, _ = trained_tiny
    with pytest.raises(TypeError, match="unexpected keyword argument 'verify_slice'"):
        export_model(model, "onnx", out=tmp_path / "m.onnx", verify_slice=4)
    assert list(tmp_path.iterdir()) == []


def _pair_export(trained_tiny, folder: Path, target: str):
    """An fp32 export of the tiny model (it has a CGM: it gets the pair), without the parity check."""
    from keras_unet3plus.export import export_model
    from keras_unet3plus.runtimes.base import part_paths

    model, _, info = trained_tiny
    folder.mkdir()
    out = folder / ("model.onnx" if target == "onnx" else "model_fp32.tflite")
    result = export_model(model, target, out=out, info=info, check=False, log=lambda *_: None)
    assert {p.name for p in result.artefacts} == {out.name, *(p.name for p in part_paths(out))}
    return out, part_paths(out)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_a_pair_of_another_identity_is_refused_in_one_line_naming_both_files(trained_tiny, tmp_path, target):
    pytest.importorskip("tf2onnx" if target == "onnx" else "ai_edge_litert")
    from keras_unet3plus.runtimes import load_runtime
    from keras_unet3plus.runtimes.base import Runtime

    out, (encoder, decoder) = _pair_export(trained_tiny, tmp_path / "a", target)
    rt = load_runtime(out)
    assert type(rt).pair_parts is Runtime.pair_parts  # one check, whatever the target
    assert rt.can_skip_absent and len(rt.pair_parts()) == 2
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    seg, _ = rt.segment_present(x)
    np.testing.assert_allclose(seg, rt.predict(x), atol=1e-4)  # the pair computes the gated graph's seg

    shutil.copyfile(encoder, decoder)  # a part that is not this export's
    rt = load_runtime(out)
    assert not rt.can_skip_absent
    with pytest.raises(ValueError) as refused:
        rt.encode(x)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{decoder}: not the skip-absent decoder of {out} ")
    assert f"--to {target}" in line


def test_an_onnx_export_made_before_the_pair_record_keeps_its_pair(trained_tiny, tmp_path):
    """Exports written before the identity record tied their parts by embedding the graph's own
    info; such a pair is still used (and one from elsewhere still refused)."""
    pytest.importorskip("tf2onnx")
    import onnx

    from keras_unet3plus.runtimes import load_runtime

    out, (encoder, decoder) = _pair_export(trained_tiny, tmp_path / "old", "onnx")
    part_info = next(p.value for p in onnx.load(str(encoder)).metadata_props if p.key == "unet3plus_info")
    assert "skip_absent_pair" not in part_info
    graph = onnx.load(str(out))
    next(p for p in graph.metadata_props if p.key == "unet3plus_info").value = part_info
    onnx.save(graph, str(out))
    data = json.loads(sidecar_path(out).read_text())
    del data["extra"]["export"]["skip_absent_pair"]
    sidecar_path(out).write_text(json.dumps(data))
    assert load_runtime(out).can_skip_absent
    other = onnx.load(str(decoder))
    next(p for p in other.metadata_props if p.key == "unet3plus_info").value = part_info.replace("fp32", "fp16")
    onnx.save(other, str(decoder))
    assert not load_runtime(out).can_skip_absent


def test_tensorrt_target_stages_its_graph_beside_the_engine(trained_tiny, tmp_path, monkeypatch):
    """The ``--to tensorrt`` writer without a GPU: the engine build is stood in for; the ONNX graph
    beside the engine, both published with their records, and the trtexec line naming the final files."""
    pytest.importorskip("tf2onnx")
    import types

    from keras_unet3plus.export import export_model
    from keras_unet3plus.export import tensorrt as trt_target

    built = {}

    def fake_build(onnx_path, engine_path, input_hwc, precision, batch_range, **kw):
        built.update(onnx=Path(onnx_path), hwc=tuple(input_hwc), batch_range=tuple(batch_range), **kw)
        Path(engine_path).write_bytes(b"engine")
        return trt_target.EngineBuild(
            Path(engine_path),
            Path(onnx_path),
            precision,
            "10.9",
            "fake build path",
            f"trtexec --onnx={onnx_path} --saveEngine={engine_path}",
        )

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(trt_target, "build_engine", fake_build)
    model, _, info = trained_tiny
    out = tmp_path / "model_fp32.engine"
    result = export_model(
        model, "tensorrt", out=out, info=info, check=False, batch_range=(1, 2, 4), log=lambda *_: None
    )
    graph = tmp_path / "model_fp32.onnx"
    assert result.artefacts == [graph, out] and out.read_bytes() == b"engine"
    assert built["hwc"] == (64, 64, 3) and built["batch_range"] == (1, 2, 4)
    assert built["onnx"].name.startswith(".model_fp32.tmp-") and built["fp32_onnx_path"].name == "model_fp32.onnx"
    assert built["timing_cache"] == tmp_path / "model_fp32.timing.cache"
    assert f"equivalent trtexec command: trtexec --onnx={graph} --saveEngine={out}" in result.notes
    assert "TensorRT build path: fake build path" in result.notes
    assert "static check: every operator is supported by TensorRT's ONNX parser" in result.notes
    for artefact in (graph, out):
        record = load_export_record(artefact)
        assert record.target == "tensorrt" and record.opset == 17 and record.pair is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model_fp32.engine", "model_fp32.engine.unet3plus.json", "model_fp32.onnx", "model_fp32.onnx.unet3plus.json"]
    )
