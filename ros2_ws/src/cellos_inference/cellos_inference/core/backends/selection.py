"""Which backend an executor uses: automatic (TensorRT where it can run), or forced."""
from __future__ import annotations

from dataclasses import dataclass

CHOICES = ('auto', 'tensorrt', 'onnxruntime')


@dataclass(frozen=True)
class GpuProbe:
    """What this host offers; every None says why in ``missing``."""

    tensorrt_version: str | None = None
    pycuda: bool = False
    gpu_name: str | None = None
    missing: str = ''

    @property
    def tensorrt_usable(self) -> bool:
        return bool(self.tensorrt_version and self.pycuda and self.gpu_name)


def probe_gpu() -> GpuProbe:
    """Guarded imports: this host may have neither tensorrt nor pycuda nor a GPU."""
    try:
        import tensorrt
        version = tensorrt.__version__
    except Exception as e:  # ImportError, or a broken install raising at import
        return GpuProbe(missing=f'tensorrt not importable ({type(e).__name__}: {e})')
    try:
        import pycuda.driver as cuda
        cuda.init()
        if cuda.Device.count() < 1:
            return GpuProbe(version, True, missing='no CUDA device')
        return GpuProbe(version, True, cuda.Device(0).name())
    except Exception as e:
        return GpuProbe(version, False, missing=f'pycuda/CUDA not usable ({type(e).__name__}: {e})')


@dataclass(frozen=True)
class Choice:
    backend: str   # 'tensorrt' | 'onnxruntime'
    reason: str


class BackendUnavailable(RuntimeError):
    pass


def choose_backend(requested: str, probe: GpuProbe) -> Choice:
    if requested not in CHOICES:
        raise ValueError(f'backend {requested!r} is not one of {list(CHOICES)}')
    if requested == 'onnxruntime':
        return Choice('onnxruntime', 'forced by parameter')
    if probe.tensorrt_usable:
        return Choice('tensorrt', f'TensorRT {probe.tensorrt_version} on {probe.gpu_name}'
                      + (' (auto)' if requested == 'auto' else ' (forced by parameter)'))
    if requested == 'tensorrt':
        raise BackendUnavailable(f'backend tensorrt requested but not usable here: {probe.missing}')
    return Choice('onnxruntime', f'auto: TensorRT not usable ({probe.missing})')


def make_backend(choice: Choice, *, cpu_threads: int = 1, plan_cache_dir: str = '',
                 fp16: str = 'auto', streams: int = 2):
    if choice.backend == 'tensorrt':
        from cellos_inference.core.backends.tensorrt_backend import TensorRTBackend
        return TensorRTBackend(plan_cache_dir=plan_cache_dir, fp16=fp16, streams=streams)
    from cellos_inference.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(intra_op_threads=cpu_threads)
