"""A whole line in simulated time: the plant (core.line_flow) stepped cycle by cycle, with or
without the coordinator's backpressure (core.backpressure) acting ``latency_cycles`` cycles
after the snapshot it decided from. Deterministic and fast: the benchmark and the property
tests run it; the nodes run the same plant and policy over DDS.

Uncoordinated = fixed timers, no backpressure: every cell takes a part whenever it has one,
and a part arriving at a full buffer is dropped.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from cellos_line.core.backpressure import backpressure_holds
from cellos_line.core.line_flow import FlowSnapshot, LineFlow


@dataclass
class SimResult:
    cycles: int
    final: FlowSnapshot | None = None
    holds_applied: int = 0
    holds_released: int = 0
    conserved_always: bool = True
    release_lag_max: int = 0   # cycles a cell stayed held after its buffer had room (latency)

    parts_in = property(lambda self: self.final.parts_in)
    parts_out = property(lambda self: self.final.parts_out)
    dropped = property(lambda self: self.final.dropped)
    overflows = property(lambda self: self.final.overflows)
    starved = property(lambda self: {s.cell_id: s.starved_cycles for s in self.final.stations})
    held = property(lambda self: {s.cell_id: s.held_cycles for s in self.final.stations})


def standalone_parts(work: Sequence[int], cycles: int) -> int:
    """Parts one cell could finish in ``cycles`` if it never waited for a part or for room:
    its own capacity over this work sequence.
    """
    t = n = 0
    for w in work:
        t += w
        if t > cycles:
            break
        n += 1
    return n


def simulate(cells: Sequence[str], capacities: int | Mapping[str, int],
             work: Mapping[str, Callable[[], int]], cycles: int, *, coordinated: bool = True,
             latency_cycles: int = 1, policy_latency_cycles: int | None = None,
             external_holds: Callable[[int], Mapping[str, str]] | None = None,
             order_seed: int | None = None, check: Callable | None = None) -> SimResult:
    """Run ``cycles`` cycles. ``work[cell]()`` gives the cycles of that cell's next part.
    ``external_holds(k)``: cells held at cycle k for other reasons (drift, operator); they act
    with the same latency. ``order_seed``: step the cells of a cycle in a random order (the
    real line's cells start their cycles in no fixed order); None: downstream first.
    ``check(k, snapshot, holds)`` is called after every cycle (tests).
    """
    flow = LineFlow(cells, capacities)
    policy_latency = latency_cycles if policy_latency_cycles is None else policy_latency_cycles
    pending: deque = deque([{}] * latency_cycles)   # decisions on their way to the cells
    rng = random.Random(order_seed) if order_seed is not None else None
    res = SimResult(cycles)
    held_now: dict[str, str] = {}
    room_since: dict[str, int] = {}
    order = list(reversed(cells))
    for k in range(cycles):
        holds = pending.popleft()
        for c in cells:
            if c in holds and c not in held_now:
                res.holds_applied += 1
            elif c not in holds and c in held_now:
                res.holds_released += 1
                res.release_lag_max = max(res.release_lag_max, k - room_since.pop(c, k))
        held_now = holds
        if rng is not None:
            rng.shuffle(order)
        for c in order:
            flow.step(c, c in holds, work[c])
        snap = flow.snapshot()
        res.conserved_always &= snap.conserved
        other = dict(external_holds(k)) if external_holds else {}
        decided = dict(other)
        if coordinated:
            bp = backpressure_holds(snap, policy_latency, other)
            decided.update({c: r for c, r in bp.items() if c not in other})
            for c in cells:
                if c in decided:
                    room_since.pop(c, None)
                elif c in held_now:
                    room_since.setdefault(c, k + 1)
        pending.append(decided)
        if check is not None:
            check(k, snap, decided)
    res.final = flow.snapshot()
    return res
