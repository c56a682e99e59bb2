"""Least-cost schedule of flexible work on known slot prices: one linear program (HiGHS).

Two users, one formulation:
- the gate's day-ahead planner (energy_plan) schedules the normal work it holds back over the
  published forecast only;
- the energy benchmark schedules the same work over a whole trace with perfect knowledge: the
  optimum a policy is measured against.

Time is in hours from any origin, energy in kWh, cost per kWh of the slot (a price, a carbon
intensity or a mix: the program does not care). Normal work arrives continuously (``spans``),
is served first in, first out at most at ``max_kw``, and every kWh is served within
``deadline_h`` of arriving. A deferrable job is a fixed amount of energy run between its release
and its due time at most at its own rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


class ScheduleError(ValueError):
    """Work that cannot be scheduled as asked (infeasible deadlines, bad input)."""


@dataclass(frozen=True)
class NormalWork:
    spans: tuple[tuple[float, float, float], ...]   # (start_h, end_h, kWh) arrived uniformly in each span
    max_kw: float                                    # serving rate limit (arrival rate + catch-up)
    deadline_h: float | None = None                  # None: no completion deadline

    def arrived(self, t: float) -> float:
        """kWh arrived up to time t."""
        total = 0.0
        for a, b, kwh in self.spans:
            if t >= b:
                total += kwh
            elif t > a:
                total += kwh * (t - a) / (b - a)
        return total


@dataclass(frozen=True)
class JobWindow:
    job_id: str
    release_h: float
    due_h: float
    kwh: float
    max_kw: float


@dataclass(frozen=True)
class Schedule:
    """The solution on the solved grid: the given slots, cut where a deadline falls inside one."""

    bounds_h: tuple[float, ...]
    slot_of: tuple[int, ...]                # index of the given slot each solved slot lies in
    normal_kwh: tuple[float, ...]           # normal work served per solved slot
    backlog_kwh: tuple[float, ...]          # normal work waiting at each solved slot's end
    jobs_kwh: dict[str, tuple[float, ...]] = field(default_factory=dict)
    cost: float = 0.0                        # objective, including the terminal cost

    def energy_kwh(self) -> tuple[float, ...]:
        """Flexible energy (normal + jobs) per given slot."""
        out = [0.0] * (max(self.slot_of, default=-1) + 1)
        for k, s in enumerate(self.slot_of):
            out[s] += (self.normal_kwh[k] if self.normal_kwh else 0.0) + sum(
                per_slot[k] for per_slot in self.jobs_kwh.values())
        return tuple(out)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def schedule(bounds_h: Sequence[float], cost_per_kwh: Sequence[float], normal: NormalWork | None = None,
             jobs: Sequence[JobWindow] = (), terminal_cost_per_kwh: float | None = None) -> Schedule:
    """Least-cost schedule over the slots ``[bounds_h[i], bounds_h[i+1])``.

    Normal work arrived before ``bounds_h[0]`` is the initial backlog. At the end, the normal
    backlog left is charged ``terminal_cost_per_kwh`` each (a planner's estimate of what serving
    it later costs); None: nothing may be left. Raises ScheduleError when the deadlines cannot be met.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    t = np.asarray(bounds_h, dtype=float)
    c_slot = np.asarray(cost_per_kwh, dtype=float)
    n = len(t) - 1
    if n < 1 or len(c_slot) != n:
        raise ScheduleError(f'{len(t)} slot bounds need {max(0, len(t) - 1)} costs, got {len(c_slot)}')
    if not (np.all(np.diff(t) > 0) and np.all(np.isfinite(t)) and np.all(np.isfinite(c_slot))):
        raise ScheduleError('slot bounds must increase and every cost must be finite')
    slot_of = np.arange(n)
    if normal is not None and normal.deadline_h is not None:
        # the deadline is checked at slot ends; where a span's start or end falls due inside a
        # slot, the slot is cut there, so that the check holds everywhere between the cuts too
        due = {x + normal.deadline_h for a, b, _ in normal.spans for x in (a, b)}
        cuts = sorted(x for x in due if t[0] < x < t[-1] and np.min(np.abs(t - x)) > 1e-9)
        if cuts:
            t = np.unique(np.concatenate([t, cuts]))
            slot_of = np.searchsorted(np.asarray(bounds_h, dtype=float), t[:-1], side='right') - 1
            c_slot = c_slot[slot_of]
            n = len(t) - 1
    dur = np.diff(t)
    cost, lo, hi = [], [], []
    rows, cols, vals, b_eq = [], [], [], []
    out_normal = None
    if normal is not None:
        # variables: x_s (served in slot s) then b_s (backlog at the end of slot s)
        arrived = np.array([normal.arrived(x) for x in t])
        inflow = np.diff(arrived)
        b_hi = np.full(n, np.inf)
        if normal.deadline_h is not None:
            # first in, first out: what waits at a slot's end arrived within the last deadline_h
            b_hi = arrived[1:] - np.array([normal.arrived(x - normal.deadline_h) for x in t[1:]])
        if terminal_cost_per_kwh is None:
            b_hi[-1] = 0.0
        cost += list(c_slot) + [0.0] * (n - 1) + [terminal_cost_per_kwh or 0.0]
        lo += [0.0] * (2 * n)
        hi += list(normal.max_kw * dur) + list(np.maximum(b_hi + 1e-9, 0.0))
        for s in range(n):      # b_s - b_{s-1} + x_s = inflow_s (+ initial backlog for s = 0)
            rows += [s, s]
            cols += [s, n + s]
            vals += [1.0, 1.0]
            if s:
                rows.append(s)
                cols.append(n + s - 1)
                vals.append(-1.0)
            b_eq.append(inflow[s] + (arrived[0] if s == 0 else 0.0))
        out_normal = (0, n)
    job_vars = []
    for job in jobs:
        if not (job.kwh > 0 and job.max_kw > 0 and job.due_h > job.release_h):
            raise ScheduleError(f'job {job.job_id}: needs kwh > 0, max_kw > 0 and due after release')
        slots = [s for s in range(n) if _overlap(t[s], t[s + 1], job.release_h, job.due_h) > 0]
        caps = [job.max_kw * _overlap(t[s], t[s + 1], job.release_h, job.due_h) for s in slots]
        if sum(caps) < job.kwh - 1e-9:
            raise ScheduleError(f'job {job.job_id}: {job.kwh} kWh do not fit between '
                                f'{job.release_h:.2f} h and {job.due_h:.2f} h at {job.max_kw} kW')
        first = len(cost)
        row = len(b_eq)
        for k, (s, cap) in enumerate(zip(slots, caps)):
            cost.append(c_slot[s])
            lo.append(0.0)
            hi.append(cap)
            rows.append(row)
            cols.append(first + k)
            vals.append(1.0)
        b_eq.append(job.kwh)
        job_vars.append((job.job_id, first, slots))
    if not cost:
        return Schedule(tuple(float(v) for v in t), tuple(int(v) for v in slot_of), (), (), {}, 0.0)
    a_eq = coo_matrix((vals, (rows, cols)), shape=(len(b_eq), len(cost))).tocsr()
    res = linprog(np.array(cost), A_eq=a_eq, b_eq=np.array(b_eq), bounds=list(zip(lo, hi)), method='highs')
    if res.status != 0:
        raise ScheduleError(f'no schedule meets every deadline ({res.message})')
    x = res.x
    normal_kwh = backlog = ()
    if out_normal is not None:
        normal_kwh = tuple(float(v) for v in x[:n])
        backlog = tuple(float(max(0.0, v)) for v in x[n:2 * n])
    per_job = {}
    for job_id, first, slots in job_vars:
        row = [0.0] * n
        for k, s in enumerate(slots):
            row[s] = float(x[first + k])
        per_job[job_id] = tuple(row)
    return Schedule(tuple(float(v) for v in t), tuple(int(v) for v in slot_of), normal_kwh, backlog, per_job,
                    float(res.fun))


def slot_cost(schedule_: Schedule, cost_per_kwh: Sequence[float]) -> float:
    """What the schedule's flexible energy costs at another per-slot cost (e.g. carbon)."""
    return float(sum(e * c for e, c in zip(schedule_.energy_kwh(), cost_per_kwh)))


def hourly_bounds(hours: int, step_h: float = 1.0) -> tuple[float, ...]:
    steps = int(round(hours / step_h))
    if steps < 1 or not math.isfinite(step_h):
        raise ScheduleError(f'{hours} h at {step_h} h per slot is not a horizon')
    return tuple(i * step_h for i in range(steps + 1))
