"""Phase figures from the cells' raw cycle stamps (one clock: the cells share a host or are
corrected beforehand): each cell's own timer jitter, and inter-cell phase error per tick.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import median


def percentile(values, q: float) -> float:
    if not values:
        return float('nan')
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


@dataclass
class PhaseFigures:
    floor_p99_ms: float        # p99 of |actual - intended| cycle start over every cell
    phase_p50_ms: float        # inter-cell: |start - line median start of the same tick|
    phase_p99_ms: float
    ticks: int                 # ticks with two or more cells

    @property
    def ratio(self) -> float:
        return self.phase_p99_ms / self.floor_p99_ms if self.floor_p99_ms > 0 else float('inf')


def cell_errors_ns(stamps: dict, offsets_ns: dict | None = None) -> dict:
    """stamps: cell -> {cycle_index: actual_start_ns}; offsets: the cells' configured stagger.
    Returns cell -> [start minus the median start of the same tick over the line].
    """
    offsets_ns = offsets_ns or {}
    by_tick = defaultdict(dict)
    for cell, cycles in stamps.items():
        for k, t in cycles.items():
            by_tick[k][cell] = t - offsets_ns.get(cell, 0)
    errors = {cell: [] for cell in stamps}
    for cells in by_tick.values():
        if len(cells) < 2:
            continue
        mid = median(cells.values())
        for cell, t in cells.items():
            errors[cell].append(t - mid)
    return errors


def inter_cell_errors_ns(stamps: dict, offsets_ns: dict | None = None) -> list[float]:
    return [e for errs in cell_errors_ns(stamps, offsets_ns).values() for e in errs]


def figures(stamps: dict, jitter_ns: dict, offsets_ns: dict | None = None) -> PhaseFigures:
    """jitter_ns: cell -> list of (actual - intended) cycle start."""
    jit = [abs(j) for js in jitter_ns.values() for j in js]
    errs = [abs(e) for e in inter_cell_errors_ns(stamps, offsets_ns)]
    ticks = len({k for c in stamps.values() for k in c})
    return PhaseFigures(percentile(jit, 0.99) / 1e6, percentile(errs, 0.5) / 1e6,
                        percentile(errs, 0.99) / 1e6, ticks)
