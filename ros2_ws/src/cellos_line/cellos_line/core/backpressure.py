"""The coordinator's flow policy: which cells to hold so that no buffer overflows.

A cell may start a part only if that part will find room downstream. The coordinator decides
from a plant snapshot, and the cell acts on the decision ``latency_cycles`` cycle starts later
(plant -> coordinator -> correction -> cell). In that time the cell can push the part it has
in work and start ``latency_cycles - 1`` more, so cell i is held while

    level(i+1) + busy(i) + (latency_cycles - 1) >= capacity(i+1)

The rule is memoryless: a hold ends with the first snapshot in which the buffer has room
(no hysteresis, release as soon as the jam clears). A cell held for another reason (drift
revalidation, operator) stops taking parts, its input buffer fills and the same rule holds
its upstream neighbour, then the next one: the hold propagates upstream buffer by buffer, and
each propagated reason names the root cause.
"""
from __future__ import annotations

from typing import Mapping

from cellos_line.core.line_flow import FlowSnapshot

REASON_PREFIX = 'backpressure'


def margin(latency_cycles: int, capacity: int) -> int:
    """Parts a cell may start before a hold reaches it; never so many that a buffer of
    ``capacity`` could never let the cell run (capacity < latency is refused by the nodes).
    """
    return max(0, min(latency_cycles - 1, capacity - 1))


def backpressure_holds(s: FlowSnapshot, latency_cycles: int = 1,
                       other_holds: Mapping[str, str] | None = None) -> dict[str, str]:
    """cell id -> hold reason, for every cell the flow says to hold now.
    ``other_holds``: cells held for other reasons (cell id -> reason), named as root causes.
    """
    if latency_cycles < 1:
        raise ValueError(f'latency_cycles must be >= 1, got {latency_cycles}')
    other = dict(other_holds or {})
    holds: dict[str, str] = {}
    root: dict[str, tuple[str, str]] = {c: (c, r) for c, r in other.items()}
    st = s.stations
    for i in range(len(st) - 2, -1, -1):
        cell, down = st[i], st[i + 1]
        if down.capacity <= 0:
            continue
        if down.level + int(cell.busy) + margin(latency_cycles, down.capacity) >= down.capacity:
            why = f'{REASON_PREFIX}: {down.cell_id} buffer full'
            cause = root.get(down.cell_id)
            if cause is not None:
                why += f' [{cause[0]}: {cause[1]}]'
                root.setdefault(cell.cell_id, cause)
            holds[cell.cell_id] = why
    return holds


def is_backpressure(reason: str) -> bool:
    return reason.startswith(REASON_PREFIX + ':')
