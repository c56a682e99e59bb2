"""TensorRT 10 on the GPU, device memory and streams via pycuda.

Written against the TensorRT 10 Python API (name-based I/O tensors, ``execute_async_v3``,
``OnnxParser.parse_from_file``, ``ICudaEngine.get_tensor_profile_shape``) and pycuda. Neither
installs on the development machines: this module imports without them and
``TensorRTBackend()`` raises BackendError naming what is missing. NOT VERIFIED on a GPU yet:
tools/verify_tensorrt.py is the one script a GPU host runs to verify it (FP32 and FP16 against
ONNX Runtime, batches, latency, two threads, unload during a run, the plan cache).

Per model: the engine is built with ``parse_from_file`` (so ONNX files with external weights
load), one optimization profile over a dynamic batch dimension (1 .. max_batch; a static batch
dimension gets no profile and fixes max_batch), in FP16 where the GPU has fast FP16 (parameter
``fp16``). TF32 is cleared: an 'fp32' engine computes in FP32, not in TF32's 10-bit mantissa.
The serialized plan is cached on disk (plan_cache.PlanCache) where the user named a folder
(trt_plan_cache; none: built at each start, kept nowhere), keyed by everything it depends on,
this module's BUILD_RECIPE and the GPU's compute capability included. Each CUDA stream gets its
own execution context and buffers (a slot); output buffers are sized from the shapes the engine
reports for the profile's largest inputs.

Close: a closed model refuses runs (BackendError); ``close()`` waits up to ``close_timeout_s``
for every slot to come back from a run in progress and frees each one (device and pinned host
memory, stream, execution context) inside the pushed CUDA context, never on a garbage
collector's thread. A slot still busy at the timeout is reported and left to its run.
"""
from __future__ import annotations

import queue
import threading
import time

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
# what _build puts into a plan; bump it when that changes, so cached plans are rebuilt
BUILD_RECIPE = 2
CLOSE_TIMEOUT_S = 10.0


def precision_for(fp16: str, platform_has_fast_fp16: bool) -> str:
    """'auto' takes FP16 only where the GPU has fast FP16; 'on' / 'off' force it."""
    if fp16 not in ('auto', 'on', 'off'):
        raise ValueError(f"fp16 must be auto|on|off, got {fp16!r}")
    if fp16 == 'on' or (fp16 == 'auto' and platform_has_fast_fp16):
        return 'fp16'
    return 'fp32'


def batch_profile(name: str, shape: tuple, max_batch: int) -> tuple[int, tuple | None]:
    """(max batch, (min, opt, max) shapes of the profile, or None for a static batch) of one input.

    Only the batch dimension may be dynamic; a static one fixes the batch (no profile needed).
    """
    shape = tuple(int(d) for d in shape)
    if not shape:
        raise BackendError(f"input '{name}' is a scalar: a batch dimension is needed")
    rest = shape[1:]
    if any(d < 0 for d in rest):
        raise BackendError(f"input '{name}' {list(shape)}: only the batch dimension may be dynamic for "
                           'a TensorRT profile')
    if shape[0] > 0:
        return shape[0], None
    return max_batch, ((1, *rest), (max(1, max_batch // 2), *rest), (max_batch, *rest))


def static_batch(batches: dict) -> int | None:
    """The model's static batch when its inputs have one (all the same), None when dynamic."""
    fixed = {n: b for n, (b, prof) in batches.items() if prof is None}
    if not fixed:
        return None
    if len(fixed) != len(batches) or len(set(fixed.values())) != 1:
        raise BackendError(f'inputs mix static and dynamic batch dimensions: {sorted(fixed)} fixed')
    return next(iter(fixed.values()))


class _Slot:  # pragma: no cover - GPU only
    """One CUDA stream with its own execution context and buffers. Made and freed inside the
    pushed CUDA context of its runner.
    """

    def __init__(self, engine, inputs, outputs, max_input_shapes):
        self.stream, self.context, self.device, self.host = None, None, {}, {}
        try:
            self.stream = cuda.Stream()
            self.context = engine.create_execution_context()
            if self.context is None:
                raise BackendError('TensorRT could not create an execution context (device memory?)')
            shapes = {}
            for spec in inputs:
                shape = max_input_shapes[spec.name]
                if not self.context.set_input_shape(spec.name, shape):
                    raise BackendError(f"input '{spec.name}': the engine refuses shape {list(shape)}")
                shapes[spec.name] = shape
            for name in outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise BackendError(f"output '{name}' {list(shape)}: a data-dependent output shape is not "
                                       'supported')
                shapes[name] = shape
            for name, shape in shapes.items():
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                self.host[name] = cuda.pagelocked_empty(max(1, int(np.prod(shape))), dtype)
                self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
                self.context.set_tensor_address(name, int(self.device[name]))
        except Exception:
            self.free()
            raise

    def free(self) -> None:
        """Device and pinned host memory, stream and context; inside the pushed context."""
        for mem in self.device.values():
            mem.free()
        for arr in self.host.values():
            base = getattr(arr, 'base', None)
            if base is not None and hasattr(base, 'free'):
                base.free()
        self.device, self.host = {}, {}
        self.context = None      # IExecutionContext released now, in this context
        self.stream = None       # cuStreamDestroy now, in this context


class _Runner:  # pragma: no cover - GPU only
    def __init__(self, cuda_ctx, engine, inputs, outputs, max_input_shapes, streams,
                 close_timeout_s: float = CLOSE_TIMEOUT_S):
        self.cuda_ctx, self.engine = cuda_ctx, engine
        self.inputs, self.outputs = inputs, outputs
        self.close_timeout_s = close_timeout_s
        self.free: queue.Queue[_Slot] = queue.Queue()
        self.slots = 0
        self.closed = False
        self.leaked = 0
        cuda_ctx.push()
        try:
            made = []
            try:
                for _ in range(streams):
                    made.append(_Slot(engine, inputs, outputs, max_input_shapes))
            except Exception:
                for s in made:
                    s.free()
                raise
            for s in made:
                self.free.put(s)
            self.slots = len(made)
        finally:
            cuda_ctx.pop()

    def _take(self) -> _Slot:
        while True:
            if self.closed:
                raise BackendError('the model was closed (unloaded or replaced)')
            try:
                return self.free.get(timeout=0.1)
            except queue.Empty:
                continue

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        slot = self._take()
        self.cuda_ctx.push()
        try:
            if self.closed:
                raise BackendError('the model was closed (unloaded or replaced)')
            for spec in self.inputs:
                a = np.ascontiguousarray(feeds[spec.name], dtype=slot.host[spec.name].dtype)
                if not slot.context.set_input_shape(spec.name, tuple(a.shape)):
                    raise BackendError(f"input '{spec.name}': the engine refuses shape {list(a.shape)}")
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
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f'TensorRT run failed: {type(e).__name__}: {e}') from e
        finally:
            self.cuda_ctx.pop()
            self.free.put(slot)

    def close(self) -> None:
        """Refuse new runs, collect every slot (waiting up to close_timeout_s for runs in
        progress) and free them inside the pushed context.
        """
        self.closed = True
        collected, end = [], time.monotonic() + self.close_timeout_s
        while len(collected) < self.slots:
            try:
                collected.append(self.free.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                break
        self.leaked = self.slots - len(collected)
        self.cuda_ctx.push()
        try:
            for slot in collected:
                slot.free()
            if not self.leaked:
                self.engine = None   # ICudaEngine released in this context
        finally:
            self.cuda_ctx.pop()
        if self.leaked:
            raise BackendError(f'{self.leaked} stream(s) still running after {self.close_timeout_s:.0f} s: '
                               'their memory is left to them')


class TensorRTBackend(Backend):  # pragma: no cover - GPU only beyond the constructor check
    name = 'tensorrt'

    def __init__(self, plan_cache_dir: str = '', fp16: str = 'auto', streams: int = 2,
                 device_index: int = 0, close_timeout_s: float = CLOSE_TIMEOUT_S):
        if trt is None or cuda is None:
            raise BackendError('TensorRT backend needs tensorrt and pycuda: '
                               + '; '.join(x for x in (_TRT_ERROR and f'tensorrt: {_TRT_ERROR}',
                                                       _CUDA_ERROR and f'pycuda: {_CUDA_ERROR}') if x))
        try:
            cuda.init()
            self.device = cuda.Device(device_index)
            self.gpu_name = self.device.name()
            major, minor = self.device.compute_capability()
            self.compute_capability = f'{major}.{minor}'
            self.cuda_ctx = self.device.retain_primary_context()
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
        except Exception as e:
            raise BackendError(f'TensorRT/CUDA initialisation failed: {type(e).__name__}: {e}') from e
        self.cache = PlanCache(plan_cache_dir)   # empty: plans built at each start, kept nowhere
        self.fp16, self.streams, self.close_timeout_s = fp16, streams, close_timeout_s
        self.lock = threading.Lock()
        self.last_load_source = ''   # 'cache' | 'built', for logs and tests

    def describe(self) -> str:
        return f'tensorrt {trt.__version__} on {self.gpu_name} (sm {self.compute_capability})'

    def _fast_fp16(self, builder) -> bool:
        has = getattr(builder, 'platform_has_fast_fp16', None)   # deprecated in later 10.x
        if has is not None:
            return bool(has)
        major, minor = (int(x) for x in self.compute_capability.split('.'))
        return (major, minor) >= (5, 3)

    def _build(self, path: str, max_batch: int, precision: str) -> bytes:
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)   # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(path):  # resolves external weights next to the file
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f'TensorRT ONNX parser rejected {path}: {errors or "no reason given"}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        config.clear_flag(trt.BuilderFlag.TF32)   # fp32 means FP32 (TF32 is on by default)
        if precision == 'fp16':
            config.set_flag(trt.BuilderFlag.FP16)
        batches = {network.get_input(i).name: batch_profile(network.get_input(i).name,
                                                            tuple(network.get_input(i).shape), max_batch)
                   for i in range(network.num_inputs)}
        if static_batch(batches) is None:
            profile = builder.create_optimization_profile()
            for name, (_, shapes) in batches.items():
                profile.set_shape(name, *shapes)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(f'TensorRT engine build failed for {path} (see the TensorRT log)')
        return bytes(plan)

    def _network_batch(self, path: str, max_batch: int) -> int:
        """The batch the plan is built for: the static batch of the model's inputs, else max_batch."""
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(path):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f'TensorRT ONNX parser rejected {path}: {errors or "no reason given"}')
        batches = {network.get_input(i).name: batch_profile(network.get_input(i).name,
                                                            tuple(network.get_input(i).shape), max_batch)
                   for i in range(network.num_inputs)}
        return static_batch(batches) or max_batch

    def load(self, path: str, model_id: str, max_batch: int) -> LoadedModel:
        """Build (or take from the cache) and open the model. Every failure is a BackendError."""
        try:
            return self._load(path, model_id, max_batch)
        except BackendError:
            raise
        except Exception as e:   # trt.nptype, mem_alloc, deserialization, driver errors ...
            raise BackendError(f'TensorRT could not load {path}: {type(e).__name__}: {e}') from e

    def _load(self, path: str, model_id: str, max_batch: int) -> LoadedModel:
        with self.lock:
            self.cuda_ctx.push()
            try:
                precision = precision_for(self.fp16, self._fast_fp16(trt.Builder(self.logger)))
                batch = self._network_batch(path, max_batch)
                key = PlanKey(model_id, self.gpu_name, trt.__version__, precision, batch,
                              compute_capability=self.compute_capability, recipe=BUILD_RECIPE)
                data, why = self.cache.load(key)
                engine = self.runtime.deserialize_cuda_engine(data) if data else None
                self.last_load_source = 'cache'
                if engine is None:
                    data = self._build(path, batch, precision)
                    self.cache.store(key, data)
                    engine = self.runtime.deserialize_cuda_engine(data)
                    self.last_load_source = 'built'
                if engine is None:
                    raise BackendError(f'TensorRT could not deserialize the plan for {path}')
                inputs, outputs, max_shapes = [], [], {}
                for i in range(engine.num_io_tensors):
                    name = engine.get_tensor_name(i)
                    if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
                        shape = tuple(engine.get_tensor_shape(name))
                        inputs.append(InputSpec(name, dtype, shape))
                        max_shapes[name] = (tuple(engine.get_tensor_profile_shape(name, 0)[2])
                                            if any(d < 0 for d in shape) else shape)
                    else:
                        outputs.append(name)
            finally:
                self.cuda_ctx.pop()
        runner = _Runner(self.cuda_ctx, engine, inputs, outputs, max_shapes, self.streams, self.close_timeout_s)
        return LoadedModel(inputs, outputs, precision, batch, runner)

    def close(self) -> None:
        self.cuda_ctx.detach()
