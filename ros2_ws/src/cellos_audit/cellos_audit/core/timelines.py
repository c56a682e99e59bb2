"""Time series of a recording for the report figures: the line state (phase error, buffers, holds,
parts), the gates and the site feed, the executor's compute shares, and the holds and releases
the coordinator sent. Times are seconds after the recording's first message (receive times).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cellos_audit.core.audit_topics import IFACE, split_cell_topic
from cellos_audit.core.message_definitions import constants
from cellos_audit.core.recording_reader import Decoder, read_records, type_short

TYPES = {IFACE + t for t in ('LineState', 'GateState', 'EnergySignal', 'ExecutorStatus', 'PhaseCorrection',
                             'OperatorAction')}


@dataclass
class Series:
    t: list = field(default_factory=list)
    v: list = field(default_factory=list)

    def add(self, t: float, v) -> None:
        self.t.append(t)
        self.v.append(v)


@dataclass
class Timelines:
    t0_ns: int = 0
    phase_error_ms: dict = field(default_factory=lambda: defaultdict(Series))   # cell -> Series
    buffer_level: dict = field(default_factory=lambda: defaultdict(Series))
    buffer_capacity: dict = field(default_factory=dict)
    held: dict = field(default_factory=lambda: defaultdict(Series))             # cell -> (held, reason)
    parts_in: Series = field(default_factory=Series)
    parts_out: Series = field(default_factory=Series)
    parts_dropped: Series = field(default_factory=Series)
    gate_level: dict = field(default_factory=lambda: defaultdict(Series))       # cell -> level (int)
    price_per_mwh: Series = field(default_factory=Series)
    carbon_g_per_kwh: Series = field(default_factory=Series)
    compute_share: dict = field(default_factory=lambda: defaultdict(Series))    # cell -> share
    commands: list = field(default_factory=list)       # (t, cell, command name, reason), HOLD/RELEASE/RESYNC
    actions: list = field(default_factory=list)        # (t, action, target, reason): operator actions
    end_s: float = 0.0

    @property
    def cells(self) -> list[str]:
        return sorted(set(self.phase_error_ms) | set(self.gate_level) | set(self.compute_share))


def _cell_name(cell_id: str) -> str:
    return cell_id.rstrip('/').rsplit('/', 1)[-1]


def load(paths: Iterable[str | Path]) -> Timelines:
    tl = Timelines()
    decode = Decoder()
    records = sorted(read_records(paths, TYPES), key=lambda r: r.log_time)
    if not records:
        return tl
    tl.t0_ns = records[0].log_time
    names = {}
    for r in records:
        t = (r.log_time - tl.t0_ns) / 1e9
        kind = type_short(r.type)
        msg = decode(r)
        if kind == 'LineState':
            tl.parts_in.add(t, msg.parts_in)
            tl.parts_out.add(t, msg.parts_out)
            tl.parts_dropped.add(t, msg.parts_dropped)
            for c in msg.cells:
                name = _cell_name(c.cell_id)
                tl.phase_error_ms[name].add(t, c.phase_error_ms)
                tl.buffer_level[name].add(t, c.buffer_level)
                tl.buffer_capacity[name] = c.buffer_capacity
                tl.held[name].add(t, (bool(c.held), c.hold_reason))
        elif kind == 'GateState':
            where = split_cell_topic(r.topic)
            tl.gate_level[where[1] if where else _cell_name(msg.cell_id)].add(t, int(msg.level))
        elif kind == 'EnergySignal':
            tl.price_per_mwh.add(t, msg.price_per_mwh)
            tl.carbon_g_per_kwh.add(t, msg.carbon_g_per_kwh)
        elif kind == 'ExecutorStatus':   # an executor may serve several lines
            for c in msg.cells:
                line = getattr(c, 'line_id', '')
                tl.compute_share[f'{line}/{c.cell_id}' if line else _cell_name(c.cell_id)].add(t, c.compute_share)
        elif kind == 'OperatorAction':
            tl.actions.append((t, msg.action, msg.target, msg.reason))
        elif kind == 'PhaseCorrection' and msg.command:
            if r.type not in names:
                names[r.type] = constants(r.schema.data.decode(), 'COMMAND_') if r.schema is not None else {}
            where = split_cell_topic(r.topic)
            tl.commands.append((t, where[1] if where else _cell_name(msg.cell_id),
                                names[r.type].get(msg.command, str(msg.command)), msg.reason))
        tl.end_s = t
    return tl


def hold_kind(reason: str) -> str:
    """'backpressure: cell_03 buffer full; operator: jam' -> 'backpressure+operator'."""
    kinds = sorted({part.split(':')[0].split(' (')[0].strip() for part in reason.split(';') if part.strip()})
    return '+'.join(kinds) or 'held'


def hold_intervals(series: Series, end_s: float) -> list[tuple[float, float, str]]:
    """(start s, duration s, kind) of each stretch a cell was held for the same kind(s) of reason,
    from its line state samples.
    """
    out, start, kind = [], None, ''
    for t, (held, why) in zip(series.t, series.v):
        now = hold_kind(why) if held else None
        if start is not None and now != kind:
            out.append((start, t - start, kind))
            start = None
        if now is not None and start is None:
            start, kind = t, now
    if start is not None:
        out.append((start, max(0.0, end_s - start), kind))
    return out
