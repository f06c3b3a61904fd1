"""A Keras model as a runtime: a `.keras` file or an in-memory model, in training or deploy form.

Inference (`segment`) runs the model as given, computing only `seg` (and `cls` when the model has
one: training form, gated by the predictor, so `gate=False` stays possible; a `deploy_model()`
carries its gate in the graph). The export check (`predict` / `predict_all`) runs the deploy form
made from it, the graph every exported artefact is held to.
"""
from __future__ import annotations

import os

import numpy as np

from ..modelinfo import ModelInfo
from .base import Runtime

#: attribute of a keras.Model holding its compiled inference function (dies with the model)
_CACHE_ATTR = "_unet3plus_inference_cache"


def output_tensors(model) -> dict:
    """A model's outputs by name, whether it returns a dict or a list."""
    return dict(model.output) if isinstance(model.output, dict) else dict(zip(model.output_names, model.outputs))


def training_outputs(model):
    """The ungated training form of `model` (dict outputs `seg`, `side_*`, `cls`).

    Accepts a `build()` model or a `deploy_model()` wrapper (whose gate/threshold layers are peeled
    off, so a caller can apply its own: the export graph, the deploy form checked against it).
    """
    import keras

    from ..layers import Binarize, ClassGate

    gates = [layer for layer in model.layers if isinstance(layer, (ClassGate, Binarize))]
    outs = output_tensors(model)
    if not gates:
        return model if isinstance(model.output, dict) else keras.Model(model.inputs, outs, name=model.name)
    gate = next((g for g in gates if isinstance(g, ClassGate)), None)
    if gate is not None:
        seg, cls = gate.input
        outs["seg"], outs["cls"] = seg, cls
    else:  # thresholded, ungated: take what goes into Binarize
        outs["seg"] = gates[0].input
    return keras.Model(model.inputs, outs, name=model.name.removesuffix("_deploy"))


def load_keras_model(path: str | os.PathLike):
    """Load a `.keras` file for inference (safe mode: no Lambda layers), naming the file on failure."""
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from exc


def _seg_cls_function(model):
    """A compiled (tf.function) view of `model` computing only `seg` (+ `cls`).

    Side outputs are dropped (less work); the function is cached on the model so the trainer's
    repeated validation calls trace once. Weights are captured by reference, so the cache stays
    valid while the model trains.
    """
    import keras
    import tensorflow as tf

    fn = model.__dict__.get(_CACHE_ATTR)
    if fn is not None:
        return fn
    outs = output_tensors(model)
    if "seg" not in outs:
        raise ValueError(f"model '{model.name}' has no 'seg' output (outputs: {sorted(outs)}); "
                         f"build it with keras_unet3plus.build()")
    selected = {k: outs[k] for k in ("seg", "cls") if k in outs}
    sub = keras.Model(model.inputs, selected, name=f"{model.name}_infer")
    spec = tf.TensorSpec((None, *tuple(model.inputs[0].shape)[1:]), tf.float32)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def infer(x):
        return sub(x, training=False)

    def fn(batch: np.ndarray):
        res = infer(tf.convert_to_tensor(batch, tf.float32))
        cls = res.get("cls")
        return res["seg"].numpy(), None if cls is None else cls.numpy()

    # bypass Keras' attribute tracking
    object.__setattr__(model, _CACHE_ATTR, fn)
    return fn


class KerasRuntime(Runtime):
    """A `.keras` file (or an in-memory model). `predict` runs its `deploy_model()` (gated `seg`);
    `segment` runs the model as given (see the module docstring)."""

    kind = "keras"

    def __init__(self, model, path=None, info: ModelInfo | None = None, threshold: float | None = None,
                 all_outputs: bool = True):
        if isinstance(model, (str, os.PathLike)):
            path = path or model
            model = load_keras_model(model)
        super().__init__(path, info)
        from ..layers import Binarize

        self.keras_model = model
        self._deploy_args = dict(threshold=threshold, all_outputs=all_outputs)
        self._deploy = None
        self.input_shape = tuple(model.inputs[0].shape)
        binarizers = [layer for layer in model.layers if isinstance(layer, Binarize)]
        self.labels_output = bool(binarizers) and (binarizers[-1].input.shape[-1] or 1) > 1

    @property
    def name(self) -> str:
        return self.keras_model.name

    @property
    def num_classes(self) -> int:
        return 1  # a Keras graph says itself whether it emits labels (`labels_output`)

    @property
    def model(self):
        """The deploy form (`deploy_model()` of the training form), built on first use."""
        if self._deploy is None:
            from ..model import deploy_model

            self._deploy = deploy_model(training_outputs(self.keras_model), **self._deploy_args)
        return self._deploy

    @property
    def output_names(self) -> list[str]:
        return list(self.model.output.keys())

    def segment(self, batch):
        return _seg_cls_function(self.keras_model)(batch)

    def _run(self, batch):
        return self.model.predict_on_batch(batch)
