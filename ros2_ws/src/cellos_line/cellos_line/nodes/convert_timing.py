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
        sync=(msg.sync_t1_ns, msg.sync_t2_ns, msg.sync_t3_ns, msg.sync_t4_ns),
        locked=msg.locked, missed_cycles=msg.missed_cycles, thread_priority=msg.thread_priority,
        realtime_refused=msg.realtime_refused)


def cycle_msg(line_id: str, cell_id: str, session: int) -> CellCycle:
    """A cell's report with the fields that never change; ``fill_cycle_msg`` sets the rest at
    every cycle (one message is reused: less work per cycle).
    """
    msg = CellCycle()
    msg.header.frame_id = cell_id
    msg.line_id, msg.cell_id, msg.session = line_id, cell_id, session
    return msg


def cycle_payload(clock, cycle_start_ns: int, work_ns: int, realtime) -> tuple:
    """What a cycle reports, taken on the cycle thread (``clock``: the cell's
    core.cycle_clock.CycleClock after the cycle started; ``realtime``: the cycle thread's
    cellos_common.core.realtime.Result); ``fill_cycle_msg`` writes it into the message.
    """
    return (max(0, clock.index), cycle_start_ns, clock.intended_ns, clock.period_ns, work_ns,
            float(clock.error_ns), int(clock.state), clock.locked, clock.missed_cycles, clock.exchange.stamps,
            realtime.priority, bool(realtime.refused))


def fill_cycle_msg(msg: CellCycle, payload: tuple, *, stamp_ns: int, send_ns: int) -> CellCycle:
    """``stamp_ns``: the system clock now; ``send_ns``: the cell's clock now (t1 of the exchange
    this report starts), taken right before the publish.
    """
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    (msg.cycle_index, msg.cycle_start_ns, msg.intended_start_ns, msg.period_ns, msg.work_ns, msg.phase_error_ns,
     msg.state, msg.locked, msg.missed_cycles, (msg.sync_t1_ns, msg.sync_t2_ns, msg.sync_t3_ns, msg.sync_t4_ns),
     msg.thread_priority, msg.realtime_refused) = payload
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


def line_state_msg(line: LineCoordinator, line_id: str, stamp, now_ns: int, gates: dict | None = None,
                   realtime=None) -> LineState:
    """``now_ns``: the coordinator's clock now (windows, offsets, plant data age); ``realtime``:
    its receive path's cellos_common.core.realtime.Result, None before it was applied.
    """
    msg = LineState()
    msg.header.stamp = stamp
    msg.line_id = line_id
    msg.period_ms = line.schedule.period_ns / 1e6
    msg.epoch_ns = line.schedule.epoch_ns
    msg.offset_mode = line.config.offset_mode
    msg.clock_mode = line.config.clock_mode
    if realtime is not None:
        msg.thread_priority, msg.realtime_refused = realtime.priority, bool(realtime.refused)
    flow = line.flow
    for t in sorted(line.cells.values(), key=lambda t: t.cell_id):
        _, p99 = line.error_percentiles_ms(t, now_ns)
        cell = CellPhase()
        cell.cell_id, cell.session, cell.state = t.cell_id, t.session, line.state_of(t)
        cell.locked, cell.held, cell.hold_reason = t.locked, t.held, t.hold_reason
        cell.phase_error_ms = t.phase_error_ns / 1e6
        cell.phase_error_p99_ms = p99
        cell.clock_offset_ms = line.offset_now_ms(t, now_ns)
        cell.clock_skew_ppm = t.offset.skew_ppm
        cell.round_trip_ms = (t.offset.delay_ns or 0.0) / 1e6
        cell.period_ms = t.period_ns / 1e6
        cell.schedule_offset_ms = line.offsets.get(t.cell_id, 0) / 1e6
        cell.cycle_index = t.cycle_index
        cell.lost_count, cell.relock_count = t.lost_count, t.relock_count
        cell.missed_cycles = t.missed_cycles
        cell.thread_priority, cell.realtime_refused = t.thread_priority, t.realtime_refused
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
    msg.plant_age_s = (now_ns - line.flow_recv_ns) / 1e9 if flow is not None else -1.0
    msg.plant_rejected, msg.plant_status = line.plant_rejected, line.plant_status
    return msg
