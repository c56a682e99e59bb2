"""What the executor reports about itself: per-cell compute share, queue depth, latency
percentiles split into queue / batch wait / compute, batch sizes.
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from cellos_inference.core.inference_types import Outcome, Status


def percentile(values, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if len(values) else 0.0


@dataclass
class CellStats:
    cell_ns: str
    weight: float = 1.0
    compute_share: float = 0.0
    queue_depth: int = 0
    served: int = 0
    rejected: int = 0
    queue_ms: tuple = (0.0, 0.0)        # p50, p99
    batch_wait_ms: tuple = (0.0, 0.0)
    compute_ms: tuple = (0.0, 0.0)
    by_status: dict = field(default_factory=dict)


@dataclass
class Snapshot:
    cells: list
    mean_batch_size: float
    max_batch_seen: int
    served: int
    rejected: int


class ExecutorStats:
    def __init__(self, window_s: float = 10.0, samples: int = 2000):
        self.window_s = window_s
        self._lock = threading.Lock()
        self._compute = deque()                      # (t, cell, seconds)
        self._lat = defaultdict(lambda: deque(maxlen=samples))   # cell -> (q, bw, c) ms
        self._served = defaultdict(int)
        self._rejected = defaultdict(int)
        self._by_status = defaultdict(lambda: defaultdict(int))
        self._batches = deque(maxlen=samples)
        self.max_batch_seen = 0
        self._gone_served = self._gone_rejected = 0

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self._by_status[outcome.cell_ns][Status(outcome.status).name] += 1
            if outcome.status == Status.OK:
                self._served[outcome.cell_ns] += 1
                self._lat[outcome.cell_ns].append(
                    (outcome.queue_ms, outcome.batch_wait_ms, outcome.compute_ms))
            else:
                self._rejected[outcome.cell_ns] += 1

    def forget(self, cell: str) -> None:
        """A pruned cell: its counters go (the executor's totals keep what it was served)."""
        with self._lock:
            for d in (self._lat, self._by_status):
                d.pop(cell, None)
            self._gone_served += self._served.pop(cell, 0)
            self._gone_rejected += self._rejected.pop(cell, 0)

    def record_batch(self, now: float, cells_items: dict, items: int, compute_s: float) -> None:
        with self._lock:
            self._batches.append(items)
            self.max_batch_seen = max(self.max_batch_seen, items)
            for cell, n in cells_items.items():
                self._compute.append((now, cell, compute_s * n / items))

    def snapshot(self, now: float, depths: dict, weights) -> Snapshot:
        with self._lock:
            while self._compute and self._compute[0][0] < now - self.window_s:
                self._compute.popleft()
            used = defaultdict(float)
            for _, cell, s in self._compute:
                used[cell] += s
            total = sum(used.values())
            cells = sorted(set(self._served) | set(self._rejected) | set(depths) | set(used))
            out = []
            for c in cells:
                lat = self._lat[c]
                cols = list(zip(*lat)) if lat else [(), (), ()]
                out.append(CellStats(
                    c, weights(c), used[c] / total if total else 0.0, depths.get(c, 0),
                    self._served[c], self._rejected[c],
                    *[(percentile(col, 50), percentile(col, 99)) for col in cols],
                    by_status=dict(self._by_status[c])))
            mean = float(np.mean(self._batches)) if self._batches else 0.0
            return Snapshot(out, mean, self.max_batch_seen, self._gone_served + sum(self._served.values()),
                            self._gone_rejected + sum(self._rejected.values()))
