"""The one place where timing and line messages meet the core types."""
from __future__ import annotations

from cellos_interfaces.msg import CellCycle, CellPhase, LineState, PhaseCorrection

from cellos_common.core import gate_level
from cellos_line.core.line_coordinator import CycleReport, Correction, LineCoordinator


def report_from_msg(msg: CellCycle) -> CycleReport:
    return CycleReport(
        cell_id=msg.cell_id, session=msg.session, cycle_index=msg.cycle_index,
        cell_start_ns=msg.cycle_start_ns, cell_intended_ns=msg.intended_start_ns,
        period_ns=msg.period_ns, state=msg.state, cell_send_ns=msg.send_ns,
        sync=(msg.sync_t1_ns, msg.sync_t2_ns, msg.sync_t3_ns, msg.sync_t4_ns))


def cycle_msg(*, stamp, line_id: str, cell_id: str, session: int, clock, cycle_start_ns: int,
              work_ns: int, sync: tuple, send_ns: int) -> CellCycle:
    """``clock`` is the cell's core.cycle_clock.CycleClock after the cycle started."""
    msg = CellCycle()
    msg.header.stamp = stamp
    msg.header.frame_id = cell_id
    msg.line_id, msg.cell_id, msg.session = line_id, cell_id, session
    msg.cycle_index = max(0, clock.index)
    msg.cycle_start_ns = cycle_start_ns
    msg.intended_start_ns = clock.intended_ns
    msg.period_ns = clock.period_ns
    msg.work_ns = work_ns
    msg.phase_error_ns = float(clock.error_ns)
    msg.state = int(clock.state)
    msg.sync_t1_ns, msg.sync_t2_ns, msg.sync_t3_ns, msg.sync_t4_ns = sync
    msg.send_ns = send_ns
    return msg


def correction_msg(c: Correction, stamp, send_t3_ns: int) -> PhaseCorrection:
    msg = PhaseCorrection()
    msg.header.stamp = stamp
    msg.cell_id, msg.session = c.cell_id, c.session
    msg.anchor_ns, msg.anchor_index, msg.period_ns = c.anchor_ns, c.anchor_index, c.period_ns
    msg.command, msg.reason = int(c.command), c.reason
    msg.echo_t1_ns, msg.recv_t2_ns, msg.send_t3_ns = c.echo_t1_ns, c.recv_t2_ns, send_t3_ns
    return msg


def line_state_msg(line: LineCoordinator, line_id: str, stamp, now_ns: int = 0, gates: dict | None = None) -> LineState:
    """``now_ns`` (coordinator clock) dates the plant data; 0: its age is not known (-1)."""
    msg = LineState()
    msg.header.stamp = stamp
    msg.line_id = line_id
    msg.period_ms = line.schedule.period_ns / 1e6
    msg.epoch_ns = line.schedule.epoch_ns
    msg.offset_mode = line.config.offset_mode
    flow = line.flow
    for t in sorted(line.cells.values(), key=lambda t: t.cell_id):
        p50, p99 = line.error_percentiles_ms(t)
        cell = CellPhase()
        cell.cell_id, cell.session, cell.state = t.cell_id, t.session, line.state_of(t)
        cell.locked, cell.held, cell.hold_reason = t.locked, t.held, t.hold_reason
        cell.phase_error_ms = t.phase_error_ns / 1e6
        cell.phase_error_p99_ms = p99
        cell.clock_offset_ms = (t.offset.offset_ns or 0.0) / 1e6
        cell.round_trip_ms = (t.offset.delay_ns or 0.0) / 1e6
        cell.period_ms = t.period_ns / 1e6
        cell.schedule_offset_ms = line.offsets.get(t.cell_id, 0) / 1e6
        cell.cycle_index = t.cycle_index
        cell.lost_count, cell.relock_count = t.lost_count, t.relock_count
        cell.lock_time_s = t.lock_time_s if t.lock_time_s is not None else -1.0
        station = flow.station(t.cell_id) if flow is not None else None
        if station is not None:   # flow figures come from the plant (simulation or PLC bridge)
            cell.buffer_level, cell.buffer_capacity = station.level, station.capacity
            cell.busy, cell.overrun = station.busy, station.overrun
            cell.parts_done = station.parts_done
        cell.gate_level = (gates or {}).get(t.cell_id, gate_level.UNKNOWN)
        msg.cells.append(cell)
    msg.cells_known = len(msg.cells)
    msg.cells_locked = sum(c.locked for c in msg.cells)
    msg.cells_lost = sum(c.state == CellPhase.STATE_LOST for c in msg.cells)
    msg.phase_error_p99_ms = max((c.phase_error_p99_ms for c in msg.cells), default=0.0)
    msg.line_held = any(c.held for c in msg.cells)
    if flow is not None:   # one plant sample: the counts add up
        msg.parts_in, msg.parts_out = flow.parts_in, flow.parts_out
        msg.parts_in_buffers, msg.parts_in_cells = flow.in_buffers, flow.in_cells
        msg.parts_dropped, msg.overflows = flow.dropped, flow.overflows
    msg.holds_applied, msg.holds_released = line.holds_applied, line.holds_released
    msg.plant_age_s = (now_ns - line.flow_recv_ns) / 1e9 if flow is not None and now_ns else -1.0
    msg.plant_rejected, msg.plant_status = line.plant_rejected, line.plant_status
    return msg
