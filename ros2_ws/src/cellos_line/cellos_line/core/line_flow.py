"""The plant side of line flow: stations in sequence, each with a finite input buffer, and
the parts moving between them. Also the check of a plant snapshot received from outside (a
PLC bridge), since the snapshot is this module's data.

A station steps at each cycle start of its cell: a part whose work is done moves on (into the
next station's input buffer, or out of the line after the last station); then, if the
station is free, not held and has a part waiting, it takes one and works on it for the
cycles its work time needs. The first station is fed on demand by the line's infeed (no
buffer). A part that arrives at a full buffer is an overflow: it is dropped (counted).

With ``interlock`` (a real station's start interlock, as a PLC has it) a station takes a new
part only while the next buffer has room for it: nothing else fills that buffer, so the part
can always be released, whatever the timing of the coordinator's holds; each refusal counts
as a blocked cycle. The coordinator's backpressure holds are line policy on top of it (they
hold a cell before its interlock has to). Without it (the policy alone, as the flow benchmark
and property tests study it) only the holds keep buffers from overflowing.

Invariant, after every step: parts_in = parts_out + in_buffers + in_cells + dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence


@dataclass
class Station:
    """One station; the plant's own (mutable) ones, or copies inside a snapshot."""

    cell_id: str
    level: int
    capacity: int            # input buffer; 0 for the infeed-fed first station
    busy: bool = False
    overrun: bool = False
    held: bool = False
    parts_done: int = 0
    starved_cycles: int = 0
    held_cycles: int = 0
    overruns: int = 0
    blocked_cycles: int = 0  # free, not held, a part waiting, the next buffer full: the interlock
    cycle: int = 0           # cycles this station has stepped
    finish_cycle: int = 0


StationView = Station   # the name used for snapshot contents


@dataclass(frozen=True)
class FlowSnapshot:
    seq: int
    parts_in: int
    parts_out: int
    dropped: int
    overflows: int
    stations: tuple = ()     # StationView, in line order

    @property
    def in_buffers(self) -> int:
        return sum(s.level for s in self.stations)

    @property
    def in_cells(self) -> int:
        return sum(1 for s in self.stations if s.busy)

    @property
    def conserved(self) -> bool:
        return self.parts_in == self.parts_out + self.in_buffers + self.in_cells + self.dropped

    def station(self, cell_id: str) -> StationView | None:
        return next((s for s in self.stations if s.cell_id == cell_id), None)


def check_snapshot(s: FlowSnapshot, known_cells: Sequence[str] | None = None) -> str:
    """Why a plant snapshot from outside cannot be used ('' when it can). ``known_cells``:
    the cells the line has (None: any cell id is accepted).
    """
    if not s.stations:
        return 'plant data has no stations'
    ids = [st.cell_id for st in s.stations]
    if len(set(ids)) != len(ids):
        return f'plant data names a cell twice: {", ".join(sorted({c for c in ids if ids.count(c) > 1}))}'
    if known_cells is not None:
        unknown = [c for c in ids if c not in known_cells]
        if unknown:
            return (f"unknown cell {', '.join(repr(c) for c in unknown)} in plant data "
                    f"(line has {', '.join(known_cells) or 'no cells yet'})")
    for name in ('parts_in', 'parts_out', 'dropped', 'overflows'):
        if getattr(s, name) < 0:
            return f'negative {name} ({getattr(s, name)}) in plant data'
    for st in s.stations:
        if st.level < 0 or st.capacity < 0:
            return f"negative buffer level/capacity for '{st.cell_id}' ({st.level}/{st.capacity})"
        if st.level > st.capacity:
            return f"buffer of '{st.cell_id}' above its capacity ({st.level}/{st.capacity})"
    if not s.conserved:
        return (f'plant counts do not add up: in {s.parts_in} != out {s.parts_out} + buffers '
                f'{s.in_buffers} + in cells {s.in_cells} + dropped {s.dropped}')
    return ''


@dataclass(frozen=True)
class StepEvent:
    kind: str        # 'overflow' | 'out' | 'moved'
    cell_id: str     # the station whose part moved
    text: str


class LineFlow:
    def __init__(self, cells: Sequence[str], capacities: int | Mapping[str, int], interlock: bool = False):
        if not cells:
            raise ValueError('a line needs at least one cell')
        if len(set(cells)) != len(cells):
            raise ValueError(f'cell ids must be unique: {list(cells)}')
        self.stations: list[Station] = []
        self._index: dict[str, int] = {}
        for c in cells:
            self.add_cell(c, capacities if isinstance(capacities, int) else capacities.get(c))
        self.parts_in = self.parts_out = self.dropped = self.overflows = 0
        self.seq = 0
        self.interlock = interlock

    def add_cell(self, cell_id: str, capacity: int | None) -> None:
        """Append a station at the end of the line (the first one is infeed-fed)."""
        if cell_id in self._index:
            raise ValueError(f"cell '{cell_id}' is already on the line")
        cap = 0 if not self.stations else capacity
        if cap is None or cap < (0 if not self.stations else 1):
            raise ValueError(f"buffer capacity of '{cell_id}' must be >= 1, got {capacity}")
        self._index[cell_id] = len(self.stations)
        self.stations.append(Station(cell_id, 0, cap))

    @property
    def cells(self) -> list[str]:
        return [s.cell_id for s in self.stations]

    def step(self, cell_id: str, held: bool, work_cycles: Callable[[], int],
             cycles: int = 1) -> list[StepEvent]:
        """One cycle start of ``cell_id`` (``cycles`` > 1: reports were missed in between).
        ``work_cycles()`` is asked only when the station takes a new part.
        """
        i = self._index.get(cell_id)
        if i is None:
            raise KeyError(f"unknown cell '{cell_id}'")
        if cycles < 1:
            raise ValueError(f'cycles must be >= 1, got {cycles}')
        s = self.stations[i]
        s.cycle += cycles
        s.held = held
        events = []
        if s.busy and s.cycle >= s.finish_cycle:
            s.busy, s.overrun = False, False
            s.parts_done += 1
            events.append(self._pass_on(i))
        if not s.busy:
            if held:
                s.held_cycles += 1
            elif (i == 0 or s.level > 0) and self._blocked(i):
                s.blocked_cycles += 1
            elif i == 0 or s.level > 0:
                if i == 0:
                    self.parts_in += 1
                else:
                    s.level -= 1
                w = int(work_cycles())
                if w < 1:
                    raise ValueError(f'work cycles must be >= 1, got {w}')
                s.busy, s.finish_cycle, s.overrun = True, s.cycle + w, w > 1
                s.overruns += w > 1
            else:
                s.starved_cycles += 1
        self.seq += 1
        return events

    def _blocked(self, i: int) -> bool:
        """The start interlock: the next buffer has no room for this station's part."""
        if not self.interlock or i == len(self.stations) - 1:
            return False
        nxt = self.stations[i + 1]
        return nxt.level >= nxt.capacity

    def _pass_on(self, i: int) -> StepEvent:
        cell = self.stations[i].cell_id
        if i == len(self.stations) - 1:
            self.parts_out += 1
            return StepEvent('out', cell, f'part out of the line from {cell}')
        nxt = self.stations[i + 1]
        if nxt.level >= nxt.capacity:
            self.overflows += 1
            self.dropped += 1
            return StepEvent('overflow', cell, f'overflow: part from {cell} dropped, '
                             f'{nxt.cell_id} buffer full ({nxt.level}/{nxt.capacity})')
        nxt.level += 1
        return StepEvent('moved', cell, f'part {cell} -> {nxt.cell_id} ({nxt.level}/{nxt.capacity})')

    def snapshot(self) -> FlowSnapshot:
        return FlowSnapshot(
            seq=self.seq, parts_in=self.parts_in, parts_out=self.parts_out, dropped=self.dropped,
            overflows=self.overflows,
            stations=tuple(replace(s) for s in self.stations))
