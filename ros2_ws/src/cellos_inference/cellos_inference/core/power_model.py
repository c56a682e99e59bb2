"""Executor power: measured (NVML on an NVIDIA GPU, RAPL where /sys/class/powercap is
readable) or modelled (energy per inference from config), every figure labelled; and the
concurrency / duty-cycle limit that keeps the executor inside the site's compute budget.
"""
from __future__ import annotations

import glob
import math
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class PowerReading:
    watts: float
    source: str       # 'nvml' | 'rapl' | 'model'
    measured: bool    # False: modelled
    detail: str = ''

    @property
    def label(self) -> str:
        return 'measured' if self.measured else 'modelled'


class NvmlPower:
    """Board power of NVIDIA GPUs via nvidia-ml-py; ``open()`` returns None without one."""

    def __init__(self, pynvml, handles):
        self._nvml, self._handles = pynvml, handles

    @classmethod
    def open(cls) -> tuple['NvmlPower | None', str]:
        try:
            import pynvml
        except ImportError:
            return None, 'nvidia-ml-py not installed'
        try:
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            if n == 0:
                pynvml.nvmlShutdown()
                return None, 'NVML: no GPU'
            return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]), f'NVML: {n} GPU(s)'
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return None, f'NVML unavailable: {e}'

    def read(self) -> PowerReading:
        mw = sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles)
        return PowerReading(mw / 1000.0, 'nvml', True, f'{len(self._handles)} GPU(s)')

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class RaplPower:
    """Package power from Intel/AMD RAPL energy counters (two reads, wrap-safe)."""

    def __init__(self, zones: list[str]):
        self._zones = zones
        self._last: tuple[float, list[int]] | None = None

    @classmethod
    def open(cls, root: str = '/sys/class/powercap') -> tuple['RaplPower | None', str]:
        zones = [z for z in sorted(glob.glob(os.path.join(root, 'intel-rapl:*')))
                 if ':' not in os.path.basename(z)[len('intel-rapl:'):]]  # packages, not sub-zones
        readable = [z for z in zones if os.access(os.path.join(z, 'energy_uj'), os.R_OK)]
        if not readable:
            return None, f'RAPL: no readable energy_uj under {root}'
        rapl = cls(readable)
        try:
            rapl._sample()
        except OSError as e:
            return None, f'RAPL unreadable: {e}'
        return rapl, f'RAPL: {len(readable)} package(s)'

    def _sample(self) -> list[int]:
        out = []
        for z in self._zones:
            with open(os.path.join(z, 'energy_uj')) as f:
                out.append(int(f.read()))
        return out

    def _range(self, z: str) -> int:
        try:
            with open(os.path.join(z, 'max_energy_range_uj')) as f:
                return int(f.read())
        except OSError:
            return 2 ** 32

    def read(self, now_s: float | None = None) -> PowerReading | None:
        """Mean power since the previous read; None on the first."""
        now_s = time.monotonic() if now_s is None else now_s
        sample = self._sample()
        last, self._last = self._last, (now_s, sample)
        if last is None or now_s <= last[0]:
            return None
        joules = sum(((b - a) % self._range(z)) / 1e6 for z, a, b in zip(self._zones, last[1], sample))
        return PowerReading(joules / (now_s - last[0]), 'rapl', True, f'{len(self._zones)} package(s)')


@dataclass(frozen=True)
class EnergyModel:
    """Modelled power: idle + energy per inference x inference rate."""

    idle_w: float
    energy_per_inference_j: float

    def read(self, inferences_per_s: float) -> PowerReading:
        return PowerReading(self.idle_w + self.energy_per_inference_j * max(0.0, inferences_per_s),
                            'model', False,
                            f'{self.idle_w:.0f} W idle + {self.energy_per_inference_j:.2f} J/inference')


class PowerMeter:
    """The best source available here: NVML, else RAPL, else the model."""

    def __init__(self, model: EnergyModel, use_nvml: bool = True, use_rapl: bool = True,
                 rapl_root: str = '/sys/class/powercap'):
        self.model = model
        self.notes: list[str] = []
        self.nvml = self.rapl = None
        if use_nvml:
            self.nvml, note = NvmlPower.open()
            self.notes.append(note)
        if self.nvml is None and use_rapl:
            self.rapl, note = RaplPower.open(rapl_root)
            self.notes.append(note)

    @property
    def source(self) -> str:
        return 'nvml' if self.nvml else 'rapl' if self.rapl else 'model'

    def read(self, inferences_per_s: float, now_s: float | None = None) -> PowerReading:
        if self.nvml is not None:
            return self.nvml.read()
        if self.rapl is not None:
            r = self.rapl.read(now_s)
            if r is not None:
                return r
        return self.model.read(inferences_per_s)

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()
            self.nvml = None


def inference_energy_j(reading: PowerReading | None, compute_ms: float, batch_size: int,
                       model: EnergyModel) -> tuple[float, str]:
    """Energy of one request and where the figure comes from: with a measured reading, the
    measured power over the batch's compute time, shared by the requests of the batch (idle time
    between batches is not charged to any decision); otherwise the model's energy per inference.
    A request that did not run (compute_ms 0) cost nothing: (0.0, '').
    """
    if not compute_ms > 0:
        return 0.0, ''
    if reading is not None and reading.measured:
        return reading.watts * compute_ms / 1e3 / max(1, batch_size), reading.source
    return model.energy_per_inference_j, 'model'


@dataclass(frozen=True)
class ComputeLimit:
    max_concurrency: int    # inferences in flight at once
    duty_cycle: float       # share of time the executor may be busy, in [0, 1]
    reason: str
    power_cap_w: float = 0.0   # modelled power at the limit: idle + streams x per-stream x duty cycle


def compute_limit(budget_w: float, idle_w: float, busy_w_per_stream: float,
                  max_streams: int) -> ComputeLimit:
    """Largest concurrency whose power (idle + n x per-stream) fits the budget; below one
    stream, the duty cycle that averages one stream into the budget (at least one slot is
    kept for critical work, which counts against the budget but is never stopped).
    """
    if max_streams < 1 or busy_w_per_stream <= 0 or idle_w < 0:
        raise ValueError('max_streams >= 1, busy_w_per_stream > 0 and idle_w >= 0 required')
    if not math.isfinite(budget_w) or budget_w <= 0:
        return ComputeLimit(1, 0.0, 'no budget: critical work only', idle_w)
    headroom = budget_w - idle_w
    n = int(headroom // busy_w_per_stream)
    if n >= 1:
        n = min(n, max_streams)
        return ComputeLimit(n, 1.0, f'{n} stream(s) x {busy_w_per_stream:.0f} W + {idle_w:.0f} W idle '
                                    f'<= {budget_w:.0f} W', idle_w + n * busy_w_per_stream)
    duty = max(0.0, headroom) / busy_w_per_stream
    return ComputeLimit(1, duty, f'budget {budget_w:.0f} W below one stream: duty cycle {duty:.0%}',
                        idle_w + duty * busy_w_per_stream)
