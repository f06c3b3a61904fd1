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
from ..output_names import CLS, SEG
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
        outs[SEG], outs[CLS] = seg, cls
    else:  # thresholded, ungated: take what goes into Binarize
        outs[SEG] = gates[0].input
    return keras.Model(model.inputs, outs, name=model.name.removesuffix("_deploy"))


def load_keras_model(path: str | os.PathLike):
    """Load a `.keras` file for inference (safe mode: no Lambda layers), naming the file on failure."""
    import keras

    from .. import layers  # noqa: F401 - registers the package's custom layers, which safe mode looks up

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
    if SEG not in outs:
        raise ValueError(
            f"model '{model.name}' has no 'seg' output (outputs: {sorted(outs)}); build it with keras_unet3plus.build()"
        )
    selected = {k: outs[k] for k in (SEG, CLS) if k in outs}
    infer = _compiled(keras.Model(model.inputs, selected, name=f"{model.name}_infer"))

    def fn(batch: np.ndarray):
        res = infer(tf.convert_to_tensor(batch, tf.float32))
        cls = res.get(CLS)
        return res[SEG].numpy(), None if cls is None else cls.numpy()

    # bypass Keras' attribute tracking
    object.__setattr__(model, _CACHE_ATTR, fn)
    return fn


#: Keras dtype policy of each inference precision
PRECISION_POLICIES = {"fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def with_dtype_policy(model, policy: str):
    """A copy of `model` whose layers compute in `policy` (e.g. ``mixed_bfloat16``), same weights.

    Variables stay float32 (mixed policies), so the weights copy over as they are; the input layer
    and the output activations (``seg``, ``side_*``, ``cls``) keep float32.
    """
    import keras

    config = model.get_config()
    keep_float32 = {t._keras_history[0].name for t in output_tensors(model).values()}

    def set_policy(node):
        if isinstance(node, dict):
            inner = node.get("config")
            if (
                node.get("class_name") != "InputLayer"
                and isinstance(inner, dict)
                and "dtype" in inner
                and inner.get("name") not in keep_float32
            ):
                inner["dtype"] = policy
            for value in node.values():
                set_policy(value)
        elif isinstance(node, list):
            for value in node:
                set_policy(value)

    set_policy(config.get("layers", []))
    copy = type(model).from_config(config) if type(model) is not keras.Model else keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def split_at_classifier(model):
    """``(encoder, decoder)``: the part of `model` the CGM's ``cls`` needs, and the rest.

    ``encoder(x) -> [features..., cls]``, ``decoder(features) -> seg``; chained they equal the
    model exactly. The boundary is found from the graph (every tensor on the ``cls`` path that a
    ``seg``-only layer reads), so backbones split too. Lets inference skip the decoder on slices the
    CGM calls absent. Keras keeps the graph on private attributes (``_keras_history``,
    ``_inbound_nodes``); they are read here only.
    """
    import keras

    outs = output_tensors(model)
    if CLS not in outs or SEG not in outs:
        raise ValueError(f"model '{model.name}' has no CGM 'cls' output: nothing to skip with")

    def producer(t):
        op, node_index, _ = t._keras_history
        return op, op._inbound_nodes[node_index].input_tensors

    on_cls_path, stack = set(), [outs[CLS]]
    while stack:
        op, inputs = producer(stack.pop())
        if id(op) not in on_cls_path:
            on_cls_path.add(id(op))
            stack.extend(inputs)
    boundary, seen, stack = {}, set(), [outs[SEG]]
    while stack:
        op, inputs = producer(stack.pop())
        if id(op) in seen:
            continue
        seen.add(id(op))
        for t in inputs:
            if id(t._keras_history[0]) in on_cls_path:
                boundary[id(t)] = t
            else:
                stack.append(t)
    features = list(boundary.values())
    encoder = keras.Model(model.inputs, features + [outs[CLS]], name=f"{model.name}_to_cls")
    decoder = keras.Model(features, outs[SEG], name=f"{model.name}_decoder")
    return encoder, decoder


def _compiled(model):
    """``model`` as one traced function (inference mode) over its inputs, any batch size."""
    import tensorflow as tf

    specs = [tf.TensorSpec((None, *tuple(t.shape)[1:]), t.dtype) for t in model.inputs]

    @tf.function(input_signature=specs, reduce_retracing=True)
    def run(*xs):
        return model(list(xs), training=False)

    return run


class KerasRuntime(Runtime):
    """A `.keras` file (or an in-memory model). `predict` runs its `deploy_model()` (gated `seg`);
    `segment` runs the model as given (see the module docstring). ``precision="bf16"`` (or
    ``"fp16"``) runs inference (`segment`) in that compute dtype; worth it only on CPUs with native
    support (:mod:`.cpu`). ``fuse_decoder``: run the paper decoder in its exact cheaper form
    (:mod:`keras_unet3plus.fused_decoder`); default: for a model loaded from a file (an in-memory
    model may still be training, and the fused view copies the kernels it rewrites)."""

    kind = "keras"
    suffixes = (".keras",)

    def __init__(
        self,
        model,
        path=None,
        info: ModelInfo | None = None,
        threshold: float | None = None,
        all_outputs: bool = True,
        precision: str = "fp32",
        fuse_decoder: bool | None = None,
    ):
        if precision not in PRECISION_POLICIES:
            raise ValueError(f"Keras precision must be one of {sorted(PRECISION_POLICIES)}, got {precision!r}")
        from_file = isinstance(model, (str, os.PathLike))
        if from_file:
            path = path or model
            model = load_keras_model(model)
        super().__init__(path, info)
        self.precision = precision
        self._split = None
        self._fast = None
        self.fused_decoder = from_file if fuse_decoder is None else bool(fuse_decoder)
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
    def compute_precision(self) -> str:
        return self.precision

    @property
    def fast_model(self):
        """The model `segment`/`encode`/`decode` run: in the chosen precision, the paper decoder
        fused when asked; made on first use (`predict` alone runs the unfused deploy form)."""
        if self._fast is None:
            policy = PRECISION_POLICIES[self.precision]
            fast = with_dtype_policy(self.keras_model, policy) if policy else self.keras_model
            if self.fused_decoder:
                from ..fused_decoder import fuse_upsampled_convs

                fast = fuse_upsampled_convs(fast)
            self._fast = fast
        return self._fast

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

    @property
    def can_skip_absent(self) -> bool:
        return CLS in output_tensors(self.keras_model)

    @property
    def seg_channels(self) -> int:
        return int(output_tensors(self.keras_model)[SEG].shape[-1])

    def _parts(self):
        if self._split is None:
            encoder, decoder = split_at_classifier(self.fast_model)
            self._split = (_compiled(encoder), _compiled(decoder))
        return self._split

    def encode(self, batch):
        *features, cls = self._parts()[0](np.asarray(batch, np.float32))
        return [np.asarray(f) for f in features], np.asarray(cls, dtype=np.float32)

    def decode(self, features):
        return np.asarray(self._parts()[1](*features), dtype=np.float32)

    def segment(self, batch):
        seg, cls = _seg_cls_function(self.fast_model)(batch)
        if self.fast_model is not self.keras_model:
            seg = np.asarray(seg, dtype=np.float32)
            cls = None if cls is None else np.asarray(cls, dtype=np.float32)
        return seg, cls

    def _run(self, batch):
        return self.model.predict_on_batch(batch)
