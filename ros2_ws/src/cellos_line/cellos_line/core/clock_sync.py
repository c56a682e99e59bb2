"""Clock offset of a cell against the coordinator from NTP-style four-timestamp exchanges.

t1: cell sends (cell clock), t2: coordinator receives, t3: coordinator answers (coordinator
clock), t4: cell receives (cell clock). RFC 5905: offset = ((t2 - t1) + (t3 - t4)) / 2 is the
coordinator clock minus the cell clock; delay = (t4 - t1) - (t3 - t2). The error of one sample
is at most delay / 2, so, as NTP's clock filter does, the estimate follows the sample of least
delay among the recent ones (carried to the latest sample at the fitted rate), and a linear fit
over the least-delay sample of every block of ``block`` exchanges gives the rate (skew): a point
per block, so the fit has points at a steady pace whatever the delays do.

Both ends of the exchange live here: ``CellExchange`` is the cell's (the last complete
exchange, returned in its next reports), ``OffsetEstimator`` the coordinator's, one per cell.
Exchanges need not run at the cycle rate: the coordinator answers at its own sync rate, and a
report carrying an exchange already counted is ignored.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class SyncSample:
    offset_ns: float   # cell clock minus coordinator clock
    delay_ns: float
    at_ns: int         # coordinator clock


def sample(t1: int, t2: int, t3: int, t4: int) -> SyncSample | None:
    """One exchange, or None when its stamps are incomplete or inconsistent."""
    if not (t1 and t2 and t3 and t4) or t4 < t1 or t3 < t2:
        return None
    delay = (t4 - t1) - (t3 - t2)
    if delay < 0:
        return None
    return SyncSample(offset_ns=-((t2 - t1) + (t3 - t4)) / 2.0, delay_ns=float(delay), at_ns=t3)


class CellExchange:
    """The cell's end: the coordinator's echo of one of its reports (t1, t2, t3) and when the
    echo arrived (t4, cell clock). Reports carry the last complete exchange.
    """

    def __init__(self):
        self.stamps: tuple[int, int, int, int] = (0, 0, 0, 0)

    def on_echo(self, t1: int, t2: int, t3: int, t4: int) -> None:
        if t1 and t2 and t3 and t4 >= t1:
            self.stamps = (t1, t2, t3, t4)


class OffsetEstimator:
    def __init__(self, window: int = 32, skew_window: int = 64, max_skew_ppm: float = 100.0,
                 step_ns: float = 1e6, block: int = 4):
        self._step_ns = step_ns
        self._outliers = 0
        self._recent: deque[SyncSample] = deque(maxlen=window)
        self._filtered: deque[SyncSample] = deque(maxlen=skew_window)
        self._block: list[SyncSample] = []
        self._block_size = block
        self._max_skew = max_skew_ppm * 1e-6
        self.offset_ns: float | None = None
        self.delay_ns: float | None = None
        self.skew = 0.0
        self._best: SyncSample | None = None
        self._last_t1 = 0

    @property
    def ready(self) -> bool:
        return self.offset_ns is not None

    def add_exchange(self, stamps: tuple[int, int, int, int]) -> bool:
        """A cell report's exchange; one already counted (same t1) is ignored."""
        if not stamps[0] or stamps[0] == self._last_t1:
            return False
        self._last_t1 = stamps[0]
        return self.add(sample(*stamps))

    @property
    def skew_ppm(self) -> float:
        return self.skew * 1e6

    def add(self, s: SyncSample | None) -> bool:
        if s is None:
            return False
        jump = abs(s.offset_ns - self.offset_at(s.at_ns)) if self.offset_ns is not None else 0.0
        if jump > max(4 * s.delay_ns, self._step_ns):
            # a clock step (or a wild sample): two in a row means the clock really stepped
            self._outliers += 1
            if self._outliers < 2:
                return False
            self.reset()
        self._outliers = 0
        self._recent.append(s)
        self._block.append(s)
        if len(self._block) >= self._block_size:
            self._filtered.append(min(self._block, key=lambda x: x.delay_ns))
            self._block = []
            self.skew = self._fit_skew()
        self._best = min(self._recent, key=lambda x: x.delay_ns)
        self.offset_ns, self.delay_ns = self.offset_at(s.at_ns), s.delay_ns
        return True

    def _fit_skew(self) -> float:
        pts = list(self._filtered)
        if len(pts) < 8:
            return 0.0
        t0 = pts[0].at_ns
        xs = [p.at_ns - t0 for p in pts]
        ys = [p.offset_ns for p in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx <= 0:
            return 0.0
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        return max(-self._max_skew, min(self._max_skew, slope))

    def offset_at(self, t_ns: int) -> float:
        """Offset extrapolated to coordinator time t (cell = coordinator + offset)."""
        if self._best is None:
            raise RuntimeError('no sync sample yet')
        return self._best.offset_ns + self.skew * (t_ns - self._best.at_ns)

    def reset(self) -> None:
        self.__init__(self._recent.maxlen, self._filtered.maxlen, self._max_skew * 1e6, self._step_ns,
                      self._block_size)
