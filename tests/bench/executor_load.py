"""Load generation and miss accounting shared by the executor benchmarks (in-process and over DDS).

A request is born at its scheduled time (its deadline counts from there, as a camera frame's
stamp does); the generator records when it really submitted it. A generator that falls behind
its own schedule is a bench defect, so the generator runs on its own SCHED_FIFO thread (where
the OS allows: a real-time thread wakes from a sleep within tens of microseconds, with no timer
slack) and reports how late it was (``generator_late_p99_ms``). It never spins: a spinning
thread holds the GIL and a core that the executor's own threads need.

Every critical miss gets one cause, checked in this order:
  born_late     the generator submitted it more than BORN_LATE_MS after its birth
  transport     the request and its answer spent more than TRANSPORT_MS on the way: over DDS
                the hops cell -> executor -> cell; in-process the hand-over into the engine and
                the delivery of the result (everything outside queue, batch wait and compute)
  compute       its batch computed more than COMPUTE_SLOW x its modelled time
  queued        it waited behind other work (a batch in flight, or queued ahead): the
                scheduler's part
  other         none of these (e.g. refused for a reason other than its deadline)
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

BORN_LATE_MS = 2.0
TRANSPORT_MS = 10.0
COMPUTE_SLOW = 1.5
CAUSES = ('born_late', 'transport', 'compute', 'queued', 'other')


def schedule(rate_by_cell: dict, mix, seconds: float, seed: int) -> list:
    """Poisson arrivals [(t, cell, priority index)], one random stream per cell, so one cell's rate
    never changes the others' arrivals.
    """
    out = []
    for k, (cell, rate) in enumerate(sorted(rate_by_cell.items())):
        rng = np.random.default_rng([seed, k])
        t = rng.exponential(1 / rate)
        while t < seconds:
            out.append((t, cell, int(rng.choice(len(mix), p=mix))))
            t += rng.exponential(1 / rate)
    return sorted(out)


def realtime_thread(priority: int) -> str:
    """SCHED_FIFO for the calling thread; '' or why not."""
    if priority <= 0:
        return ''
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return ''
    except (OSError, AttributeError) as e:
        return f'SCHED_FIFO {priority} refused: {e}'


def steal_ms() -> float:
    """CPU time the hypervisor has taken from this virtual machine since boot, all CPUs (ms): a
    run's share of it is time no scheduler in the machine could use.
    """
    try:
        with open('/proc/stat') as f:
            fields = f.readline().split()
        return 1e3 * int(fields[8]) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return float('nan')


def sleep_until(t: float, clock=time.monotonic) -> None:
    left = t - clock()
    if left > 0:
        time.sleep(left)


class Generator(threading.Thread):
    """Calls ``submit(i, t_birth)`` at each birth ``t0 + t`` of ``arrivals``; records lateness."""

    def __init__(self, arrivals, submit, *, t0: float, priority: int = 0, clock=time.monotonic):
        super().__init__(name='load-generator', daemon=True)
        self.arrivals, self.submit, self.t0, self.priority, self.clock = arrivals, submit, t0, priority, clock
        self.late_ms = np.zeros(len(arrivals))
        self.refusal = ''

    def run(self) -> None:
        self.refusal = realtime_thread(self.priority)
        for i, (t, *_rest) in enumerate(self.arrivals):
            birth = self.t0 + t
            sleep_until(birth, self.clock)
            self.late_ms[i] = 1e3 * (self.clock() - birth)
            self.submit(i, birth)


@dataclass
class Row:
    """One request as the bench saw it: times in s on one clock, *_ms from the executor."""

    cell: str
    critical: bool
    birth: float
    late_ms: float
    deadline: float
    status: int | None = None
    done: float | None = None
    queue_ms: float = 0.0
    batch_wait_ms: float = 0.0
    compute_ms: float = 0.0
    estimate_ms: float = 0.0
    transport_ms: float = 0.0       # over DDS: time on the way in and out
    reason: str = ''
    answered_late: bool = False     # over DDS: the arbiter answered TIMEOUT, the executor after it

    @property
    def met(self) -> bool:
        return self.status == 0 and self.done is not None and self.done <= self.deadline


def cause(r: Row) -> str:
    if r.late_ms > BORN_LATE_MS:
        return 'born_late'
    if r.transport_ms > TRANSPORT_MS:
        return 'transport'
    if r.compute_ms and r.estimate_ms and r.compute_ms > COMPUTE_SLOW * r.estimate_ms:
        return 'compute'
    if r.status in (0, 1) or r.answered_late:   # late, or DEADLINE (refused at admission or expired while queued)
        return 'queued'
    return 'other'


def critical_oracle(births, deadline_s: float, batch_s, max_batch: int) -> float:
    """Attainment of the critical requests alone (births, s) on an ideal executor: nothing but them,
    no transport, earliest deadline first, every waiting request batched (up to ``max_batch``) as soon
    as the model is free, each batch taking ``batch_s(n)``. No scheduler does better: a run's
    critical attainment below this is the load's (bursts the model cannot absorb), not the executor's.
    """
    births = sorted(births)
    met, free, i, waiting = 0, 0.0, 0, []
    while i < len(births) or waiting:
        if not waiting:
            free = max(free, births[i])
        while i < len(births) and births[i] <= free:
            waiting.append(births[i])
            i += 1
        waiting = [b for b in waiting if free + batch_s(1) <= b + deadline_s]   # hopeless: dropped
        batch, waiting = waiting[:max_batch], waiting[max_batch:]
        if not batch:
            continue
        free += batch_s(len(batch))
        met += sum(free <= b + deadline_s for b in batch)
    return met / len(births) if births else float('nan')


def misses_by_cause(rows, critical_only: bool = True) -> Counter:
    c = Counter({k: 0 for k in CAUSES})
    for r in rows:
        if (r.critical or not critical_only) and not r.met and r.status is not None:
            c[cause(r)] += 1
    return c


def format_causes(c: Counter) -> str:
    return ','.join(f'{k}:{c[k]}' for k in CAUSES)


def attainment(rows, which) -> tuple[float, int]:
    sel = [r for r in rows if which(r)]
    return (sum(r.met for r in sel) / len(sel) if sel else float('nan')), len(sel)


def spread(rows, cells) -> float:
    """(max - min) / mean of the requests each cell got answered in time."""
    met = np.array([sum(r.met for r in rows if r.cell == c) for c in cells], float)
    return float((met.max() - met.min()) / met.mean()) if met.mean() else 0.0
