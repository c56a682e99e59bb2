"""Normal work the gate holds back, its completion deadline, and its plan on the day-ahead forecast.

The gate does not see the cells' queues; it keeps its own account of the normal work its levels
held back, in seconds of the cells' nominal normal load: normal work arrives at the nominal
rate, and a level serves up to its capacity (FULL: 1 + ``catch_up`` x nominal, ECO: its share,
higher levels none), oldest first. That is the rule the energy benchmark charges, so the account
and the benchmark agree (the account assumes arrivals go on, so it never under-counts).

- ``HeldWork``: the account, first in first out, and the slack left before FULL must start for
  every held second to be served within the deadline.
- ``plan_normal``: where the held and the coming normal work is cheapest to serve over the
  published forecast only (energy_schedule's linear program); the rate planned for the current
  slot becomes the gate's economic level.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from cellos_energy.core.energy_schedule import NormalWork, ScheduleError, schedule
from cellos_energy.core.energy_signal import ScoreCurve


@dataclass
class HeldWork:
    """Held normal work as chunks [arrived_from_s, arrived_to_s, amount_s], oldest first.

    Normal work arrives at the nominal rate, so a chunk's amount is its length.
    """

    chunks: deque = field(default_factory=deque)

    @property
    def total_s(self) -> float:
        return sum(c[2] for c in self.chunks)

    def oldest_s(self) -> float | None:
        """When the oldest held work arrived (None: nothing held)."""
        return self.chunks[0][0] if self.chunks else None

    def advance(self, t0: float, t1: float, capacity: float) -> None:
        """Account for [t0, t1): normal work arrives at the nominal rate, and the level in force
        serves up to ``capacity`` x that rate, first in, first out from the held and arriving work.
        """
        dt = t1 - t0
        if dt <= 0:
            return
        last = self.chunks[-1] if self.chunks else None
        if last is not None and abs(last[1] - t0) < 1e-9 * max(1.0, abs(t0)):
            last[1], last[2] = t1, last[2] + dt
        else:
            self.chunks.append([t0, t1, dt])
        self.serve(capacity * dt)

    def serve(self, amount_s: float) -> float:
        """Serve held work first in, first out; returns what was served."""
        done = 0.0
        while self.chunks and amount_s - done > 1e-12:
            a0, a1, m = self.chunks[0]
            take = min(m, amount_s - done)
            done += take
            if take >= m - 1e-12:
                self.chunks.popleft()
            else:
                self.chunks[0] = [a0 + (a1 - a0) * take / m, a1, m - take]
        return done

    def slack_s(self, now_s: float, deadline_s: float, catch_up: float) -> float:
        """Seconds left before FULL must begin for every held second to be served by its
        deadline (serving at ``catch_up`` x nominal from then on); inf when nothing is held.
        """
        if catch_up <= 0:
            return -math.inf if self.chunks else math.inf
        slack, before = math.inf, 0.0
        for a0, a1, m in self.chunks:
            # the held second at position u in a chunk arrived at a0 + u (a1 - a0) / m: check both ends
            slack = min(slack, a0 + deadline_s - now_s - before / catch_up,
                        a1 + deadline_s - now_s - (before + m) / catch_up)
            before += m
        return slack


@dataclass(frozen=True)
class NormalPlan:
    made_at_s: float
    ends_s: tuple[float, ...]    # ends of the planned intervals, the first starting at made_at_s
    rates: tuple[float, ...]     # serving rate in each, x the nominal normal rate (0 .. 1 + catch_up)
    reason: str

    @property
    def slot_end_s(self) -> float:
        return self.ends_s[0]

    @property
    def rate(self) -> float:
        return self.rates[0]

    def rates_until(self, t_s: float) -> tuple[float, ...]:
        """The planned rates of the intervals that begin before ``t_s``."""
        return tuple(r for r, start in zip(self.rates, (self.made_at_s, *self.ends_s)) if start < t_s)


def plan_normal(now_s: float, curve: ScoreCurve, held: HeldWork, deadline_s: float, catch_up: float,
                margin_s: float = 0.0) -> NormalPlan | None:
    """Least-cost serving of held and coming normal work over the forecast ``curve`` (never beyond it).

    Work still held when the forecast ends is valued at the forecast's mean score, the planner's
    estimate of what serving it later costs. Every second is planned to be served ``margin_s``
    before its deadline. None when the forecast does not reach past ``now_s``; when the held work
    can no longer be served within its deadline the plan is to serve at full rate now.
    """
    step = curve.step_s
    end_s = curve.t0_s + len(curve.scores) * step
    if step <= 0 or not curve.scores or end_s <= now_s + 1e-9 * step:
        return None
    first = max(0, int((now_s - curve.t0_s) // step))
    # time in slot units from now, so that the program's numbers stay near 1 at any time compression
    bounds = [0.0] + [(curve.t0_s + (i + 1) * step - now_s) / step for i in range(first, len(curve.scores))]
    if bounds[1] <= 1e-9:
        bounds, first = bounds[:1] + bounds[2:], first + 1
    if len(bounds) < 2:
        return None
    scores = curve.scores[first:first + len(bounds) - 1]
    spans = [((a0 - now_s) / step, (a1 - now_s) / step, m / step) for a0, a1, m in held.chunks]
    spans.append((0.0, bounds[-1], bounds[-1]))
    work = NormalWork(tuple(spans), 1.0 + catch_up, max(1e-6, (deadline_s - margin_s) / step))
    terminal = sum(scores) / len(scores)
    try:
        plan = schedule(bounds, scores, work, terminal_cost_per_kwh=terminal)
    except ScheduleError as e:
        return NormalPlan(now_s, (now_s + bounds[1] * step,), (1.0 + catch_up,),
                          f'held work cannot be planned within its deadline ({e})')
    # intervals: the forecast slots, cut where a deadline falls due inside one
    ends = tuple(now_s + b * step for b in plan.bounds_h[1:])
    rates = tuple(max(0.0, x) / (b1 - b0) for x, b0, b1 in zip(plan.normal_kwh, plan.bounds_h, plan.bounds_h[1:]))
    return NormalPlan(now_s, ends, rates,
                      f'plan on {len(scores)} forecast slot(s): serve {rates[0]:.2f}x nominal now '
                      f'({scores[0]:.1f}/MWh vs mean {terminal:.1f})')
