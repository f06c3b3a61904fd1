"""A SavedModel folder, run through its `serving_default` signature (TensorFlow only, no Keras)."""

from __future__ import annotations

from ..modelinfo import ModelInfo
from .base import Runtime


class SavedModelRuntime(Runtime):
    """A SavedModel folder, through its `serving_default` signature."""

    kind = "savedmodel"

    def __init__(self, path, info: ModelInfo | None = None, signature: str = "serving_default"):
        super().__init__(path, info)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(path))
        if signature not in self._loaded.signatures:
            raise ValueError(
                f"SavedModel '{path}' has no '{signature}' signature (has {list(self._loaded.signatures)})"
            )
        self._fn = self._loaded.signatures[signature]
        inputs = self._fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"SavedModel '{path}': expected one input, signature has {list(inputs)}")
        ((self._input_name, spec),) = inputs.items()
        self.input_shape = tuple(spec.shape.as_list())
        self._output_names = list(self._fn.structured_outputs.keys())

    def _run(self, batch):
        import tensorflow as tf

        out = self._fn(**{self._input_name: tf.constant(batch)})
        return {k: v.numpy() for k, v in out.items()}
