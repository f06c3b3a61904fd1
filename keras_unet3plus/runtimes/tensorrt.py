"""A serialized TensorRT engine (`.engine` / `.plan`) on an NVIDIA GPU, TensorRT 10 or 11.

Never run here (no GPU was lent to this project): written against NVIDIA's documented API.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._extras import require
from ..modelinfo import ModelInfo
from .base import Runtime


class TensorRTRuntime(Runtime):
    """A serialized TensorRT engine (`.engine` / `.plan`), TensorRT 10 or 11, on the GPU.

    Device memory and copies go through CUDA Python (`cuda-python`, in the `[tensorrt]` extra).
    """

    kind = "tensorrt"
    suffixes = (".engine", ".plan", ".trt")

    def __init__(self, path, info: ModelInfo | None = None):
        super().__init__(path, info)
        trt = require("tensorrt", "tensorrt")
        self._cudart = _cudart()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ValueError(
                f"TensorRT engine '{path}' could not be deserialized (built with another TensorRT "
                f"version or GPU? this is TensorRT {trt.__version__})"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._input_name = inputs[0]
        self._output_names = [n for n in names if n not in inputs]
        shape = tuple(self.engine.get_tensor_shape(self._input_name))
        self.input_shape = (None, *shape[1:])
        _min, _opt, max_shape = self.engine.get_tensor_profile_shape(self._input_name, 0)
        self._max_shape = tuple(max_shape)
        err, self._stream = self._cudart.cudaStreamCreate()
        _check_cuda(err, "cudaStreamCreate")

    def _run(self, batch):
        trt, cudart = self.trt, self._cudart
        if batch.shape[0] > self._max_shape[0]:
            out: dict[str, list] = {}
            step = self._max_shape[0]
            for i in range(0, batch.shape[0], step):
                for k, v in self._run(batch[i : i + step]).items():
                    out.setdefault(k, []).append(v)
            return {k: np.concatenate(v) for k, v in out.items()}
        self.context.set_input_shape(self._input_name, tuple(batch.shape))
        buffers, host_out = [], {}
        try:
            for name in [self._input_name, *self.output_names]:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                err, ptr = cudart.cudaMalloc(max(nbytes, 1))
                _check_cuda(err, "cudaMalloc")
                buffers.append(ptr)
                self.context.set_tensor_address(name, int(ptr))
                if name == self._input_name:
                    host = np.ascontiguousarray(batch.astype(dtype, copy=False))
                    _check_cuda(
                        cudart.cudaMemcpyAsync(
                            ptr, host.ctypes.data, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream
                        )[0],
                        "cudaMemcpy",
                    )
                else:
                    host_out[name] = (np.empty(shape, dtype), ptr, nbytes)
            if not self.context.execute_async_v3(self._stream):
                raise RuntimeError(f"TensorRT engine '{self.path}': execute_async_v3 failed")
            for host, ptr, nbytes in host_out.values():
                _check_cuda(
                    cudart.cudaMemcpyAsync(
                        host.ctypes.data, ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream
                    )[0],
                    "cudaMemcpy",
                )
            _check_cuda(cudart.cudaStreamSynchronize(self._stream)[0], "cudaStreamSynchronize")
            return {name: host for name, (host, _, _) in host_out.items()}
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)


def _cudart():
    """CUDA runtime bindings of cuda-python (12.x+: `cuda.bindings.runtime`; older: `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        try:
            from cuda import cudart

            return cudart
        except ImportError:
            require("cuda_python_missing_for_tensorrt_runtime", "tensorrt")  # raises with the pip hint


def _check_cuda(err, what: str) -> None:
    code = getattr(err, "value", err)
    if code not in (0, None):
        raise RuntimeError(f"CUDA call {what} failed: {err}")
