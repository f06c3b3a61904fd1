"""SavedModel export: one `serving_default` signature, input `image (None, H, W, C)`, named outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .graph import GraphSpec, serving_function
from .target import ExportTarget

if TYPE_CHECKING:
    import keras

    from .job import ExportJob


def export_savedmodel(model: keras.Model, path: str | os.PathLike, spec: GraphSpec = GraphSpec()) -> Path:
    """Write the deploy graph of `model` as a SavedModel folder at `path` (must not exist yet).

    Signature `serving_default`: `image` float32 `(batch, H, W, C)` with a dynamic batch axis ->
    `{"seg": ...}` (plus `side_2`.. and `cls` with `spec.outputs == "all"`). Loads with
    `tf.saved_model.load(path).signatures["serving_default"]`, TF Serving, and the LiteRT converter.
    """
    import keras

    serve, _sig, base = serving_function(model, spec)
    archive = keras.export.ExportArchive()
    archive.track(base)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=False)
    return Path(path)


def write(job: ExportJob) -> None:
    """The SavedModel folder at ``job.out``, checked against Keras."""
    sm = job.add(job.out)
    job.log("writing SavedModel ...")
    export_savedmodel(job.model, sm, job.spec)
    job.verify(sm, "fp32")


TARGET = ExportTarget(
    "savedmodel",
    ("fp32",),
    suffix="",
    needs=lambda precision: [],
    runtime="SavedModelRuntime",
    write=write,
    default_name=lambda stem, precision: f"{stem}_savedmodel",
)
