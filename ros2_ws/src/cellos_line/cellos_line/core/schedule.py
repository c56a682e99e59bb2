"""The line's reference schedule: tick(k) = epoch + k * period + cell offset (one clock)."""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_PERIOD_NS = 100_000            # 0.1 ms: the shortest line period a cell is asked to run
MAX_PERIOD_NS = 60_000_000_000     # 60 s
MAX_STAMP_NS = 2**62               # a clock reading in ns (year 2116): sums of two stay within int64


def check_period(period_ns: int, what: str = 'period', margin: float = 0.0) -> str:
    """Why ``period_ns`` is not a line period ('' when it is); ``margin``: relative slack for a
    period corrected by a clock rate.
    """
    if not MIN_PERIOD_NS * (1 - margin) <= period_ns <= MAX_PERIOD_NS * (1 + margin):
        return f'{what} {period_ns} ns outside {MIN_PERIOD_NS / 1e6:g} ms .. {MAX_PERIOD_NS / 1e9:g} s'
    return ''


def wrap(error_ns: int, period_ns: int) -> int:
    """Phase error folded into [-period/2, period/2)."""
    half = period_ns // 2
    return (error_ns + half) % period_ns - half


@dataclass(frozen=True)
class Schedule:
    epoch_ns: int
    period_ns: int

    def __post_init__(self):
        if self.period_ns <= 0:
            raise ValueError(f'period must be > 0 ns, got {self.period_ns}')

    def tick(self, index: int, offset_ns: int = 0) -> int:
        return self.epoch_ns + index * self.period_ns + offset_ns

    def nearest_index(self, t_ns: int, offset_ns: int = 0) -> int:
        rel = t_ns - self.epoch_ns - offset_ns
        return (rel + self.period_ns // 2) // self.period_ns

    def phase_error(self, t_ns: int, offset_ns: int = 0) -> int:
        """t minus the nearest tick, in [-period/2, period/2)."""
        return wrap(t_ns - self.epoch_ns - offset_ns, self.period_ns)

    def rebased(self, at_ns: int, period_ns: int) -> 'Schedule':
        """Same phase at the tick nearest ``at_ns``, new period from there on (no jump)."""
        k = self.nearest_index(at_ns)
        return Schedule(self.tick(k) - k * period_ns, period_ns)


def stagger_offsets(cell_ids, period_ns: int, mode: str, custom_ms: dict | None = None,
                    slots: int = 0) -> dict:
    """Per-cell schedule offsets: aligned (all 0), staggered (evenly spread over one period,
    in the given cell order, ``slots`` places at least), or custom (ms per cell id).
    """
    cells = list(cell_ids)
    if mode == 'aligned':
        return {c: 0 for c in cells}
    if mode == 'staggered':
        n = max(len(cells), slots, 1)
        return {c: (i * period_ns) // n for i, c in enumerate(cells)}
    if mode == 'custom':
        custom_ms = custom_ms or {}
        bad = sorted(c for c, v in custom_ms.items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"custom offset of {', '.join(bad)} is not a finite number of ms")
        return {c: int(round(custom_ms.get(c, 0.0) * 1e6)) % period_ns for c in cells}
    raise ValueError(f"unknown offset mode '{mode}' (aligned | staggered | custom)")
