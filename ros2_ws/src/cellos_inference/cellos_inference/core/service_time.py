"""Measured compute time per batch of one model: what admission control plans with."""
from __future__ import annotations

import bisect


class ServiceTime:
    """Moving estimate of one batch's compute time (seconds) by batch size.

    Unmeasured sizes are interpolated linearly between the nearest measured ones
    (batch cost grows roughly affinely with batch size on both CPU and GPU).
    """

    def __init__(self, alpha: float = 0.2, initial_s: float = 0.005):
        self.alpha = alpha
        self.initial_s = initial_s
        self._by_size: dict[int, float] = {}

    def observe(self, batch: int, seconds: float) -> None:
        old = self._by_size.get(batch)
        self._by_size[batch] = seconds if old is None else old + self.alpha * (seconds - old)

    def estimate(self, batch: int = 1) -> float:
        if not self._by_size:
            return self.initial_s * batch
        if batch in self._by_size:
            return self._by_size[batch]
        sizes = sorted(self._by_size)
        i = bisect.bisect_left(sizes, batch)
        if i == 0:
            return self._by_size[sizes[0]] * batch / sizes[0]
        if i == len(sizes):
            top = sizes[-1]
            return self._by_size[top] * batch / top
        lo, hi = sizes[i - 1], sizes[i]
        f = (batch - lo) / (hi - lo)
        return self._by_size[lo] + f * (self._by_size[hi] - self._by_size[lo])

    def per_item(self, batch: int) -> float:
        """Amortized cost of one row when run in batches of ``batch``."""
        return self.estimate(batch) / max(1, batch)

    def sizes(self) -> dict[int, float]:
        return dict(self._by_size)
