"""The one place where plant (line flow) messages meet the core types."""
from __future__ import annotations

from cellos_interfaces.msg import PlantState, PlantStation

from cellos_line.core.line_flow import FlowSnapshot, StationView


def plant_state_msg(s: FlowSnapshot, *, stamp, line_id: str, source: str, seq: int) -> PlantState:
    msg = PlantState()
    msg.header.stamp = stamp
    msg.line_id, msg.source, msg.seq = line_id, source, seq
    msg.parts_in, msg.parts_out = s.parts_in, s.parts_out
    msg.parts_dropped, msg.overflows = s.dropped, s.overflows
    for v in s.stations:
        msg.stations.append(PlantStation(
            cell_id=v.cell_id, buffer_level=v.level, buffer_capacity=v.capacity, busy=v.busy,
            overrun=v.overrun, held=v.held, parts_done=v.parts_done, starved_cycles=v.starved_cycles,
            held_cycles=v.held_cycles, overruns=v.overruns, blocked_cycles=v.blocked_cycles))
    return msg


def snapshot_from_msg(msg: PlantState) -> FlowSnapshot:
    return FlowSnapshot(
        seq=msg.seq, parts_in=msg.parts_in, parts_out=msg.parts_out, dropped=msg.parts_dropped,
        overflows=msg.overflows,
        stations=tuple(StationView(st.cell_id, st.buffer_level, st.buffer_capacity, st.busy, st.overrun,
                                   st.held, st.parts_done, st.starved_cycles, st.held_cycles, st.overruns,
                                   st.blocked_cycles)
                       for st in msg.stations))
