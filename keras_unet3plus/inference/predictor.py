"""The Predictor: a runtime, its preprocessing and the prediction options, held once.

Built from a model path (:meth:`Predictor.from_path`: ``.keras``, SavedModel folder, ``.onnx``,
``.tflite``, TensorRT engine, with the ModelInfo saved beside it) or from a model object (a
``keras.Model`` in training or deploy form, a :class:`~keras_unet3plus.runtimes.Runtime`) plus its
ModelInfo or PreprocessConfig. Its methods take only data: a volume, a file, a folder.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import numpy as np

from ..data.preprocess import PreprocessConfig, slices_to_volume, volume_to_slices
from ..data.volume import context_windows, slab_source
from ..modelinfo import ModelInfo
from ..runtimes import Runtime, load_runtime, runtime_kind
from ..runtimes.auto import export_candidates
from .inputs import InputScan, find_inputs
from .options import PredictOptions
from .outputs import OutputError, output_paths, probabilities_path, write_outputs
from .postprocess import apply_gate, labels_from_probabilities, postprocess_labels, resize_labels
from .stages import progress_bar, run_stages, timed

__all__ = ["Predictor", "PredictOptions", "CaseResult", "open_runtime"]


@dataclass
class CaseResult:
    """Outcome of one case in folder mode.

    ``outputs``: format -> path of every file written whole (a failed case may have some: a NIfTI
    mask beside a DICOM SEG the source headers could not make; ``error`` then says which failed
    and why). ``notes``: what the reader left out of the series (localizers, dose screens, ...).
    """

    case_id: str
    image_path: Path
    output_path: Path | None
    ok: bool
    error: str = ""
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def open_runtime(
    path: str | os.PathLike, *, runtime: str = "model", precision: str = "fp32", notes: list[str] | None = None
) -> Runtime:
    """Load a model file with its ModelInfo (required: it holds the preprocessing), naming the file
    in every error.

    ``runtime="auto"``: for a ``.keras`` file, the fastest of its exports that passed parity (see
    :mod:`keras_unet3plus.runtimes.auto`), else the file itself; ``notes`` collects what was chosen
    and why. ``precision``: compute dtype of a Keras model (``bf16`` pays off only on CPUs that
    have it, see :mod:`keras_unet3plus.runtimes.cpu`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    if runtime not in ("model", "auto"):
        raise ValueError(f"runtime must be 'model' or 'auto', got {runtime!r}")
    notes = notes if notes is not None else []
    kwargs: dict[str, Any] = {"precision": precision} if precision != "fp32" else {}
    if kwargs and runtime_kind(path) != "keras":
        raise ValueError(
            f"{path}: --precision {precision} applies to .keras models; an export has its "
            f"precision fixed at export time"
        )
    if runtime == "auto" and runtime_kind(path) == "keras" and not kwargs:
        for cand in export_candidates(path, notes):
            if cand.speedup <= 1.0:
                break
            try:
                rt = load_runtime(cand.path, require_info=True)
            except Exception as exc:  # noqa: BLE001 - missing extra, no GPU: try the next one
                notes.append(f"{cand.path.name}: cannot run here ({type(exc).__name__}: {exc})")
                continue
            notes.append(f"runtime auto: {cand.describe()}")
            return rt
        notes.append(f"runtime auto: {path.name} (Keras; no faster export with a passed parity check beside it)")
    try:
        return load_runtime(path, require_info=True, **kwargs)
    except (FileNotFoundError, ValueError, TypeError, ImportError):
        raise
    except Exception as exc:  # runtime-specific failures (corrupt file, unsupported op)
        raise ValueError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from exc


def _as_runtime(model, info: ModelInfo | None) -> Runtime:
    if isinstance(model, (list, tuple)):  # an ensemble: its members' probabilities averaged
        from .ensemble import EnsembleRuntime

        return EnsembleRuntime([_as_runtime(m, info) for m in model])
    if isinstance(model, (str, os.PathLike)):
        return open_runtime(model)
    return load_runtime(model, info)


def run_once_per_blank(run: Callable[[np.ndarray], tuple], batch: np.ndarray) -> tuple:
    """``run(batch)`` where all-zero (blank: nothing inside the HU window) slices are computed once.

    Exact: the model maps equal inputs to equal outputs. Scans padded with air or cropped FOV
    borders save their model time.
    """
    blank = ~batch.reshape(len(batch), -1).any(axis=1)
    if blank.sum() < 2:
        return run(batch)
    keep = np.flatnonzero(~blank)
    first_blank = int(np.flatnonzero(blank)[0])
    rows = np.concatenate([keep, [first_blank]])
    outs = run(batch[rows])
    where = np.full(len(batch), len(keep))  # blank rows read the blank's result
    where[keep] = np.arange(len(keep))
    return tuple(None if o is None else np.asarray(o)[where] for o in outs)


class Predictor:
    """Segment CT volumes, files and folders with one model and one set of options.

    ``model``: a model path, a ``keras.Model``, a Runtime, another Predictor (its runtime and
    info are shared), or a list of those: an ensemble (:class:`~.ensemble.EnsembleRuntime`).
    ``info``: the model's ModelInfo when the model object does not carry one.
    ``cfg``: the preprocessing, when it is not the info's (training validation passes its own).
    The options are :class:`PredictOptions`' fields.
    """

    def __init__(self, model, info: ModelInfo | None = None, *, cfg: PreprocessConfig | None = None, **options):
        if isinstance(model, Predictor):
            info, cfg = info or model.info, cfg or model._cfg
            model = model.runtime
        if cfg is not None and not isinstance(cfg, PreprocessConfig):
            raise TypeError(f"cfg must be a PreprocessConfig, got {type(cfg).__name__}")
        self.options = PredictOptions(**options)
        self.runtime: Runtime = _as_runtime(model, info)
        self.info: ModelInfo | None = info or self.runtime.info
        self._cfg: PreprocessConfig | None = cfg

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        runtime: str = "model",
        precision: str = "fp32",
        notes: list[str] | None = None,
        **options,
    ) -> Predictor:
        """A model file with its saved info: the preprocessing and threshold it was trained with.
        ``runtime`` / ``precision`` / ``notes``: see :func:`open_runtime`."""
        return cls(open_runtime(path, runtime=runtime, precision=precision, notes=notes), **options)

    @classmethod
    def from_paths(
        cls, paths, *, runtime: str = "model", precision: str = "fp32", notes: list[str] | None = None, **options
    ) -> Predictor:
        """An ensemble of model files (nnU-Net's ``-f 0 1 2 3 4``): their probabilities averaged per
        slice, the CGM decision from the averaged ``cls``. The models must share task, classes and
        preprocessing: checked as each is opened, before any prediction, in one line naming both."""
        from .ensemble import EnsembleRuntime, check_members

        members: list[Runtime] = []
        for path in paths:
            members.append(open_runtime(path, runtime=runtime, precision=precision, notes=notes))
            check_members([members[0], members[-1]])
        return cls(EnsembleRuntime(members), **options)

    # -- what the model needs ----------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self.runtime.path

    @property
    def model(self):
        """The runtime (the attribute name older callers of ``load_model()`` use)."""
        return self.runtime

    @property
    def cfg(self) -> PreprocessConfig:
        """The preprocessing: the one given, else the ModelInfo's."""
        if self._cfg is None:
            if self.info is None:
                raise ValueError("a model object needs its ModelInfo (pass info=...) to know its preprocessing")
            self._cfg = self.info.preprocess_config(self.path)
        return self._cfg

    @property
    def threshold(self) -> float:
        if self.options.threshold is not None:
            return float(self.options.threshold)
        return float(self.info.threshold) if self.info is not None else 0.5

    def _check(self, cfg: PreprocessConfig) -> None:
        """Raise a clear error when the model cannot take inputs made with ``cfg``."""
        rt = self.runtime
        if rt.channels is not None and rt.channels != cfg.channels:
            raise ValueError(
                f"model '{rt.name}' takes {rt.channels}-channel inputs but its preprocessing "
                f"(context={cfg.context}) makes {cfg.channels} channels; the model and its model-info "
                f"file do not belong together"
            )
        if rt.image_size is not None and rt.image_size != cfg.image_size:
            raise ValueError(
                f"model '{rt.name}' takes {rt.image_size}x{rt.image_size} inputs but its "
                f"preprocessing makes {cfg.image_size}x{cfg.image_size} slices; the model and its "
                f"model-info file do not belong together"
            )

    # -- data ----------------------------------------------------------------------------------
    def predict_volume(
        self,
        hu_volume,
        *,
        return_probabilities: bool = False,
        timings: dict | None = None,
        probability_map: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, Any]:
        """Segment a canonical (RAS) HU volume ``(X, Y, Z)``; returns a uint8 label volume ``(X, Y, Z)``.

        ``hu_volume``: an array, or a volume read a slab at a time (a
        :class:`~keras_unet3plus.data.volume.SlabSource` such as
        :class:`~keras_unet3plus.data.nifti.NiftiSlabs`, what :meth:`predict_file` streams a NIfTI
        file through). One output channel: ``prob > threshold``; several (softmax): argmax. With
        ``return_probabilities`` returns ``(labels, probabilities (X, Y, Z, C) float32)`` (gated
        slices are all zero). Memory is bounded by the batch: the input is read, windowed and resized
        ``batch_size`` slices at a time (plus their 2.5D neighbours; a file in the order it stores
        them), and only the uint8 mask of the whole volume is held. ``timings`` (a dict)
        accumulates seconds per stage (preprocess, which includes reading a streamed file / model /
        postprocess). With ``probability_map`` returns ``(labels, ProbabilityMap)``: the probabilities
        before the gate and the CGM's per-slice ``cls`` (what ``--save-probabilities`` writes).
        """
        source = _slab_source_of(hu_volume)
        cfg = self.cfg
        cfg.window()  # raises when the HU window is not set
        self._check(cfg)
        opts, threshold = self.options, self.threshold
        sink = _VolumeSink(self.runtime, cfg, source.shape, threshold, opts.gate, return_probabilities, probability_map)
        self._stream(source, cfg, sink, timings)

        labels = sink.labels
        if opts.largest_component:
            with timed(timings, "postprocess"):
                labels = postprocess_labels(labels, True)
        if probability_map:
            return labels, self._probability_map(sink)
        if return_probabilities:
            return labels, sink.probabilities
        return labels

    def _stream(self, source, cfg: PreprocessConfig, sink: _VolumeSink, timings: dict | None) -> None:
        """Run the model over ``source`` a batch of slices at a time into ``sink``: the read and
        preprocessing of the next batch and the post-processing of the last overlap the model
        (:func:`run_stages`), and a streamed file is closed whatever happens."""
        rt, opts = self.runtime, self.options
        n, c = source.shape[2], cfg.context
        bs = max(opts.batch_size, c)  # a batch is one read chunk; its neighbours come from the chunks beside it
        windows = context_windows(source, bs, c)

        def produce(i: int) -> tuple[int, np.ndarray]:
            # the next chunk in reading order, with `c` slices of margin: edges replicate only at
            # the true volume edges
            z0, z1, lo, window = next(windows)
            slices = volume_to_slices(window, cfg)
            return z0, slices[z0 - lo : z0 - lo + (z1 - z0)]

        run = self._segment_function()

        def infer(item: tuple[int, np.ndarray]):
            z0, batch = item
            try:
                return z0, run_once_per_blank(run, batch)
            except Exception as exc:
                if isinstance(exc, (MemoryError, KeyboardInterrupt)):
                    raise
                raise ValueError(
                    f"model '{rt.name}' failed on a batch of shape {batch.shape} ({type(exc).__name__}: {exc})"
                ) from exc

        def consume(i: int, item) -> None:
            z0, (seg, cls) = item
            sink.add(z0, seg, cls)

        bar, own_bar = progress_bar(opts.progress, n, "slices")
        try:
            run_stages((n + bs - 1) // bs, produce, infer, consume, opts.overlap, timings, _slice_steps(bar, n, bs))
        finally:
            try:
                windows.close()  # a streamed file is closed now, whatever happened
            except ValueError:  # still running on a producer that did not stop in time: it closes on its own
                pass
            if own_bar and bar is not None:
                bar.close()

    def _segment_function(self) -> Callable[[np.ndarray], tuple]:
        """The runtime's call for a batch: every slice decoded, or (skip-absent) only the slices the
        CGM finds the organ in, refused in one line for a runtime that cannot split at the CGM."""
        rt = self.runtime
        if not self.options.skip_absent:
            return rt.segment
        if not getattr(rt, "can_skip_absent", False):
            raise ValueError(
                f"model '{rt.name}': skip-absent needs a .keras model with a CGM head, or its "
                f"ONNX export with the skip-absent pair beside it (<stem>.encoder.onnx, "
                f"<stem>.decoder.onnx)"
            )
        return rt.segment_present

    def _probability_map(self, sink: _VolumeSink):
        """What ``--save-probabilities`` writes: the sink's probabilities before the gate, its
        per-slice ``cls``, and the model(s) and task they came from."""
        from .ensemble import member_names
        from .probabilities import ProbabilityMap

        info = self.info
        assert sink.probabilities is not None  # written by the first batch; a volume has at least one slice
        return ProbabilityMap(
            sink.probabilities,
            sink.cls if sink.cls_seen else None,
            threshold=sink.threshold,
            task=info.task if info is not None else "",
            num_classes=info.num_classes if info is not None else 1,
            models=member_names(self.runtime),
        )

    def predict_file(
        self,
        image_path: str | os.PathLike,
        output_path: str | os.PathLike | None = None,
        *,
        volume=None,
        timings: dict | None = None,
    ) -> np.ndarray:
        """Segment one scan of any registered format (a NIfTI, NRRD or MetaImage file, a DICOM series
        folder; or an already read ``volume``); returns the mask in the source's voxel order. With
        ``output_path`` the mask is written atomically in every asked format (a DICOM SEG goes to
        ``.seg.dcm`` beside the NIfTI when both are asked for); a format that cannot be written
        raises :class:`~.outputs.OutputError` once the others are. A NIfTI file is streamed
        (:func:`~keras_unet3plus.data.readers.open_volume`): its voxels are read while predicting, so
        their time counts as preprocessing, and memory stays at a batch of slices plus the uint8 mask."""
        _ = self.cfg  # an invalid ModelInfo fails before any reading
        if volume is None:
            from ..data.readers import open_volume

            with timed(timings, "read"):
                volume = open_volume(Path(image_path))
        save_map = self.options.save_probabilities and output_path is not None
        try:
            out = self.predict_volume(volume.image, timings=timings, probability_map=save_map)
        except ValueError as exc:
            if str(image_path) in str(exc) or str(volume.image_path) in str(exc):
                raise  # a streamed file's own error (NaN voxels, truncated) already names it
            raise ValueError(f"{image_path}: {exc}") from exc
        pmap = None
        if isinstance(out, tuple):  # save_map: (labels, ProbabilityMap)
            labels, pmap = out
            pmap.original_affine = np.asarray(volume.original_affine, dtype=np.float64)
        else:
            labels = out
        original = volume.to_original(labels)
        if output_path is not None:
            with timed(timings, "write"):
                if pmap is not None:
                    pmap.save(probabilities_path(Path(output_path)))
                write_outputs(volume, labels, original, Path(output_path), self.options.formats, self.info)
        return original

    def predict_folder(
        self,
        inputs: str | os.PathLike | Iterable[str | os.PathLike | InputScan],
        output_dir: str | os.PathLike,
        *,
        output_suffix: str | None = None,
        output_name: Callable[[Path], str] | None = None,
        notes: list[str] | None = None,
    ) -> list[CaseResult]:
        """Segment every scan of a folder (scan files of any registered format, or DICOM series, see
        :func:`find_inputs`), or a list of files, into ``output_dir``.

        One bad case (unreadable, 2D/4D, a broken series, ...) is recorded in its
        :class:`CaseResult` and the others still run. NIfTI outputs keep the input's name
        (``{case}_0000`` -> ``{case}``, as nnUNetv2_predict writes; ``output_suffix`` ``".nii.gz"``
        / ``".nii"`` changes the extension; ``output_name(path)`` overrides the name); DICOM series
        are named from the series. The next case is read while the current one is predicted
        (``overlap``).
        """
        if isinstance(inputs, (str, os.PathLike)):
            scans = find_inputs(inputs, notes)
        else:
            scans = [s if isinstance(s, InputScan) else find_inputs(s)[0] for s in inputs]
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

        results: list[CaseResult] = []
        bar = None
        if self.options.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(scans), unit="case", dynamic_ncols=True)
        reader = _CaseReader(scans, self.options.overlap)
        try:
            for k, scan in enumerate(scans):
                target = _output_path(scan, out_dir, output_suffix, output_name)
                results.append(self._predict_case(scan, target, partial(reader.read, k)))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(scan.name)
        finally:
            reader.close()
            if bar is not None:
                bar.close()
        return results

    def _predict_case(self, scan: InputScan, target: Path, read: Callable[[], tuple]) -> CaseResult:
        """One case of a folder, read by ``read()`` and written to ``target``: its outcome recorded
        whatever failed, since one bad case must not stop the others."""
        path = scan.path
        t_case = time.perf_counter()
        timings: dict = {}
        notes_of_case = list(scan.series.notes) if scan.series is not None else []

        def result(output_path: Path | None, ok: bool, **kwargs) -> CaseResult:
            return CaseResult(
                scan.name,
                path,
                output_path,
                ok,
                seconds=time.perf_counter() - t_case,
                timings=timings,
                notes=notes_of_case,
                **kwargs,
            )

        try:
            vol, timings["read"] = read()
            self.predict_file(path, target, volume=vol, timings=timings)
            return result(target, True, outputs=self.output_files(target))
        except (KeyboardInterrupt, SystemExit):
            raise
        except OutputError as exc:  # the mask exists; some of its files do too
            written = exc.written
            return result(next(iter(written.values()), None), False, error=str(exc), outputs=written)
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
            msg = str(exc)
            if str(path) not in msg and path.name not in msg:
                msg = f"{path}: {msg}"
            return result(None, False, error=msg)

    def output_files(self, target: Path) -> dict[str, Path]:
        """format -> path of everything one case writes (the probabilities when saved)."""
        paths = output_paths(target, self.options.formats)
        if self.options.save_probabilities:
            paths["probabilities"] = probabilities_path(target)
        return paths

    def __repr__(self):
        return f"<Predictor {self.runtime.kind} {self.runtime.name} {self.options}>"


def _slab_source_of(hu_volume):
    """The volume as a slab source, an array checked to be 3-D and no volume empty, before any work."""
    if not hasattr(hu_volume, "slabs"):
        hu_volume = np.asarray(hu_volume)
        if hu_volume.ndim != 3:
            raise ValueError(f"predict_volume expects an (X, Y, Z) volume, got shape {hu_volume.shape}")
    source = slab_source(hu_volume)
    if min(source.shape) < 1:
        raise ValueError(f"predict_volume got an empty volume, shape {tuple(source.shape)}")
    return source


def _slice_steps(bar, n: int, bs: int) -> Callable[[int], None] | None:
    """The progress bar's update after batch ``i`` (``bs`` slices of ``n``, the last one shorter), or None."""
    if bar is None:
        return None

    def step(i: int) -> None:
        bar.update(min(n, (i + 1) * bs) - i * bs)

    return step


def _output_path(
    scan: InputScan, out_dir: Path, output_suffix: str | None, output_name: Callable[[Path], str] | None
) -> Path:
    """Where a folder's case is written: ``output_name(path)``, else the scan's name with
    ``output_suffix``, else with the input's own NIfTI extension (``.nii`` stays ``.nii``)."""
    if output_name is not None:
        return out_dir / output_name(scan.path)
    if output_suffix:
        return out_dir / (scan.name + output_suffix)
    if scan.series is None and scan.path.name.endswith(".nii"):
        return out_dir / (scan.name + ".nii")
    return out_dir / (scan.name + ".nii.gz")


def _timed_read(scan: InputScan) -> tuple[Any, float]:
    """``(volume, seconds)``: the read time of a case, measured where it is read (maybe on a thread)."""
    t0 = time.perf_counter()
    v = scan.read()
    return v, time.perf_counter() - t0


class _CaseReader:
    """A folder's scans read in order; with ``overlap`` the next one is read on a thread while the
    current one is predicted. A read's error is raised when its case asks for it."""

    def __init__(self, scans: list[InputScan], overlap: bool):
        self.scans = scans
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet3plus-read") if overlap else None
        self.pending = self.pool.submit(_timed_read, scans[0]) if (self.pool and scans) else None

    def read(self, k: int) -> tuple[Any, float]:
        """``(volume, seconds)`` of scan ``k`` (asked for in order); starts reading scan ``k + 1``."""
        if self.pool is None:
            return _timed_read(self.scans[k])
        fut = self.pending
        assert fut is not None  # submitted when scan k - 1 was asked for (scan 0: at the start)
        self.pending = self.pool.submit(_timed_read, self.scans[k + 1]) if k + 1 < len(self.scans) else None
        return fut.result()

    def close(self) -> None:
        """Stop the read-ahead: a read not started is cancelled, one under way is waited for."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _VolumeSink:
    """Where a volume's model outputs land, batch by batch in any order: the uint8 label volume, and
    when asked the probabilities (gated, or before the gate for a probability map) and the CGM's
    per-slice ``cls``. Only the label volume is held unless probabilities are asked for."""

    def __init__(
        self,
        rt: Runtime,
        cfg: PreprocessConfig,
        shape: tuple[int, int, int],
        threshold,
        gate: bool,
        return_probabilities: bool,
        probability_map: bool,
    ):
        self.rt, self.cfg, self.threshold, self.gate = rt, cfg, threshold, gate
        self.return_probabilities, self.probability_map = return_probabilities, probability_map
        x_dim, y_dim, n = shape
        self.size = (x_dim, y_dim)
        self.labels = np.zeros((x_dim, y_dim, n), dtype=np.uint8)
        self.probabilities: np.ndarray | None = None  # allocated once the channel count is known
        self.cls = np.zeros((n, 2), np.float32)  # read only for a probability map, once a batch had one
        self.cls_seen = False

    def add(self, z0: int, seg, cls) -> None:
        """The outputs of slices ``z0 ..`` (``seg`` (B, H, W, C) at the model's size, ``cls`` (B, 2) or None)."""
        rt, cfg, threshold, size = self.rt, self.cfg, self.threshold, self.size
        seg = np.asarray(seg, dtype=np.float32)
        if seg.ndim != 4:
            raise ValueError(f"model '{rt.name}' returned seg of shape {seg.shape}, expected (B, H, W, C)")
        z1 = z0 + seg.shape[0]
        if self.probability_map:
            if rt.seg_is_labels(seg.shape[-1]):
                raise ValueError(
                    f"model '{rt.name}' outputs labels, not probabilities (exported with a "
                    f"threshold): no probabilities to save"
                )
            if cls is not None:
                self.cls[z0:z1], self.cls_seen = np.asarray(cls, np.float32), True
            ungated = slices_to_volume(seg, size, cfg)
        seg, present = apply_gate(seg, cls if self.gate else None)
        if self.probability_map:
            self._probabilities(seg.shape[-1])[:, :, z0:z1] = ungated
            vol_probs = ungated * present[None, None, :, None]
            self.labels[:, :, z0:z1] = labels_from_probabilities(vol_probs, threshold)
            return
        if not present.any() and not self.return_probabilities:
            return  # every slice gated out: labels stay background
        if rt.seg_is_labels(seg.shape[-1]):
            lab = resize_labels(seg[..., 0], size, cfg)
            self.labels[:, :, z0:z1] = lab
            if self.return_probabilities:
                self._probabilities(seg.shape[-1])[:, :, z0:z1, 0] = lab
            return
        vol_probs = slices_to_volume(seg, size, cfg)  # (X, Y, b, C)
        self.labels[:, :, z0:z1] = labels_from_probabilities(vol_probs, threshold)
        if self.return_probabilities:
            self._probabilities(seg.shape[-1])[:, :, z0:z1] = vol_probs

    def _probabilities(self, channels: int) -> np.ndarray:
        """The probability volume, allocated by the first batch that writes to it (the model's
        channel count is known only then)."""
        if self.probabilities is None:
            self.probabilities = np.zeros(self.labels.shape + (channels,), dtype=np.float32)
        return self.probabilities
