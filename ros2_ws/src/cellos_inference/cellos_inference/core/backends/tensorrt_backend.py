"""TensorRT 10 on the GPU, device memory and streams via pycuda.

Written against the TensorRT 10 Python API (name-based I/O tensors, ``execute_async_v3``)
and pycuda. Neither installs on the development machines: this module imports without
them and ``TensorRTBackend()`` raises BackendError naming what is missing. The GPU tests in
test/test_tensorrt_backend.py run it where both and a GPU exist.

Per model: the engine is built from the ONNX file with one optimization profile over the
batch dimension (1 .. max_batch), in FP16 where the GPU has fast FP16 (parameter
``fp16``), and the serialized plan is cached on disk (plan_cache.PlanCache) where the user
named a folder (trt_plan_cache); a valid cached plan is deserialized instead of rebuilt. Each
CUDA stream gets its own execution context and its own device buffers, so batches on
different streams never share state.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from cellos_inference.core.backends.base import Backend, BackendError, LoadedModel
from cellos_inference.core.backends.plan_cache import PlanCache, PlanKey
from cellos_inference.core.tensor_check import InputSpec

try:  # optional GPU extra
    import tensorrt as trt
except Exception as _e:  # pragma: no cover - depends on the host
    trt = None
    _TRT_ERROR = f'{type(_e).__name__}: {_e}'
else:  # pragma: no cover
    _TRT_ERROR = ''
try:
    import pycuda.driver as cuda
except Exception as _e:  # pragma: no cover
    cuda = None
    _CUDA_ERROR = f'{type(_e).__name__}: {_e}'
else:  # pragma: no cover
    _CUDA_ERROR = ''

WORKSPACE_BYTES = 1 << 30


def precision_for(fp16: str, platform_has_fast_fp16: bool) -> str:
    """'auto' takes FP16 only where the GPU has fast FP16; 'on' / 'off' force it."""
    if fp16 not in ('auto', 'on', 'off'):
        raise ValueError(f"fp16 must be auto|on|off, got {fp16!r}")
    if fp16 == 'on' or (fp16 == 'auto' and platform_has_fast_fp16):
        return 'fp16'
    return 'fp32'


class _Slot:
    """One CUDA stream with its own execution context and device buffers."""

    def __init__(self, engine, inputs, outputs, max_batch):  # pragma: no cover - GPU only
        self.stream = cuda.Stream()
        self.context = engine.create_execution_context()
        self.device, self.host = {}, {}
        for name in [*(s.name for s in inputs), *outputs]:
            shape = tuple(max_batch if d == -1 else d for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self.host[name] = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
            self.context.set_tensor_address(name, int(self.device[name]))


class _Runner:  # pragma: no cover - GPU only
    def __init__(self, cuda_ctx, engine, inputs, outputs, max_batch, streams):
        self.cuda_ctx, self.engine = cuda_ctx, engine
        self.inputs, self.outputs = inputs, outputs
        self.free: queue.Queue[_Slot] = queue.Queue()
        cuda_ctx.push()
        try:
            for _ in range(streams):
                self.free.put(_Slot(engine, inputs, outputs, max_batch))
        finally:
            cuda_ctx.pop()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        slot = self.free.get()
        self.cuda_ctx.push()
        try:
            for spec in self.inputs:
                a = np.ascontiguousarray(feeds[spec.name])
                slot.context.set_input_shape(spec.name, tuple(a.shape))
                host = slot.host[spec.name][:a.size]
                host[:] = a.ravel()
                cuda.memcpy_htod_async(slot.device[spec.name], host, slot.stream)
            if not slot.context.execute_async_v3(stream_handle=slot.stream.handle):
                raise BackendError('execute_async_v3 failed')
            out = []
            for name in self.outputs:
                shape = tuple(slot.context.get_tensor_shape(name))
                host = slot.host[name][:int(np.prod(shape))]
                cuda.memcpy_dtoh_async(host, slot.device[name], slot.stream)
                out.append((host, shape))
            slot.stream.synchronize()
            return [h.reshape(s).copy() for h, s in out]
        finally:
            self.cuda_ctx.pop()
            self.free.put(slot)

    def close(self):
        self.cuda_ctx.push()
        try:
            while not self.free.empty():
                slot = self.free.get_nowait()
                for mem in slot.device.values():
                    mem.free()
        finally:
            self.cuda_ctx.pop()


class TensorRTBackend(Backend):  # pragma: no cover - GPU only beyond the constructor check
    name = 'tensorrt'

    def __init__(self, plan_cache_dir: str = '', fp16: str = 'auto', streams: int = 2,
                 device_index: int = 0):
        if trt is None or cuda is None:
            raise BackendError('TensorRT backend needs tensorrt and pycuda: '
                               + '; '.join(x for x in (_TRT_ERROR and f'tensorrt: {_TRT_ERROR}',
                                                       _CUDA_ERROR and f'pycuda: {_CUDA_ERROR}') if x))
        cuda.init()
        self.device = cuda.Device(device_index)
        self.gpu_name = self.device.name()
        self.cuda_ctx = self.device.retain_primary_context()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.cache = PlanCache(plan_cache_dir)   # empty: plans built at each start, kept nowhere
        self.fp16, self.streams = fp16, streams
        self.lock = threading.Lock()
        self.last_load_source = ''   # 'cache' | 'built', for logs and tests

    def describe(self) -> str:
        return f'tensorrt {trt.__version__} on {self.gpu_name}'

    def _fast_fp16(self, builder) -> bool:
        has = getattr(builder, 'platform_has_fast_fp16', None)   # deprecated in later 10.x
        if has is not None:
            return bool(has)
        major, minor = self.device.compute_capability()
        return (major, minor) >= (5, 3)

    def _build(self, path: str, max_batch: int, precision: str) -> bytes:
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)   # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self.logger)
        with open(path, 'rb') as f:
            if not parser.parse(f.read()):
                errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise BackendError(f'TensorRT ONNX parser rejected {path}: {errors}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == 'fp16':
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = tuple(tensor.shape)
            if any(d < 0 for d in shape[1:]):
                raise BackendError(f"input '{tensor.name}' {list(shape)}: only the batch "
                                   'dimension may be dynamic for a TensorRT profile')
            rest = shape[1:]
            profile.set_shape(tensor.name, (1, *rest), (max(1, max_batch // 2), *rest),
                              (max_batch, *rest))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(f'TensorRT engine build failed for {path} (see the TensorRT log)')
        return bytes(plan)

    def load(self, path: str, model_id: str, max_batch: int) -> LoadedModel:
        with self.lock:
            self.cuda_ctx.push()
            try:
                precision = precision_for(self.fp16, self._fast_fp16(trt.Builder(self.logger)))
                key = PlanKey(model_id, self.gpu_name, trt.__version__, precision, max_batch)
                data, why = self.cache.load(key)
                engine = self.runtime.deserialize_cuda_engine(data) if data else None
                self.last_load_source = 'cache'
                if engine is None:
                    data = self._build(path, max_batch, precision)
                    self.cache.store(key, data)
                    engine = self.runtime.deserialize_cuda_engine(data)
                    self.last_load_source = 'built'
                if engine is None:
                    raise BackendError(f'TensorRT could not deserialize the plan for {path}')
                inputs, outputs = [], []
                for i in range(engine.num_io_tensors):
                    name = engine.get_tensor_name(i)
                    if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
                        inputs.append(InputSpec(name, dtype, tuple(engine.get_tensor_shape(name))))
                    else:
                        outputs.append(name)
            finally:
                self.cuda_ctx.pop()
        runner = _Runner(self.cuda_ctx, engine, inputs, outputs, max_batch, self.streams)
        return LoadedModel(inputs, outputs, precision, max_batch, runner)

    def close(self) -> None:
        self.cuda_ctx.detach()
