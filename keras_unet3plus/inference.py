"""Inference: a CT volume (array or NIfTI file, or a folder of them) in, a uint8 label volume out.

The same 2.5D preprocessing as training (:mod:`keras_unet3plus.data.preprocess`, configured by the
:class:`~keras_unet3plus.modelinfo.ModelInfo` saved with the model, never by user flags), slice
batches through the model, the CGM gate, threshold / argmax, optional largest-connected-component
post-processing, and the mask put back on the input file's grid (shape, affine, orientation).

Work is streamed in slice batches so memory stays bounded: a background thread preprocesses the
next batch while the model runs, and a second one resamples the previous batch back to the
volume's in-plane grid (``overlap=True``). In folder mode the next case is read while the current
one is predicted.

Models: a ``keras.Model`` (training form with ``seg`` + ``cls`` outputs, gated here; or the
``deploy_model()`` form, gated in-graph), a runtime from :func:`keras_unet3plus.runtimes.load_runtime`
(``.keras``, SavedModel folder, ``.onnx``, ``.tflite``, TensorRT engine), or a path to any of those.
"""
from __future__ import annotations

import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .data.preprocess import PreprocessConfig, slices_to_volume, volume_to_slices
from .modelinfo import ModelInfo

__all__ = [
    "LoadedModel", "CaseResult", "predict_volume", "predict_file", "predict_folder", "load_model",
    "postprocess_labels", "largest_component", "write_nifti_atomic", "mask_image", "find_input_files",
    "nifti_case_name", "config_from_info",
]

STAGES = ("read", "preprocess", "model", "postprocess", "write")


# ------------------------------------------------------------------------------------------------
# model adapters
# ------------------------------------------------------------------------------------------------

class _Predictor:
    """Uniform view of a model: ``__call__(batch (B,S,S,C) float32) -> (seg, cls or None)``.

    ``labels_output``: ``seg`` is already a label map (deploy form with an argmax in the graph), so
    it is resampled nearest-neighbour instead of bilinearly.
    """

    def __init__(self, fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]], name: str,
                 image_size: int | None = None, channels: int | None = None,
                 labels_output: bool = False, gated_in_graph: bool = False):
        self.fn = fn
        self.name = name
        self.image_size = image_size
        self.channels = channels
        self.labels_output = labels_output
        self.gated_in_graph = gated_in_graph
        self.num_classes = 1  # > 1 with a 1-channel output means: the output is a label map

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.fn(batch)

    def check(self, cfg: PreprocessConfig) -> None:
        """Raise a clear error when the model cannot take inputs made with ``cfg``."""
        if self.channels is not None and self.channels != cfg.channels:
            raise ValueError(
                f"model '{self.name}' takes {self.channels}-channel inputs but its preprocessing "
                f"(context={cfg.context}) makes {cfg.channels} channels; the model and its model-info "
                f"file do not belong together")
        if self.image_size is not None and self.image_size != cfg.image_size:
            raise ValueError(
                f"model '{self.name}' takes {self.image_size}x{self.image_size} inputs but its "
                f"preprocessing makes {cfg.image_size}x{cfg.image_size} slices; the model and its "
                f"model-info file do not belong together")


def _keras_predictor(model, gate: bool) -> _Predictor:
    """A compiled (tf.function) view of a keras.Model that computes only ``seg`` (+ ``cls``).

    Side outputs are dropped (less work); the function is cached per model so the trainer's
    repeated validation calls trace once. Weights are captured by reference, so the cache stays
    valid while the model trains.
    """
    import keras
    import tensorflow as tf

    from .layers import Binarize, ClassGate

    # cached on the model itself (bypassing Keras' attribute tracking): dies with the model
    cache = model.__dict__.get("_unet3plus_inference_cache")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_unet3plus_inference_cache", cache)
    key = bool(gate)
    if key in cache:
        return cache[key]

    outs = dict(model.output) if isinstance(model.output, dict) else dict(zip(model.output_names, model.outputs))
    if "seg" not in outs:
        raise ValueError(f"model '{model.name}' has no 'seg' output (outputs: {sorted(outs)}); "
                         f"build it with keras_unet3plus.build()")
    selected = {"seg": outs["seg"]}
    if gate and "cls" in outs:
        selected["cls"] = outs["cls"]
    sub = keras.Model(model.inputs, selected, name=f"{model.name}_infer")
    shape = tuple(model.inputs[0].shape)
    spec = tf.TensorSpec((None, *shape[1:]), tf.float32)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def infer(x):
        return sub(x, training=False)

    def fn(batch: np.ndarray):
        res = infer(tf.convert_to_tensor(batch, tf.float32))
        cls = res.get("cls")
        return res["seg"].numpy(), None if cls is None else cls.numpy()

    binarizers = [layer for layer in model.layers if isinstance(layer, Binarize)]
    labels_output = bool(binarizers) and (binarizers[-1].input.shape[-1] or 1) > 1
    size = shape[1] if shape[1] is not None and shape[1] == shape[2] else None
    in_graph_gate = "cls" not in outs and any(isinstance(layer, ClassGate) for layer in model.layers)
    pred = _Predictor(fn, name=model.name, image_size=size, channels=shape[3], labels_output=labels_output,
                      gated_in_graph=in_graph_gate)
    cache[key] = pred
    return pred


def _runtime_predictor(runtime) -> _Predictor:
    """View of a :mod:`keras_unet3plus.runtimes` Runtime (deploy form: gated in the graph)."""
    info: ModelInfo | None = getattr(runtime, "info", None)
    num_classes = int(info.num_classes) if info is not None else 1
    name = str(getattr(runtime, "path", None) or getattr(runtime, "name", None) or type(runtime).__name__)

    def fn(batch: np.ndarray):
        out = runtime.predict(batch)
        cls = None
        if isinstance(out, dict):
            cls = out.get("cls")
            out = out["seg"]
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 3:
            out = out[..., None]
        return out, None if cls is None else np.asarray(cls)

    size = channels = None
    shape = getattr(runtime, "input_shape", None)
    if shape is not None and len(shape) == 4:
        size = shape[1] if shape[1] == shape[2] and isinstance(shape[1], int) else None
        channels = shape[3] if isinstance(shape[3], int) else None
    pred = _Predictor(fn, name=name, image_size=size, channels=channels, gated_in_graph=True)
    pred.num_classes = num_classes
    return pred


def _as_predictor(model, gate: bool) -> _Predictor:
    if isinstance(model, _Predictor):
        return model
    if isinstance(model, LoadedModel):
        return _as_predictor(model.model, gate)
    try:
        import keras
        if isinstance(model, keras.Model):
            return _keras_predictor(model, gate)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(model, "predict"):
        return _runtime_predictor(model)
    raise TypeError(f"cannot run inference with a {type(model).__name__}: expected a keras.Model, a "
                    f"runtime from keras_unet3plus.runtimes.load_runtime(), or a model path")


# ------------------------------------------------------------------------------------------------
# the streaming pipeline
# ------------------------------------------------------------------------------------------------

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _run_stages(n: int, produce: Callable[[int], Any], infer: Callable[[Any], Any],
                consume: Callable[[int, Any], None], overlap: bool, timings: dict | None,
                on_step: Callable[[int], None] | None = None) -> None:
    """Run ``consume(i, infer(produce(i)))`` for i in range(n), with produce / consume on threads."""

    def timed(stage, f, *a):
        t0 = time.perf_counter()
        r = f(*a)
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        return r

    if not overlap or n <= 1:
        for i in range(n):
            consume_arg = timed("model", infer, timed("preprocess", produce, i))
            timed("postprocess", consume, i, consume_arg)
            if on_step:
                on_step(i)
        return

    stop = threading.Event()
    q_in: queue.Queue = queue.Queue(maxsize=2)
    q_out: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            for i in range(n):
                if stop.is_set():
                    return
                if not put(q_in, (i, timed("preprocess", produce, i))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            put(q_in, _Failure(exc))
            return
        put(q_in, _DONE)

    def consumer():
        while True:
            try:
                item = q_out.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            try:
                timed("postprocess", consume, *item)
                if on_step:
                    on_step(item[0])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()
                return

    threads = [threading.Thread(target=producer, daemon=True, name="unet3plus-preprocess"),
               threading.Thread(target=consumer, daemon=True, name="unet3plus-postprocess")]
    for t in threads:
        t.start()
    try:
        while True:
            item = None
            while item is None:
                if errors:
                    raise errors[0]
                try:
                    item = q_in.get(timeout=0.1)
                except queue.Empty:
                    continue
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.exc
            i, x = item
            y = timed("model", infer, x)
            if not put(q_out, (i, y)):
                break
        put(q_out, _DONE)
        threads[1].join()
        if errors:
            raise errors[0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


# ------------------------------------------------------------------------------------------------
# post-processing
# ------------------------------------------------------------------------------------------------

def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D connected component (6-connectivity) of a boolean mask."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def postprocess_labels(labels: np.ndarray, largest: bool = True) -> np.ndarray:
    """Largest-connected-component clean-up of a label volume.

    The organ is one connected object, so the largest component of the *foreground union* (all
    labels > 0) is kept and everything outside it becomes background. Applied to the union rather
    than per class so multi-focal lesions inside the organ (LiTS tumours) survive.
    """
    labels = np.asarray(labels)
    if not largest:
        return labels
    keep = largest_component(labels > 0)
    out = labels.copy()
    out[~keep] = 0
    return out


# ------------------------------------------------------------------------------------------------
# predict_volume
# ------------------------------------------------------------------------------------------------

def predict_volume(
    model,
    hu_volume: np.ndarray,
    cfg: PreprocessConfig,
    batch_size: int = 8,
    gate: bool = True,
    threshold: float = 0.5,
    largest_component: bool = False,
    return_probabilities: bool = False,
    *,
    overlap: bool = True,
    progress: bool | Any = False,
    timings: dict | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment a canonical (RAS) HU volume ``(X, Y, Z)``; returns a uint8 label volume ``(X, Y, Z)``.

    ``model``: a keras.Model (training form: ``seg`` gated here by argmax of ``cls`` per slice when
    ``gate``; or the deploy form, gated in its graph), a runtime, or a :class:`LoadedModel`.
    ``cfg`` must be the model's saved preprocessing (``PreprocessConfig.from_dict(info.preprocess)``).
    One output channel: ``prob > threshold``; several (softmax): argmax. ``largest_component`` keeps
    the largest 3-D connected foreground component. With ``return_probabilities`` returns
    ``(labels, probabilities (X, Y, Z, C) float32)`` (gated slices are all zero).

    Memory is bounded by the batch: inputs and outputs exist at model resolution for
    ``batch_size`` slices only. ``timings`` (a dict) accumulates seconds per stage
    (preprocess / model / postprocess); ``progress`` shows a tqdm bar over slices (or pass a bar).
    """
    vol = np.asarray(hu_volume)
    if vol.ndim != 3:
        raise ValueError(f"predict_volume expects an (X, Y, Z) volume, got shape {vol.shape}")
    if min(vol.shape) < 1:
        raise ValueError(f"predict_volume got an empty volume, shape {vol.shape}")
    if not isinstance(cfg, PreprocessConfig):
        raise TypeError(f"cfg must be a PreprocessConfig, got {type(cfg).__name__}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg.window()  # raises when the HU window is not set
    predictor = _as_predictor(model, gate)
    predictor.check(cfg)

    x_dim, y_dim, n = vol.shape
    bs = int(batch_size)
    c = cfg.context
    n_batches = (n + bs - 1) // bs
    labels = np.zeros((x_dim, y_dim, n), dtype=np.uint8)
    probs_out: list = [None]  # allocated once the channel count is known

    def produce(i: int) -> np.ndarray:
        z0, z1 = i * bs, min(n, (i + 1) * bs)
        lo, hi = max(0, z0 - c), min(n, z1 + c)
        # a sub-volume with `c` slices of margin: edges replicate only at the true volume edges
        slices = volume_to_slices(vol[:, :, lo:hi], cfg)
        return slices[z0 - lo: z0 - lo + (z1 - z0)]

    def infer(batch: np.ndarray):
        try:
            return predictor(batch)
        except Exception as exc:
            if isinstance(exc, (MemoryError, KeyboardInterrupt)):
                raise
            raise ValueError(f"model '{predictor.name}' failed on a batch of shape {batch.shape} "
                             f"({type(exc).__name__}: {exc})") from exc

    def consume(i: int, out) -> None:
        seg, cls = out
        seg = np.asarray(seg, dtype=np.float32)
        if seg.ndim != 4:
            raise ValueError(f"model '{predictor.name}' returned seg of shape {seg.shape}, expected (B, H, W, C)")
        z0 = i * bs
        z1 = z0 + seg.shape[0]
        present = np.ones(seg.shape[0], dtype=bool)
        if gate and cls is not None:
            present = np.argmax(cls, axis=-1) == 1
            seg = seg * present[:, None, None, None].astype(np.float32)
        if return_probabilities and probs_out[0] is None:
            probs_out[0] = np.zeros((x_dim, y_dim, n, seg.shape[-1]), dtype=np.float32)
        if not present.any() and not return_probabilities:
            return  # every slice gated out: labels stay background
        if predictor.labels_output or (predictor.num_classes > 1 and seg.shape[-1] == 1):
            lab = _resize_labels(seg[..., 0], (x_dim, y_dim), cfg)
            labels[:, :, z0:z1] = lab
            if return_probabilities:
                probs_out[0][:, :, z0:z1, 0] = lab
            return
        vol_probs = slices_to_volume(seg, (x_dim, y_dim), cfg)  # (X, Y, b, C)
        if vol_probs.shape[-1] == 1:
            labels[:, :, z0:z1] = vol_probs[..., 0] > threshold
        else:
            labels[:, :, z0:z1] = np.argmax(vol_probs, axis=-1).astype(np.uint8)
        if return_probabilities:
            probs_out[0][:, :, z0:z1] = vol_probs

    bar, own_bar = _progress(progress, n, "slices")
    step = None
    if bar is not None:
        def step(i: int) -> None:
            bar.update(min(n, (i + 1) * bs) - i * bs)
    try:
        _run_stages(n_batches, produce, infer, consume, overlap, timings, step)
    finally:
        if own_bar and bar is not None:
            bar.close()

    if largest_component:
        t0 = time.perf_counter()
        labels = postprocess_labels(labels, True)
        if timings is not None:
            timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - t0
    if return_probabilities:
        return labels, probs_out[0]
    return labels


def _resize_labels(label_slices: np.ndarray, in_plane: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """(b, S, S) label maps -> (X, Y, b) uint8, nearest neighbour (or un-crop)."""
    import tensorflow as tf

    x = np.rint(label_slices).astype(np.int32)[..., None]
    if cfg.resize_mode == "crop":
        res = tf.image.resize_with_crop_or_pad(x, in_plane[0], in_plane[1]).numpy()
    else:
        res = tf.image.resize(x, in_plane, method="nearest").numpy()
    return np.moveaxis(res[..., 0], 0, 2).astype(np.uint8)


def _progress(progress, total: int, unit: str):
    if progress is False or progress is None:
        return None, False
    if progress is True:
        from tqdm.auto import tqdm
        return tqdm(total=total, unit=unit, leave=False, dynamic_ncols=True), True
    return progress, False  # a caller's bar


# ------------------------------------------------------------------------------------------------
# models from files
# ------------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready for inference plus its saved info (task, preprocessing, threshold)."""

    model: Any
    info: ModelInfo
    path: Path | None = None

    @property
    def cfg(self) -> PreprocessConfig:
        return config_from_info(self.info, self.path)


def config_from_info(info: ModelInfo, source: Any = None) -> PreprocessConfig:
    """The PreprocessConfig saved in a model's info, with the task's HU window filled in."""
    try:
        cfg = PreprocessConfig.from_dict(info.preprocess)
        return cfg.for_task(info.task) if cfg.hu_window is None else cfg
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"model info of '{source}': invalid preprocessing record ({exc})") from exc


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load a model file (.keras, SavedModel folder, .onnx, .tflite, engine) with its model info.

    ``.keras`` files are loaded with Keras (training form, gated by :func:`predict_volume`); every
    other format through :func:`keras_unet3plus.runtimes.load_runtime` (deploy form, gated in-graph).
    """
    from .modelinfo import load_info

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    if path.is_file() and path.suffix.lower() == ".keras":
        # Keras files run in their training form (seg + cls, gated here): only the two outputs are
        # computed (no side outputs) and `gate=False` stays possible. Same masks as the runtime's
        # deploy form (tested).
        import keras

        info = load_info(path)
        try:
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:
            raise ValueError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from exc
        return LoadedModel(model, info, path)
    try:
        from .runtimes import load_runtime
    except ImportError as exc:  # pragma: no cover - runtimes is part of the package
        raise ValueError(f"{path}: only .keras models can be loaded without keras_unet3plus.runtimes") from exc
    try:
        rt = load_runtime(path, require_info=True)
    except (FileNotFoundError, ValueError, TypeError, ImportError):
        raise
    except Exception as exc:  # runtime-specific failures (corrupt file, unsupported op)
        raise ValueError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from exc
    return LoadedModel(rt, rt.info, path)


def _resolve_model(model, info: ModelInfo | None) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    info = info or getattr(model, "info", None)
    if info is None:
        raise ValueError("a model object needs its ModelInfo (pass info=...) to know its preprocessing")
    return LoadedModel(model, info, None)


# ------------------------------------------------------------------------------------------------
# files and folders
# ------------------------------------------------------------------------------------------------

def write_nifti_atomic(img, path: str | os.PathLike) -> Path:
    """Save a NIfTI mask so a crash never leaves a half-written file (keras_unet3plus.atomic)."""
    from .data.nifti import save_nifti_atomic

    return save_nifti_atomic(img, path)


def mask_image(labels_original: np.ndarray, volume) -> Any:
    """A uint8 NIfTI of a mask already in the source file's voxel order, with its header and affine.

    The source header is copied (qform/sform codes, pixdim, units), its data type set to uint8 and
    its scaling removed; a source with trailing singleton dimensions gets them back.
    """
    import nibabel as nib

    data = np.asarray(labels_original, dtype=np.uint8)
    header = volume.header.copy() if isinstance(volume.header, nib.Nifti1Header) else None  # DICOM: none
    if header is not None:
        file_shape = tuple(int(s) for s in header.get_data_shape())
        if int(np.prod(file_shape)) == data.size and file_shape[:3] == data.shape[:3]:
            data = data.reshape(file_shape)
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(data, volume.original_affine, header=header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, max(1, int(data.max()) if data.size else 1)
    return img


def nifti_case_name(path: str | os.PathLike) -> str:
    from .data.nifti import strip_nii

    return strip_nii(Path(path).name)


def _read_volume(path: Path):
    from .data.nifti import load_image

    return load_image(path)


def predict_file(
    model,
    image_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    info: ModelInfo | None = None,
    batch_size: int = 8,
    gate: bool = True,
    threshold: float | None = None,
    largest_component: bool = False,
    overlap: bool = True,
    progress: bool | Any = False,
    timings: dict | None = None,
    volume=None,
    formats: Iterable[str] = ("nifti",),
) -> np.ndarray:
    """Segment one NIfTI file (or an already read volume); returns the mask in the source's voxel order.

    ``model``: a path (loaded with :func:`load_model`) or a loaded model (then ``info`` is needed
    unless it is a :class:`LoadedModel` / runtime with ``.info``). ``threshold=None`` uses the
    model's saved threshold. With ``output_path`` the mask is written atomically with the input's
    affine and header. ``volume``: an already loaded :class:`~keras_unet3plus.data.volume.Volume`
    (NIfTI or DICOM). ``formats``: ``"nifti"`` and/or ``"dicom-seg"`` (DICOM sources only); a
    DICOM SEG goes to ``output_path`` with the suffix ``.seg.dcm`` when both are asked for.
    """
    loaded = _resolve_model(model, info)
    cfg = config_from_info(loaded.info, loaded.path)
    if threshold is None:
        threshold = float(loaded.info.threshold)
    t0 = time.perf_counter()
    vol = volume if volume is not None else _read_volume(Path(image_path))
    if timings is not None:
        timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
    try:
        labels = predict_volume(loaded.model, vol.image, cfg, batch_size=batch_size, gate=gate,
                                threshold=threshold, largest_component=largest_component,
                                overlap=overlap, progress=progress, timings=timings)
    except ValueError as exc:
        raise ValueError(f"{image_path}: {exc}") from exc
    original = vol.to_original(labels)
    if output_path is not None:
        t0 = time.perf_counter()
        write_outputs(vol, labels, original, Path(output_path), formats, loaded.info)
        if timings is not None:
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t0
    return original


OUTPUT_FORMATS = ("nifti", "dicom-seg")


def output_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Where each format of one prediction goes: ``base`` for the first, ``.seg.dcm`` for a SEG."""
    formats = list(formats)
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad or not formats:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {bad or formats}")
    from .data.nifti import strip_nii

    stem = strip_nii(base.name)
    stem = stem[: -len(".seg.dcm")] if stem.endswith(".seg.dcm") else stem
    stem = stem[: -len(".dcm")] if stem.endswith(".dcm") else stem
    paths = {}
    if "nifti" in formats:
        paths["nifti"] = base if base.name.endswith((".nii", ".nii.gz")) else base.with_name(stem + ".nii.gz")
    if "dicom-seg" in formats:
        paths["dicom-seg"] = base if (base.suffix == ".dcm" and "nifti" not in formats) else base.with_name(stem + ".seg.dcm")
    return paths


def write_outputs(vol, labels: np.ndarray, original: np.ndarray, base: Path, formats: Iterable[str],
                  info: ModelInfo) -> dict[str, Path]:
    """Write one prediction in every asked format (each atomically); returns format -> path."""
    paths = output_paths(base, formats)
    if "dicom-seg" in paths and not _is_dicom(vol):
        raise ValueError(f"{vol.image_path}: a DICOM SEG output needs a DICOM input series "
                         "(it references the source images); use --format nifti for NIfTI inputs")
    if "nifti" in paths:
        write_nifti_atomic(mask_image(original, vol), paths["nifti"])
    if "dicom-seg" in paths:
        from .data.dicom_seg import write_dicom_seg

        write_dicom_seg(vol, labels, paths["dicom-seg"], info.task)
    return paths


def _is_dicom(vol) -> bool:
    from .data.dicom import DicomSeries

    return isinstance(getattr(vol, "source", None), DicomSeries)


@dataclass
class CaseResult:
    """Outcome of one case in folder mode."""

    case_id: str
    image_path: Path
    output_path: Path | None
    ok: bool
    error: str = ""
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)


def find_input_files(folder: str | os.PathLike) -> list[Path]:
    """NIfTI files directly in ``folder`` (hidden / AppleDouble files skipped), naturally sorted."""
    from .data.nifti import DataFileNotFoundError, is_nifti_name

    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileNotFoundError(f"{folder}: input folder not found")
    import re

    def key(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if is_nifti_name(p.name) and p.is_file()), key=key)


@dataclass
class InputScan:
    """One scan to segment, a NIfTI file or a DICOM CT series, and the name its outputs take."""

    name: str
    path: Path
    series: Any = None   # the DicomSeries of a DICOM input

    def read(self):
        if self.series is not None:
            from .data.dicom import read_dicom_series

            return read_dicom_series(self.series, case_id=self.name)
        from .data.nifti import load_image

        return load_image(self.path, case_id=self.name)


_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def find_inputs(path: str | os.PathLike, notes: list[str] | None = None) -> list[InputScan]:
    """The scans under ``path``: a NIfTI file; a folder of NIfTI files (nnU-Net's ``{case}_0000``
    names give ``{case}``); or, when it holds no NIfTI file, every CT DICOM series found in it
    (recursively, one scan per series; what was skipped and why is appended to ``notes``)."""
    from .data.nifti import DataError, DataFileNotFoundError, is_nifti_name, strip_nii

    path = Path(path)
    if path.is_file():
        if not is_nifti_name(path.name):
            raise DataError(f"{path}: not a NIfTI file (.nii / .nii.gz); give a DICOM series as its folder")
        return [InputScan(strip_nii(path.name), path)]
    if not path.is_dir():
        raise DataFileNotFoundError(f"{path}: input not found")
    files = find_input_files(path)
    if files:
        names = [strip_nii(f.name) for f in files]
        channels = [_CHANNEL.match(n) for n in names]
        if all(channels):   # nnU-Net raw layout
            extra = sorted({m.group("channel") for m in channels} - {"0000"})
            if extra:
                raise DataError(f"{path}: images have channels {', '.join(['0000'] + extra)} (nnU-Net "
                                f"{{case}}_XXXX names); this model takes one CT channel (_0000)")
            names = [m.group("case") for m in channels]
        return [InputScan(n, f) for n, f in zip(names, files)]
    from .data.dicom import find_dicom_series

    found = find_dicom_series(path)
    if notes is not None:
        notes.extend(found.skipped)
    if not found:
        reasons = "; ".join(found.skipped[:3])
        raise DataFileNotFoundError(f"{path}: no NIfTI file and no CT DICOM series found"
                                    + (f" ({reasons})" if reasons else ""))
    return [InputScan(series.name, series.folder, series) for series in found]


def predict_folder(
    model,
    input_dir: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    info: ModelInfo | None = None,
    batch_size: int = 8,
    gate: bool = True,
    threshold: float | None = None,
    largest_component: bool = False,
    overlap: bool = True,
    progress: bool = False,
    output_suffix: str | None = None,
    output_name: Callable[[Path], str] | None = None,
    formats: Iterable[str] = ("nifti",),
    notes: list[str] | None = None,
) -> list[CaseResult]:
    """Segment every scan of a folder (NIfTI files or DICOM series, see :func:`find_inputs`), or a
    list of files, into ``output_dir``.

    One bad case (unreadable, 2D/4D, a broken series, ...) is recorded in its :class:`CaseResult`
    and the others still run. NIfTI outputs keep the input's name (``{case}_0000`` -> ``{case}``, as
    nnUNetv2_predict writes; ``output_suffix`` ``".nii.gz"`` / ``".nii"`` changes the extension;
    ``output_name(path)`` overrides the name); DICOM series are named from the series. The next
    case is read while the current one is predicted (``overlap``).
    """
    loaded = _resolve_model(model, info)
    if isinstance(input_dir, (str, os.PathLike)):
        scans = find_inputs(input_dir, notes)
    else:
        scans = [s if isinstance(s, InputScan) else find_inputs(s)[0] for s in input_dir]
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def out_path(scan: InputScan) -> Path:
        p = scan.path
        if output_name is not None:
            return out_dir / output_name(p)
        if output_suffix:
            return out_dir / (scan.name + output_suffix)
        if scan.series is None and p.name.endswith(".nii"):
            return out_dir / (scan.name + ".nii")
        return out_dir / (scan.name + ".nii.gz")

    results: list[CaseResult] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(scans), unit="case", dynamic_ncols=True)

    def timed_read(scan: InputScan):
        t0 = time.perf_counter()
        v = scan.read()
        return v, time.perf_counter() - t0

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet3plus-read") if overlap else None
    try:
        pending = pool.submit(timed_read, scans[0]) if (pool and scans) else None
        for k, scan in enumerate(scans):
            path = scan.path
            t_case = time.perf_counter()
            timings: dict = {}
            target = out_path(scan)
            try:
                if pool is not None:
                    fut = pending
                    pending = pool.submit(timed_read, scans[k + 1]) if k + 1 < len(scans) else None
                    vol, t_read = fut.result()
                else:
                    vol, t_read = timed_read(scan)
                timings["read"] = t_read
                predict_file(loaded, path, target, batch_size=batch_size, gate=gate, threshold=threshold,
                             largest_component=largest_component, overlap=overlap,
                             progress=progress, timings=timings, volume=vol, formats=formats)
                results.append(CaseResult(scan.name, path, target, True,
                                          seconds=time.perf_counter() - t_case, timings=timings))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
                msg = str(exc)
                if str(path) not in msg and path.name not in msg:
                    msg = f"{path}: {msg}"
                results.append(CaseResult(scan.name, path, None, False, error=msg,
                                          seconds=time.perf_counter() - t_case, timings=timings))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(scan.name)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return results
