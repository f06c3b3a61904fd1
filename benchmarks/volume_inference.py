"""A whole CT volume on the CPU, end to end, through every deployment path, in one run (issue 16).

For each path: wall seconds of the whole command (a fresh process: import, load, read, preprocess,
infer, postprocess, write, as `unet3plus predict` runs), slices/s, each stage's share, peak RSS,
and the mask's Dice against the Keras fp32 mask. One markdown table, one PNG bar chart, and the
line ``best path: NAME, X.Xx vs Keras, Dice Y``.

Two models, said in the table's header:
- speed: the paper-size UNet 3+ (64..1024 filters, 320 x 320 x 3, deep supervision + CGM) with
  seeded random weights (speed does not depend on them; its CGM is set to "present" everywhere so
  every slice is decoded and resampled, the worst case);
- agreement: a demo-size model (16..256 filters, 128 x 128) trained on phantom slices once (cached),
  run through the same runtime settings on the same volume: mask agreement only means something on
  a model that segments (``--agreement-model unet3plus-demo/model.keras``: the demo's model instead;
  ``--agreement-only``: this column alone, in minutes). ``--skip-absent`` rows decode, in the speed
  run, exactly the slices this trained model's CGM calls present.

nnU-Net v2 (2d configuration, its default plan for the phantom, default test-time mirroring and
``--disable_tta``) runs where it is installed in its own venv (see ``_nnunet.py``); otherwise the
row says why. Exports and the nnU-Net model are cached under ``--cache`` (outside git), so the
first run takes longer than the next ones.

    python benchmarks/volume_inference.py --quick          # 512x512x6 spanning 500 mm, all but 3 efficient rows
    python benchmarks/volume_inference.py                  # 512x512x200
    python benchmarks/volume_inference.py --paths keras-paper,onnx-fp32
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HERE = Path(__file__).resolve().parent
SPEED = dict(size=320, filters=(64, 128, 256, 512, 1024), cat_channels=64)
AGREE = dict(size=128, filters=(16, 32, 64, 128, 256), cat_channels=16)
#: one acquisition for the volume and nnU-Net's planning cases: its plan then runs one 512x512
#: patch per slice (no resampling to another spacing), nnU-Net's best case
SPACING = (0.78, 0.78, 2.5)
FULL_SLICES = 200
QUICK_SLICES = 6
STAGES = ("read", "preprocess", "model", "postprocess", "write")


@dataclass(frozen=True)
class Path_:
    """One deployment path: which artefact, which runtime settings."""

    name: str
    kind: str  # keras | onnx | tflite | nnunet
    precision: str = "fp32"
    decoder: str = "paper"
    skip_absent: bool = False
    tta: bool = True  # nnU-Net only
    fused: bool = True  # Keras: the paper decoder in its exact fused form (exports always are)

    @property
    def label(self) -> str:
        extra = (" skip-absent" if self.skip_absent else "") + ("" if self.fused else ", as filed (unfused)")
        if self.kind == "nnunet":
            return "nnU-Net v2 2d" + (" (default TTA)" if self.tta else " --disable_tta")
        runtime = {"keras": "Keras", "onnx": "ONNX Runtime", "tflite": "LiteRT"}[self.kind]
        return f"{runtime} {self.precision} {self.decoder} decoder{extra}"


PATHS = {
    p.name: p
    for p in (
        Path_("keras-paper-unfused", "keras", fused=False),  # the path as filed: the baseline
        Path_("keras-paper", "keras"),
        Path_("keras-paper-skip", "keras", skip_absent=True),
        Path_("keras-paper-bf16", "keras", precision="bf16"),
        Path_("keras-paper-bf16-skip", "keras", precision="bf16", skip_absent=True),
        Path_("keras-efficient", "keras", decoder="efficient"),
        Path_("keras-efficient-skip", "keras", decoder="efficient", skip_absent=True),
        Path_("onnx-fp32", "onnx"),
        Path_("onnx-fp16", "onnx", precision="fp16"),
        Path_("onnx-int8", "onnx", precision="int8"),
        Path_("onnx-fp32-skip", "onnx", skip_absent=True),
        Path_("onnx-int8-skip", "onnx", precision="int8", skip_absent=True),
        Path_("onnx-efficient-fp32", "onnx", decoder="efficient"),
        Path_("onnx-efficient-skip", "onnx", decoder="efficient", skip_absent=True),
        Path_("onnx-efficient-int8-skip", "onnx", precision="int8", decoder="efficient", skip_absent=True),
        Path_("litert-fp32", "tflite"),
        Path_("litert-int8", "tflite", precision="int8"),
        Path_("litert-int8-skip", "tflite", precision="int8", skip_absent=True),
        Path_("nnunet-2d", "nnunet"),
        Path_("nnunet-2d-notta", "nnunet", tta=False),
    )
}
BASELINE = "keras-paper-unfused"
#: --quick leaves out three efficient-decoder rows (another network; its fastest row stays)
QUICK_PATHS = [n for n in PATHS if n not in ("keras-efficient-skip", "onnx-efficient-fp32", "onnx-efficient-skip")]
#: written beside each cached export: an export made by an older graph (before the fused decoder) is redone
EXPORT_GRAPH = "fused-decoder-1"


# ---------------------------------------------------------------------------------------------
# models and artefacts (cached)
# ---------------------------------------------------------------------------------------------


def _info(family: dict):
    from keras_unet3plus.data.preprocess import PreprocessConfig
    from keras_unet3plus.modelinfo import ModelInfo

    cfg = PreprocessConfig(image_size=family["size"]).for_task("liver")
    return ModelInfo(
        task="liver",
        preprocess=cfg.to_dict(),
        num_classes=1,
        threshold=0.5,
        build={
            "input_shape": [family["size"], family["size"], 3],
            "filters": list(family["filters"]),
            "cat_channels": family["cat_channels"],
            "deep_supervision": True,
            "cgm": True,
        },
    )


def _build(family: dict, decoder: str = "paper"):
    from keras_unet3plus import build

    return build(
        (family["size"], family["size"], 3),
        filters=family["filters"],
        cat_channels=family["cat_channels"],
        deep_supervision=True,
        cgm=True,
        decoder=decoder,
    )


def _efficient_copy(model, family: dict):
    """The efficient decoder with the paper model's weights (same layer names and shapes)."""
    eff = _build(family, "efficient")
    for layer in eff.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return eff


def _save(model, path: Path, family: dict) -> Path:
    from keras_unet3plus.modelinfo import save_info

    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    save_info(path, _info(family))
    return path


def speed_models(cache: Path, log) -> dict[str, Path]:
    """The paper-size model (seeded random weights, CGM always "present") and its efficient twin."""
    out = {d: cache / "speed" / f"{d}.keras" for d in ("paper", "efficient")}
    if all(p.is_file() for p in out.values()):
        return out
    import keras
    import numpy as np

    log("building the paper-size model (random weights, seed 0) ...")
    keras.utils.set_random_seed(0)
    model = _build(SPEED)
    conv = model.get_layer("cgm_conv")
    kernel, _ = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.array([-10.0, 10.0], np.float32)])  # always "present"
    _save(model, out["paper"], SPEED)
    _save(_efficient_copy(model, SPEED), out["efficient"], SPEED)
    return out


def agreement_models(cache: Path, log, given: Path | None = None) -> dict[str, Path]:
    """A demo-size model trained on the phantom (``given``: e.g. ``unet3plus-demo/model.keras``;
    else trained here once, a few minutes, cached), and its efficient twin."""
    out = {d: cache / "agree" / f"{d}.keras" for d in ("paper", "efficient")}
    if given is not None:
        import keras

        from keras_unet3plus import build
        from keras_unet3plus.modelinfo import load_info, save_info, sidecar_path

        from keras_unet3plus.runtimes.auto import file_sha256

        info = load_info(given)
        if out["efficient"].is_file() and file_sha256(out["paper"]) == file_sha256(given):
            return out
        out["paper"].parent.mkdir(parents=True, exist_ok=True)
        for p in out["paper"].parent.glob("*"):
            p.unlink()  # exports of another agreement model must not be reused
        shutil.copy(given, out["paper"])
        shutil.copy(sidecar_path(given), sidecar_path(out["paper"]))
        model = keras.saving.load_model(given, compile=False)
        eff = build(**{**info.build, "input_shape": tuple(info.build["input_shape"]), "decoder": "efficient"})
        for layer in eff.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
        eff.save(out["efficient"])
        save_info(out["efficient"], info)
        return out
    if all(p.is_file() for p in out.values()):
        return out
    import keras
    import numpy as np

    from keras_unet3plus.data import phantom
    from keras_unet3plus.data.preprocess import label_to_slices, volume_to_slices

    log("training the demo-size agreement model on phantom slices (cached afterwards) ...")
    cfg = _info(AGREE).preprocess_config()
    cases = [phantom.generate_case(500 + s, shape=(160, 160, 24)) for s in range(6)]
    x = np.concatenate([volume_to_slices(c.hu, cfg) for c in cases])
    y = (np.concatenate([label_to_slices(c.label_for("liver"), cfg) for c in cases]) > 0).astype("float32")
    present = (y.reshape(len(y), -1).max(axis=1) > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = _build(AGREE)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9

    def bce_dice(yt, yp):
        inter, den = keras.ops.sum(yt * yp), keras.ops.sum(yt) + keras.ops.sum(yp)
        return keras.ops.mean(keras.losses.binary_crossentropy(yt, yp)) + 1 - (2 * inter + 1) / (den + 1)

    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss={k: ("binary_crossentropy" if k == "cls" else bce_dice) for k in model.output},
    )
    targets = {k: y for k in model.output if k != "cls"}
    targets["cls"] = np.stack([1 - present, present], axis=1)
    model.fit(x, targets, batch_size=16, epochs=5, verbose=0, shuffle=True)
    _save(model, out["paper"], AGREE)
    _save(_efficient_copy(model, AGREE), out["efficient"], AGREE)
    return out


def artefact(models: dict[str, Path], path: Path_, log, calib_slices: int) -> Path:
    """The file a path runs: the .keras model, or its export (made once, cached beside it)."""
    from keras_unet3plus.export import default_output, export_model
    from keras_unet3plus.export.verify import phantom_slices
    from keras_unet3plus.runtimes.base import part_paths

    src = models[path.decoder]
    if path.kind == "keras":
        return src
    out = default_output(src, path.kind, path.precision)
    made_by = out.parent / f"{out.name}.graph"
    if (
        out.exists()
        and all(p.is_file() for p in part_paths(out))  # every model here has a CGM: a pair
        and made_by.is_file()
        and made_by.read_text() == EXPORT_GRAPH
    ):
        return out
    log(f"exporting {src.name} -> {out.name} (cached) ...")
    from keras_unet3plus.modelinfo import load_info

    info = load_info(src)
    calibration = phantom_slices(info, n=calib_slices, seed=99) if path.precision == "int8" else None
    # speed only here: the agreement column measures the masks on the trained model
    export_model(
        src,
        path.kind,
        path.precision,
        out=out,
        info=info,
        model_path=src,
        check=False,
        calibration=calibration,
        log=lambda *_: None,
    )
    made_by.write_text(EXPORT_GRAPH)
    return out


def open_predictor(model: str | Path, kind: str, precision: str, fused: bool = True, **options):
    """A Predictor as `unet3plus predict` opens it; ``fused=False``: a Keras model run as before the
    fused decoder (the baseline)."""
    from keras_unet3plus.inference import Predictor
    from keras_unet3plus.runtimes import load_runtime

    precision = precision if kind == "keras" else "fp32"
    if kind == "keras" and not fused:
        kwargs = {"precision": precision} if precision != "fp32" else {}
        return Predictor(load_runtime(model, require_info=True, fuse_decoder=False, **kwargs), **options)
    return Predictor.from_path(model, precision=precision, **options)


# ---------------------------------------------------------------------------------------------
# one path in a fresh process
# ---------------------------------------------------------------------------------------------


def child(spec: dict) -> dict:
    """Run one path on one volume as `unet3plus predict` would; stage seconds and peak RSS."""
    import numpy as np

    t0 = time.perf_counter()
    predictor = open_predictor(
        spec["model"],
        spec["kind"],
        spec["precision"],
        spec["fused"],
        batch_size=spec["batch_size"],
        skip_absent=spec["skip_absent"],
    )
    if spec.get("present"):
        _decode_only(predictor.runtime, np.load(spec["present"]))
    load = time.perf_counter() - t0
    timings: dict = {}
    t1 = time.perf_counter()
    predictor.predict_file(spec["input"], spec["output"], timings=timings)
    return {"load": load, "predict": time.perf_counter() - t1, "timings": timings, "peak_rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM restarts at exec (ru_maxrss would carry the parent's)."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _decode_only(runtime, present) -> None:
    """Speed model only: decode the slices the trained model's CGM calls present (its own random
    CGM says "present" everywhere). Slices reach the model in order, so a counter knows each z."""
    import numpy as np

    position = [0]
    own = runtime.segment_present

    def segment_present(batch):
        rows = present[position[0] : position[0] + len(batch)]
        position[0] += len(batch)
        seg, _ = own(batch, present=rows)
        cls = np.zeros((len(batch), 2), np.float32)
        cls[rows, 1] = 1.0
        return seg, cls

    runtime.segment_present = segment_present


def onnx_transposes(path: Path) -> str:
    """Transpose nodes left in ONNX Runtime's optimised graph (tf2onnx wraps NHWC convolutions in
    them; the optimiser should leave only the ones at the graph's input and output). Kept beside the
    artefact (optimising the paper-size graph takes most of a minute)."""
    import onnx
    import onnxruntime as ort

    kept = path.parent / f"{path.name}.transposes"
    if kept.is_file() and kept.stat().st_mtime >= path.stat().st_mtime:
        return kept.read_text()

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    before = sum(n.op_type == "Transpose" for n in onnx.load(str(path)).graph.node)
    after = sum(n.op_type == "Transpose" for n in graph.node)
    convs = sum("Conv" in n.op_type for n in graph.node)
    note = f"Transpose nodes {before} in the exported graph, {after} after ORT's optimiser ({convs} conv nodes)"
    kept.write_text(note)
    return note


def run_child(spec: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return {"error": f"exit {proc.returncode}: {tail}", "wall": wall}
    out = json.loads(line[len("RESULT ") :])
    out["wall"] = wall
    return out


# ---------------------------------------------------------------------------------------------
# agreement: the trained model through each path, in this process
# ---------------------------------------------------------------------------------------------


def agreement(
    paths: list[Path_], models: dict[str, Path], volume_path: Path, work: Path, log, calib_slices: int
) -> tuple[dict[str, float], object]:
    """Dice of each path's mask against the Keras fp32 mask of the trained model; and the per-slice
    CGM decisions of that model (what skip-absent decodes)."""
    import numpy as np

    from keras_unet3plus.data.nifti import load_image
    from keras_unet3plus.inference import Predictor
    from keras_unet3plus.metrics import dice

    volume = load_image(volume_path)
    reference = open_predictor(models["paper"], "keras", "fp32", fused=False, batch_size=8)
    ref_mask = reference.predict_volume(volume.image)
    # the efficient decoder is another network (it needs its own training): its paths are held to
    # its own Keras fp32 mask; its Dice against the paper model says only that it is another model
    refs = {
        "paper": ref_mask,
        "efficient": open_predictor(models["efficient"], "keras", "fp32", batch_size=8).predict_volume(volume.image),
    }
    # the CGM's per-slice decisions (gate: zeroes absent slices; we want the decisions themselves)
    probe = Predictor(reference.runtime, reference.info, batch_size=8, skip_absent=True)
    decisions = []
    original = probe.runtime.segment_present

    def record(batch):
        seg, cls = original(batch)
        decisions.extend(np.argmax(cls, axis=-1) == 1)
        return seg, cls

    probe.runtime.segment_present = record
    probe.predict_volume(volume.image)
    probe.runtime.segment_present = original
    present = np.asarray(decisions, dtype=bool)

    scores: dict[str, float] = {}
    for path in paths:
        if path.kind == "nnunet":
            continue
        try:
            art = artefact(models, path, log, calib_slices)
            pred = open_predictor(
                art, path.kind, path.precision, path.fused, batch_size=8, skip_absent=path.skip_absent
            )
            scores[path.name] = float(dice(pred.predict_volume(volume.image), refs[path.decoder]))
        except Exception as exc:  # noqa: BLE001 - one path failing must not hide the others
            log(f"agreement {path.name}: {type(exc).__name__}: {exc}")
            scores[path.name] = float("nan")
    scores["efficient-vs-paper"] = float(dice(refs["efficient"], ref_mask))
    log(
        f"agreement model: liver on {int(ref_mask.any(axis=(0, 1)).sum())} of {ref_mask.shape[2]} slices, "
        f"CGM present on {int(present.sum())}"
    )
    return scores, present


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def table(results: dict[str, dict], paths: list[Path_], n_slices: int, agree: dict[str, float]) -> str:
    from _common import markdown_table

    base = results.get(BASELINE, {}).get("wall")
    rows = []
    for p in paths:
        r = results[p.name]
        if "error" in r or "skipped" in r:
            rows.append(
                [p.name, p.label, "-", "-", "-", "-", "-", r.get("skipped") or r["error"].splitlines()[-1][:120]]
            )
            continue
        t = r.get("timings") or {}
        total = sum(t.get(s, 0.0) for s in STAGES) or 1.0
        shares = " / ".join(f"{100 * t.get(s, 0.0) / total:.0f}" for s in STAGES) if t else "n/a"
        dice = agree.get(p.name)
        rows.append(
            [
                p.name,
                p.label,
                f"{r['wall']:.1f}",
                f"{n_slices / r['wall']:.2f}",
                f"{base / r['wall']:.2f}x" if base else "-",
                shares,
                f"{r.get('peak_rss_mib', float('nan')):.0f}",
                "n/a (other model)" if p.kind == "nnunet" else (f"{dice:.4f}" if dice is not None else "-"),
            ]
        )
    return markdown_table(
        [
            "path",
            "what",
            "wall s",
            "slices/s",
            f"vs {BASELINE}",
            "read/pre/model/post/write %",
            "peak RSS MiB",
            "Dice vs Keras fp32 (same decoder)",
        ],
        rows,
    )


def chart(results: dict[str, dict], paths: list[Path_], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [
        p
        for p in paths
        if "wall" in results[p.name] and "error" not in results[p.name] and "skipped" not in results[p.name]
    ]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(done) + 1.2))
    walls = [results[p.name]["wall"] for p in done]
    colours = ["#999999" if p.kind == "nnunet" else "#d62728" if p.name == BASELINE else "#1f77b4" for p in done]
    ax.barh([p.name for p in done], walls, color=colours)
    for y, w in enumerate(walls):
        ax.text(w, y, f" {w:.0f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds, whole command (lower is better)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"512x512x{QUICK_SLICES} instead of 512x512x{FULL_SLICES}")
    p.add_argument(
        "--slices", type=int, default=None, help=f"axial slices (default {FULL_SLICES}, --quick {QUICK_SLICES})"
    )
    p.add_argument(
        "--paths",
        default=None,
        help=f"comma-separated, from: {', '.join(PATHS)} (default: all; "
        f"--quick: all but {', '.join(sorted(set(PATHS) - set(QUICK_PATHS)))})",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--calib-slices", type=int, default=32, help="int8 calibration slices (phantom)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "keras-unet3plus" / "volume-inference")
    p.add_argument("--png", type=Path, default=HERE.parent / "docs" / "volume_inference.png")
    p.add_argument(
        "--agreement-model",
        type=Path,
        default=None,
        help="a trained .keras model (with its info) for the Dice column, e.g. unet3plus-demo/model.keras "
        "(default: train a small one on the phantom once)",
    )
    p.add_argument(
        "--agreement-only",
        action="store_true",
        help="only the Dice column: the agreement model through every path (no timed runs)",
    )
    p.add_argument("--nnunet-venv", default=None, help="venv with nnunetv2 (default: see _nnunet.py)")
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help=f"leave out {BASELINE} (its ~7 s per slice), e.g. to compare with nnU-Net on a whole scan",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
        return 0

    from _common import machine_line

    from keras_unet3plus.runtimes.cpu import cpu_info

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    default = QUICK_PATHS if args.quick else list(PATHS)
    names = [n.strip() for n in args.paths.split(",") if n.strip()] if args.paths else default
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        p.error(f"unknown path(s) {unknown}; choose from {list(PATHS)}")
    if args.baseline and BASELINE not in names:
        names.insert(0, BASELINE)
    paths = [PATHS[n] for n in names]
    n_slices = args.slices or (QUICK_SLICES if args.quick else FULL_SLICES)
    cache = args.cache
    work = Path(tempfile.mkdtemp(prefix="unet3plus-volinf-"))
    atexit.register(shutil.rmtree, work, True)  # the volume and every path's mask: GBs at 200 slices
    t_start = time.perf_counter()

    import nibabel as nib
    import numpy as np

    from keras_unet3plus.data import phantom

    log(f"phantom CT 512x512x{n_slices} ...")
    # the full volume's extent (200 slices of SPACING[2]) at n_slices: --quick keeps the share of
    # organ-free slices of a whole abdominal CT, which is what --skip-absent saves
    extent = SPACING[2] * FULL_SLICES
    every = -(-8 // n_slices)  # the phantom draws at least 8 slices: fewer are every k-th of 8+
    case = phantom.generate_case(
        2024, shape=(512, 512, n_slices * every), spacing=(*SPACING[:2], extent / (n_slices * every))
    )
    affine = case.affine.copy()
    affine[:3, 2] *= every
    (work / "ct").mkdir()
    volume_path = work / "ct" / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(case.hu[..., ::every]), affine), volume_path)

    agree_models = agreement_models(cache, log, args.agreement_model)
    from keras_unet3plus.modelinfo import load_info

    b = load_info(agree_models["paper"]).build
    agree_label = (
        f"{'the given' if args.agreement_model else 'a'} model {b['filters'][0]}..{b['filters'][-1]} at "
        f"{b['input_shape'][0]}x{b['input_shape'][1]}, {b.get('decoder', 'paper')} decoder, trained on the phantom"
        + (f" ({args.agreement_model})" if args.agreement_model else "")
    )
    agree, present = agreement(paths, agree_models, volume_path, work, log, args.calib_slices)
    if args.agreement_only:
        from _common import markdown_table

        print(
            f"# Mask agreement through each path: phantom CT 512x512x{n_slices}\n\nMachine: {machine_line()}; "
            f"{cpu_info().summary()}.\nModel: {agree_label}; {int(present.size)} slices, "
            f"CGM present on {int(present.sum())}; Dice against its Keras fp32 mask as filed (unfused).\n"
        )
        print(
            markdown_table(
                ["path", "what", "Dice vs Keras fp32"],
                [[pp.name, pp.label, f"{agree[pp.name]:.4f}"] for pp in paths if pp.name in agree],
            )
        )
        return 0
    present_file = work / "present.npy"
    np.save(present_file, present)

    models = speed_models(cache, log)
    results: dict[str, dict] = {}
    cpu = cpu_info()
    for path in paths:
        if path.kind == "nnunet":
            continue
        if path.precision == "bf16" and not cpu.fast_bf16:
            results[path.name] = {"skipped": "skipped: no AVX512_BF16/AMX on this CPU (bf16 would be emulated)"}
            continue
        try:
            art = artefact(models, path, log, args.calib_slices)
        except Exception as exc:  # noqa: BLE001
            results[path.name] = {"error": f"export failed: {type(exc).__name__}: {exc}"}
            continue
        log(f"running {path.name} ...")
        note = onnx_transposes(art) if path.kind == "onnx" else ""
        results[path.name] = run_child(
            {
                "model": str(art),
                "kind": path.kind,
                "fused": path.fused,
                "precision": path.precision,
                "batch_size": args.batch_size,
                "skip_absent": path.skip_absent,
                "present": str(present_file) if path.skip_absent else None,
                "input": str(volume_path),
                "output": str(work / f"{path.name}.nii.gz"),
            }
        )
        results[path.name].setdefault("note", note)
        if "error" in results[path.name]:
            log(f"{path.name} failed: {results[path.name]['error']}")

    nn_paths = [pp for pp in paths if pp.kind == "nnunet"]
    if nn_paths:
        run_nnunet(nn_paths, results, volume_path, work, cache, args.nnunet_venv, log)

    header = (
        f"# Whole-volume CPU inference: phantom CT 512x512x{n_slices} (.nii.gz) -> mask, end to end\n\n"
        f"Machine: {machine_line()}; {cpu.summary()}.\n"
        f"Speed model: paper-size UNet 3+ (64..1024, 320x320x3, DS + CGM, random weights, CGM 'present'), "
        f"batch {args.batch_size}. Dice: {agree_label}, "
        "same paths, same volume, against its Keras fp32 mask as filed (unfused; efficient rows: "
        "against the Keras fp32 mask of the efficient decoder carrying the same weights); skip-absent "
        f"rows decode the slices its CGM calls present ({int(present.sum())} of {len(present)})."
    )
    text = table(results, paths, n_slices, agree)
    print(header + "\n\n" + text + "\n")
    for pp in paths:
        note = results[pp.name].get("note")
        if note:
            print(f"- {pp.name}: {note}")
    chart(results, paths, args.png, f"512x512x{n_slices} phantom CT, {cpu.name}, {cpu.cores} cores")
    ours = [
        pp
        for pp in paths
        if pp.kind != "nnunet"
        and pp.decoder == "paper"
        and "wall" in results[pp.name]
        and "error" not in results[pp.name]
        and pp.name != BASELINE
    ]
    base = results.get(BASELINE, {}).get("wall")
    if base and ours:
        best = min(ours, key=lambda pp: results[pp.name]["wall"])
        print(
            f"best path: {best.name}, {base / results[best.name]['wall']:.1f}x vs Keras, "
            f"Dice {agree.get(best.name, float('nan')):.3f}"
        )
        kept = [pp for pp in ours if agree.get(pp.name, 0.0) >= 0.99]
        if kept and best not in kept:
            good = min(kept, key=lambda pp: results[pp.name]["wall"])
            print(
                f"best path with Dice >= 0.99: {good.name}, {base / results[good.name]['wall']:.1f}x vs Keras, "
                f"Dice {agree[good.name]:.3f}"
            )
    eff = [
        pp
        for pp in paths
        if pp.decoder == "efficient" and "wall" in results[pp.name] and "error" not in results[pp.name]
    ]
    if base and eff:
        fastest = min(eff, key=lambda pp: results[pp.name]["wall"])
        print(
            f"efficient decoder (another network, to be trained as such): {fastest.name}, "
            f"{base / results[fastest.name]['wall']:.1f}x vs Keras; the paper weights run through it give "
            f"Dice {agree.get('efficient-vs-paper', float('nan')):.3f} against the paper model's mask"
        )
    print(f"(benchmark wall {time.perf_counter() - t_start:.0f} s; chart: {args.png})")
    return 0


def run_nnunet(paths: list[Path_], results: dict, volume_path: Path, work: Path, cache: Path, venv, log) -> None:
    """nnU-Net v2 2d on the same volume, as its users run it (see ``_nnunet.py``)."""
    try:
        import _nnunet
    except ImportError as exc:
        for pp in paths:
            results[pp.name] = {"skipped": f"benchmarks/_nnunet.py missing ({exc})"}
        return
    env = _nnunet.find_nnunet(venv)
    if env is None:
        for pp in paths:
            results[pp.name] = {"skipped": f"nnU-Net not installed: {_nnunet.why_absent(venv)}"}
        return
    log("preparing the nnU-Net 2d model (plan + checkpoint, cached) ...")
    model = _nnunet.prepare_model(env, cache / "nnunet", _nnunet_training_cases(cache / "nnunet-cases"))
    for pp in paths:
        log(f"running {pp.name} ...")
        out_dir = work / pp.name
        try:
            r = _nnunet.run_predict(model, volume_path.parent, out_dir, tta=pp.tta)
        except Exception as exc:  # noqa: BLE001
            results[pp.name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        tiles = _nnunet.tiles_per_slice(model, volume_path)
        results[pp.name] = {
            "wall": r["seconds"],
            "peak_rss_mib": r["peak_pss_mib"],
            "note": f"{model.describe()}; {tiles * (4 if pp.tta else 1)} network runs per slice; "
            f"peak memory is PSS over its worker processes",
        }


def _nnunet_training_cases(folder: Path) -> list[tuple[Path, Path]]:
    """A few full-size phantom cases for nnU-Net's planner (its plan depends on the data's shape
    and spacing, so they look like the benchmark volume)."""
    import nibabel as nib

    from keras_unet3plus.data import phantom

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for seed in range(5):
        img, lab = folder / f"phantom{seed:03d}_0000.nii.gz", folder / f"phantom{seed:03d}.nii.gz"
        if not (img.is_file() and lab.is_file()):
            case = phantom.generate_case(3000 + seed, shape=(512, 512, 24), spacing=SPACING)
            nib.save(nib.Nifti1Image(case.hu, case.affine), img)
            nib.save(nib.Nifti1Image(case.label_for("liver").astype("uint8"), case.affine), lab)
        cases.append((img, lab))
    return cases


if __name__ == "__main__":
    sys.exit(main())
