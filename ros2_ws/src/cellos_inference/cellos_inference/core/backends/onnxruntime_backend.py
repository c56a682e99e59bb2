"""ONNX Runtime on the CPU."""
from __future__ import annotations

import numpy as np

from cellos_inference.core.backends.base import Backend, BackendError, LoadedModel
from cellos_inference.core.tensor_check import InputSpec

# ONNX Runtime type strings -> numpy dtype names
_ORT_DTYPES = {
    'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(double)': 'float64',
    'tensor(uint8)': 'uint8', 'tensor(int8)': 'int8', 'tensor(int32)': 'int32',
    'tensor(int64)': 'int64', 'tensor(bool)': 'bool',
}


def _dim(d) -> int:
    return d if isinstance(d, int) and d > 0 else -1


class OnnxRuntimeBackend(Backend):
    name = 'onnxruntime-cpu'

    def __init__(self, intra_op_threads: int = 1, inter_op_threads: int = 1):
        import onnxruntime as ort
        self._ort = ort
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads

    def describe(self) -> str:
        return f'{self.name} (onnxruntime {self._ort.__version__}, {self.intra_op_threads} thread(s))'

    def load(self, path: str, model_id: str, max_batch: int) -> LoadedModel:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(path, sess_options=opts, providers=['CPUExecutionProvider'])
        except Exception as e:  # ORT raises its own exception classes for bad files
            raise BackendError(f'onnxruntime cannot load {path}: {e}') from e
        inputs = []
        for i in session.get_inputs():
            if i.type not in _ORT_DTYPES:
                raise BackendError(f"input '{i.name}' has unsupported type {i.type}")
            inputs.append(InputSpec(i.name, _ORT_DTYPES[i.type], tuple(_dim(d) for d in i.shape)))
        outputs = [o.name for o in session.get_outputs()]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return session.run(outputs, feeds)
        return LoadedModel(inputs, outputs, 'fp32', max_batch, run)
