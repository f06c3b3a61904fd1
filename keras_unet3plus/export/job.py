"""One export in progress: how it was asked for (`ExportOptions`), what a target's writer is given
(`ExportJob`) and what it returns (`ExportResult`). A writer stages its files (`add`), checks each
against Keras (`verify`), and writes the skip-absent pair through `write_pair` / `verify_pair`, the
same for every target."""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from ..modelinfo import ExportRecord, ModelInfo, PairIdentity
from ..output_names import CLS, SEG
from .graph import GraphSpec
from .staging import Stage
from .verify import ParityRow, format_table


@dataclass(frozen=True)
class ExportOptions:
    """How an export is made and checked: one field per `unet3plus export` flag."""

    spec: GraphSpec = GraphSpec()  # deploy form: gated `seg` vs all outputs, threshold
    data_dir: str | os.PathLike | None = None  # cases for verification/calibration (default: phantoms)
    verify_slices: int = 16
    calib_slices: int = 32
    batch_range: Sequence[int] = (1, 8, 16)  # TensorRT optimization profile min/opt/max
    opset: int = 17
    timing_cache: str | os.PathLike | None = None  # TensorRT (default: beside the engine)
    legacy_trt_flags: bool = False  # TensorRT 10: builder flags instead of strong typing
    check: bool = True  # the parity check (nothing is written when it fails)
    skip_absent_pair: bool = True  # a model with a CGM also gets the skip-absent pair

    @classmethod
    def of(cls, options: ExportOptions | GraphSpec | None, **overrides: Any) -> ExportOptions:
        """``options`` (a bare `GraphSpec`: the old fifth argument) with keyword ``overrides``;
        an unknown keyword is a TypeError as for any function."""
        if isinstance(options, GraphSpec):
            options = cls(spec=options)
        known = {f.name for f in dataclasses.fields(cls)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"export_model() got an unexpected keyword argument {name!r}")
        return dataclasses.replace(options or cls(), **overrides)


@dataclass
class ExportResult:
    """Artefacts written (final paths), the verification rows and notes (TensorRT build path...)."""

    target: str
    precision: str
    artefacts: list[Path] = field(default_factory=list)
    rows: list[ParityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def table(self) -> str:
        return format_table(self.rows)


@dataclass
class ExportJob:
    """Everything a target's writer needs for one export, and the record its checks fill in."""

    model: object
    out: Path
    precision: str
    options: ExportOptions
    info: ModelInfo
    record: ExportRecord
    reference: dict | None
    slices: np.ndarray | None
    calibration: np.ndarray | None
    result: ExportResult
    stage: Stage
    work: Path
    log: Callable[[str], None]
    finals: dict = field(default_factory=dict)
    keras_seconds: float | None = None

    @property
    def spec(self) -> GraphSpec:
        return self.options.spec

    @property
    def hwc(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.model.inputs[0].shape[1:])

    def artefact_info(self) -> ModelInfo:
        """The info every artefact of this export carries: the model's, with the in-graph threshold
        and the export record as it stands."""
        info = copy.deepcopy(self.info)
        if self.spec.threshold is not None:
            info.threshold = float(self.spec.threshold)
        info.set_export_record(self.record)
        return info

    def add(self, final: Path, sidecar: bool = True) -> Path:
        """A staged temporary path that becomes ``final`` once every check has passed."""
        tmp = self.stage.add(final, sidecar)
        self.finals[tmp] = final
        return tmp

    def verify(self, path: Path, precision: str) -> None:
        """Parity against Keras, then the speed of both on one batch of the same slices; both go
        into the export record, where ``predict --runtime auto`` reads them."""
        if not self.options.check:
            return
        from ..runtimes import KerasRuntime, load_runtime
        from .verify import artefact_check, seconds_per_slice, verify_runtime

        rt = load_runtime(path, info=self.info)
        row = verify_runtime(
            rt, self.reference, self.slices, self.spec, precision, artefact=str(self.finals.get(path, path))
        )
        self.result.rows.append(row)
        if path not in self.finals:
            return
        if self.keras_seconds is None:
            self.keras_seconds = seconds_per_slice(KerasRuntime(self.model).segment, self.slices)
        # one record per artefact name: a TensorRT export writes its ONNX graph and engine
        self.record.checks[self.finals[path].name] = artefact_check(rt, row, self.slices, self.keras_seconds)

    def has_pair(self) -> bool:
        """Models with a CGM, exported gated, get the skip-absent pair (unless asked not to)."""
        from ..runtimes.keras import output_tensors, training_outputs

        return self.options.skip_absent_pair and self.spec.gate and CLS in output_tensors(training_outputs(self.model))

    def write_pair(self, write: Callable[[tuple[Path, Path]], None]) -> tuple[Path, Path] | None:
        """The skip-absent pair beside ``out`` (same precision), staged: ``write(staged paths)``
        makes the two parts; their identity goes into the export record, which is how a runtime
        knows the pair is this export's. None when the model gets no pair."""
        from ..runtimes.base import part_paths

        if not self.has_pair():
            return None
        self.log("writing the skip-absent pair (graph up to the CGM, decoder) ...")
        finals = part_paths(self.out)
        staged = tuple(self.add(final, sidecar=False) for final in finals)
        write(staged)
        self.record.pair = PairIdentity.of(staged, names=tuple(f.name for f in finals))
        return staged

    def verify_pair(self, rt) -> None:
        """The skip-absent pair, run by ``rt`` (the staged artefact's runtime, opened with
        ``artefact_info()`` and the staged pair) as ``predict --skip-absent`` runs it, against the
        Keras deploy graph: the same parity bar as the graph."""
        if not self.options.check:
            return
        from .verify import pair_runtime, verify_runtime

        rt.pair_parts()  # the identity just recorded: raises if it does not hold
        name = " + ".join(self.finals[p].name for p in rt.pair)
        reference = {k: v for k, v in self.reference.items() if k in (SEG, "_prob")}  # seg only
        row = verify_runtime(
            pair_runtime(rt),
            reference,
            self.slices,
            GraphSpec(threshold=self.spec.threshold),
            self.precision,
            artefact=name,
        )
        self.result.rows.append(row)
