"""A real price/carbon trace (CSV), its time-compressed replay, and what of it was published when.

CSV: lines starting with '#' are comments; header ``timestamp_utc,price_per_mwh[,carbon_g_per_kwh]``;
rows at a constant step, each covering the interval that starts at its timestamp.

A day-ahead market publishes a whole market day's prices once, the day before; a forecast built
from a day-ahead trace may only show what had been published at the moment it is built
(``DayAhead``), never the rows after.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cellos_energy.core.energy_signal import Forecast


class TraceError(ValueError):
    """A trace file that cannot be replayed, with the line at fault."""


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


@dataclass(frozen=True)
class EnergyTrace:
    name: str
    start_s: float                 # epoch of row 0
    step_s: float                  # trace seconds per row
    price_per_mwh: tuple[float, ...]
    carbon_g_per_kwh: tuple[float, ...]   # empty when the file has no carbon column

    @property
    def rows(self) -> int:
        return len(self.price_per_mwh)

    @property
    def days(self) -> float:
        return self.rows * self.step_s / 86400.0

    def forecast(self, index: int, slots: int, step_real_s: float, offset_real_s: float) -> Forecast:
        end = min(self.rows, index + max(1, slots))
        return Forecast(step_s=step_real_s, offset_s=offset_real_s,
                        price_per_mwh=self.price_per_mwh[index:end],
                        carbon_g_per_kwh=self.carbon_g_per_kwh[index:end])

    @classmethod
    def load(cls, path: str | Path) -> 'EnergyTrace':
        path = Path(path)
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith('#')]
        except OSError as e:
            raise TraceError(f'cannot read trace {path}: {e}') from e
        reader = csv.reader(lines)
        header = next(reader, None)
        if not header or header[:2] != ['timestamp_utc', 'price_per_mwh']:
            raise TraceError(f'{path}: header must start with timestamp_utc,price_per_mwh; got {header}')
        has_carbon = len(header) > 2 and header[2] == 'carbon_g_per_kwh'
        times, price, carbon = [], [], []
        for n, row in enumerate(reader, start=2):
            try:
                times.append(_epoch(row[0]))
                p = float(row[1])
                c = float(row[2]) if has_carbon else 0.0
            except (ValueError, IndexError) as e:
                raise TraceError(f'{path}: data row {n - 1}: {e} ({row})') from e
            if not (math.isfinite(p) and math.isfinite(c)):
                raise TraceError(f'{path}: data row {n - 1}: non-finite value ({row})')
            price.append(p)
            carbon.append(c)
        if len(times) < 2:
            raise TraceError(f'{path}: needs at least 2 rows, has {len(times)}')
        step = times[1] - times[0]
        for i in range(1, len(times)):
            if abs(times[i] - times[i - 1] - step) > 1e-6:
                raise TraceError(f'{path}: row {i + 1} breaks the {step:.0f} s step (gap or duplicate)')
        if step <= 0:
            raise TraceError(f'{path}: timestamps must increase')
        return cls(path.name, times[0], step, tuple(price), tuple(carbon) if has_carbon else ())


@dataclass(frozen=True)
class DayAhead:
    """Publication rule of a day-ahead market, in UTC hours of the day.

    Defaults: CAISO, whose trade day starts at Pacific midnight (07:00 UTC in summer time) and
    whose day-ahead results appear at about 13:00 Pacific (20:00 UTC) the day before.
    """

    day_start_utc_h: float = 7.0
    publish_utc_h: float = 20.0

    def __post_init__(self):
        for name in ('day_start_utc_h', 'publish_utc_h'):
            if not 0.0 <= getattr(self, name) < 24.0:
                raise TraceError(f'{name} {getattr(self, name)} outside [0, 24)')

    def known_until(self, t_s: float) -> float:
        """Epoch up to which prices are published at epoch ``t_s``: the end of the current market
        day, or of the next one once its prices are out (11 to 35 h ahead with the defaults).
        """
        start = self.day_start_utc_h * 3600.0
        day0 = math.floor((t_s - start) / 86400.0) * 86400.0 + start
        publish = day0 + ((self.publish_utc_h - self.day_start_utc_h) % 24.0) * 3600.0
        return day0 + 86400.0 * (2 if t_s >= publish else 1)


@dataclass(frozen=True)
class ReplayPoint:
    index: int             # trace row in force
    offset_real_s: float   # real seconds already spent in this row
    data_time_s: float     # trace epoch of this moment
    lap: int               # how many times the trace has wrapped


@dataclass(frozen=True)
class TraceReplay:
    """Trace time = start + compression x real elapsed; wraps at the end when ``loop``."""

    trace: EnergyTrace
    compression: float
    start_row: int = 0
    loop: bool = True

    def __post_init__(self):
        if not self.compression > 0:
            raise TraceError(f'time compression must be > 0, got {self.compression}')
        if not 0 <= self.start_row < self.trace.rows:
            raise TraceError(f'start_row {self.start_row} outside 0..{self.trace.rows - 1}')

    @property
    def step_real_s(self) -> float:
        return self.trace.step_s / self.compression

    def at(self, elapsed_real_s: float) -> ReplayPoint | None:
        """Where the replay is after ``elapsed_real_s``; None past the end when not looping."""
        trace_s = self.start_row * self.trace.step_s + max(0.0, elapsed_real_s) * self.compression
        row_total = int(trace_s // self.trace.step_s)
        lap, index = divmod(row_total, self.trace.rows)
        if lap and not self.loop:
            return None
        into_row = trace_s - row_total * self.trace.step_s
        return ReplayPoint(index, into_row / self.compression,
                           self.trace.start_s + index * self.trace.step_s + into_row, lap)

    def forecast(self, point: ReplayPoint, slots: int, day_ahead: DayAhead | None = None) -> Forecast:
        """At most ``slots`` rows from the current one; with ``day_ahead``, only the rows published by then."""
        if day_ahead is not None:
            row_start = point.data_time_s - point.offset_real_s * self.compression
            known = math.ceil((day_ahead.known_until(point.data_time_s) - row_start) / self.trace.step_s - 1e-9)
            slots = max(1, min(slots, known))
        return self.trace.forecast(point.index, slots, self.step_real_s, point.offset_real_s)
