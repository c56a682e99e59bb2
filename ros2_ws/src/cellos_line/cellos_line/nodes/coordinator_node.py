"""Line coordinator (one per line, e.g. /line1/coordinator).

Discovers cells from their ``<line>/<cell>/timing/cycle`` reports, answers each report with
that cell's correction on ``<line>/<cell>/timing/correction``, publishes ``line_state``
(transient local) and ``line_markers``, and serves ``set_line_period``, ``hold_cell``, ``resync``.

Cost per cell does not grow with the number of cells: the node spins on rclpy's EventsExecutor
(one queued event per message, no wait set rebuilt over every entity), a locked cell's reports
are answered at ``sync_rate_hz`` rather than every cycle (the clock exchange needs no more,
and holds go out at once anyway), and a lost cell is found by one timer at a quarter period
that compares each cell's last report with lost_after_periods (not a DDS deadline per cell,
whose timer every report restarts on both sides). ``thread_priority`` puts the thread that
takes the reports, sends the corrections and runs that timer at SCHED_FIFO.

Line flow: reads the plant's buffers from ``plant_topic`` (PlantState, from plant_node or a PLC
bridge) and each cell's ``vision/drift``; holds a cell while its drift monitor revalidates and
applies backpressure (core.backpressure) through the same hold; a hold or release decided
between two reports goes out at once, not with the next report's answer.
"""
from __future__ import annotations

import re
import threading
import time

from cellos_interfaces.msg import CellCycle, GateState, LineState, PhaseCorrection, PlantState, VisionDrift
from cellos_interfaces.srv import HoldCell, Resync, SetLinePeriod
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from visualization_msgs.msg import MarkerArray

from cellos_common.core import realtime
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_line.core.line_coordinator import CLOCK_MODES, DRIFT, LineConfig, LineCoordinator
from cellos_line.core.schedule import stagger_offsets
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_line.nodes.convert_flow import snapshot_from_msg
from cellos_line.nodes.convert_timing import correction_msg, line_state_msg, report_from_msg
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
from cellos_common.nodes.operator_action import OperatorActions
from cellos_line.nodes.line_markers import line_markers

LOST_CHECKS_PER_PERIOD = 4

PARAMS = [
    ParamSpec('line_id', '', "line id; empty: the last part of the node's namespace"),
    ParamSpec('period_ms', 20.0, 'line cycle period', min=0.0, max=60000.0, min_exclusive=True, unit='ms'),
    ParamSpec('offset_mode', 'aligned', 'cell offsets on the schedule: aligned, staggered (spread over one '
              'period to spread GPU load) or custom (cell_offsets_ms)', choices=('aligned', 'staggered', 'custom')),
    ParamSpec('cells', [], 'expected cell ids in line order (empty: discover)', read_only=True, item=str),
    ParamSpec('cell_offsets_ms', 0.0, "the cell's offset on the line schedule with offset_mode custom",
              keys='cells', min=-60000.0, max=60000.0, unit='ms'),
    ParamSpec('accept_unknown_cells', True, 'take cells that are not in cells into the line'),
    ParamSpec('lost_after_periods', 2.5, 'a cell whose reports stop this long is lost (checked every quarter '
              'period): a failure is reported between lost_after_periods - 1 and lost_after_periods + 0.25 '
              'periods after it happened', min=1.5, max=100.0),
    ParamSpec('common_silence_periods', 10.0, 'when several cells (three or more, a quarter of the line) fall '
              'silent at once, the silence is most likely on this side (a stalled process, a DDS pause while '
              'many participants are matched): they are lost only after this long', min=1.5, max=1000.0),
    ParamSpec('sync_rate_hz', 10.0, "rate of the clock exchange with a locked cell: its reports are answered "
              "this often (a cell not locked: every report); the cells' coordinator_timeout_ms must be "
              'longer than the interval. 0: every report', min=0.0, max=1000.0, unit='Hz'),
    ParamSpec('clock_mode', 'exchange', "exchange: estimate each cell's clock offset and rate; system: the "
              "hosts' clocks are disciplined (PTP, chrony): trust them, only monitor the residual offset",
              choices=CLOCK_MODES),
    ParamSpec('max_residual_ms', 0.5, 'clock_mode system: a residual offset above this is a warning',
              min=0.0, max=60000.0, unit='ms'),
    ParamSpec('state_rate_hz', 5.0, 'line_state and marker publication rate', min=0.1, max=100.0, unit='Hz'),
    ParamSpec('discovery_period_s', 0.5, 'how often to look for new cells', min=0.05, max=60.0, unit='s'),
    ParamSpec('frame_id', 'map', 'frame of the RViz markers'),
    ParamSpec('plant_topic', 'plant/state', 'PlantState topic of the plant simulation or PLC bridge'),
    ParamSpec('backpressure_latency_cycles', 2, 'cycle starts between a plant sample and the cell acting '
              'on the hold decided from it; a cell is held while the next buffer has fewer free places '
              'than this (plus its part in work). Every buffer capacity must be >= this', min=1, max=100),
    ParamSpec('plant_stale_s', 2.0, 'plant data older than this is reported stale (holds are kept)',
              min=0.01, max=3600.0, unit='s'),
    *realtime.PARAMS,
]


class CoordinatorNode(CellosNode):
    SPIN = 'events'    # no callback blocks; one event per message, whatever the number of cells
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('coordinator', **kwargs)
        self._lock = threading.Lock()
        self._cells: dict[str, tuple] = {}    # cell id -> (report sub, correction pub, drift sub, gate sub)
        self._gates: dict[str, int] = {}      # cell id -> GateState.LEVEL_*
        self.realtime: realtime.Result | None = None
        self._line_timers = []

    def check_params(self, p) -> None:
        stagger_offsets([], 1, p.offset_mode, p.cell_offsets_ms)
        try:
            realtime.check_cpus(realtime.Request.from_params(p).cpus)
        except ValueError as e:
            raise ParameterError(str(e)) from None

    def on_params_changed(self, p) -> None:
        with self._lock:
            period_changed = int(p.period_ms * 1e6) != self.line.schedule.period_ns
            if period_changed:
                self.line.set_period(int(p.period_ms * 1e6), time.time_ns())
            self.line.set_offsets(p.offset_mode, p.cell_offsets_ms)
        if period_changed and self._line_timers:
            self.destroy_timer(self._line_timers[1])
            self._line_timers[1] = self._lost_timer()

    def configure(self) -> None:
        p = self.params
        self.line_id = p.line_id or self.get_namespace().rstrip('/').rsplit('/', 1)[-1] or 'line'
        self.line_ns = self.get_namespace().rstrip('/')
        cfg = LineConfig(
            period_ns=int(p.period_ms * 1e6), offset_mode=p.offset_mode,
            custom_offsets_ms=dict(p.cell_offsets_ms), expected_cells=tuple(p.cells),
            accept_unknown_cells=p.accept_unknown_cells, lost_after_periods=p.lost_after_periods,
            common_silence_periods=max(p.common_silence_periods, p.lost_after_periods),
            sync_interval_ns=int(1e9 / p.sync_rate_hz) if p.sync_rate_hz > 0 else 0,
            clock_mode=p.clock_mode, backpressure_latency_cycles=p.backpressure_latency_cycles)
        self.line = LineCoordinator(cfg, time.time_ns())
        self._topic = re.compile('^' + re.escape(self.line_ns) + r'/([A-Za-z0-9_]+)/timing/cycle$')
        self._reports = MutuallyExclusiveCallbackGroup()
        self.state_pub = self.create_publisher(LineState, 'line_state', qos.latched_state())
        self.marker_pub = self.create_publisher(MarkerArray, 'line_markers', qos.status())
        self._line_services = [
            self.create_service(SetLinePeriod, 'set_line_period', self._set_period),
            self.create_service(HoldCell, 'hold_cell', self._hold),
            self.create_service(Resync, 'resync', self._resync),
        ]
        self.actions = OperatorActions(self)
        # same group as the reports: if the flow path stalls, so do the answers, and the cells' leases
        # run out (they start nothing) instead of running on a stale release
        self.plant_sub = self.create_subscription(PlantState, p.plant_topic, self._on_plant, qos.plant_state(),
                                                  callback_group=self._reports)
        self._overflows_seen = 0
        self._last_rejection = ('', 0)
        self.diagnostics.add('line', self._diagnose)
        self.diagnostics.add('flow', self._diagnose_flow)
        self.get_logger().info(f"line '{self.line_id}': period {p.period_ms:.3f} ms, offsets {p.offset_mode}")

    def activate(self) -> None:
        p = self.params
        self._line_timers = [
            self.create_timer(p.discovery_period_s, self._discover),
            self._lost_timer(),
            self.create_timer(1.0 / p.state_rate_hz, self._publish_state),
        ]
        # the executor's thread takes the reports and sends the corrections
        self._rt_timer = realtime.apply_in_executor(self, realtime.Request.from_params(p), self._realtime_applied)
        self._discover()

    def _lost_timer(self):
        return self.create_timer(self.line.schedule.period_ns / 1e9 / LOST_CHECKS_PER_PERIOD, self._check_lost)

    def _realtime_applied(self, result: realtime.Result) -> None:
        if result.priority:
            # the DDS threads receive the reports before this thread takes them
            threads, refused = realtime.apply_to_threads(realtime.Request(result.priority, result.cpus))
            result.refused += refused
            result.dds_threads = threads
        self.realtime = result
        if result.refused:
            self.get_logger().warning(f'receive and correction path runs at {result.text}: lost-cell '
                                      'detection and corrections wait behind other load (docs/realtime.md)')
        elif result.priority or result.cpus or result.memory_locked:
            self.get_logger().info(f'receive and correction path: {result.text}')

    def deactivate(self) -> None:
        for t in [*self._line_timers, self._rt_timer]:
            self.destroy_timer(t)
        self._line_timers = []

    def cleanup(self) -> None:
        for sub, pub, drift_sub, gate_sub in self._cells.values():
            self.destroy_subscription(sub)
            self.destroy_publisher(pub)
            self.destroy_subscription(drift_sub)
            self.destroy_subscription(gate_sub)
        self._cells.clear()
        self.destroy_subscription(self.plant_sub)
        for s in self._line_services:
            self.destroy_service(s)
        self.actions.destroy()
        self.destroy_publisher(self.state_pub)
        self.destroy_publisher(self.marker_pub)

    # -- discovery and reports ------------------------------------------------------------
    def _discover(self) -> None:
        for name, types in self.get_topic_names_and_types():
            m = self._topic.match(name)
            if not m or m.group(1) in self._cells:
                continue
            if 'cellos_interfaces/msg/CellCycle' not in types:
                self.get_logger().warning(f'{name} has type {types}, not CellCycle: ignored',
                                          throttle_duration_sec=30.0)
                continue
            cell = m.group(1)
            sub = self._report_sub(cell)
            pub = self.create_publisher(PhaseCorrection, f'{self.line_ns}/{cell}/timing/correction',
                                        qos.correction())
            drift_sub = self.create_subscription(
                VisionDrift, f'{self.line_ns}/{cell}/vision/drift',
                lambda msg, cell=cell: self._on_drift(cell, msg), qos.latched_state(),
                callback_group=self._reports)
            # the cell's energy gate level, shown in line state and markers (no effect on timing)
            gate_sub = self.create_subscription(
                GateState, f'{self.line_ns}/{cell}/energy/gate',
                lambda msg, cell=cell: self._gates.__setitem__(cell, msg.level), qos.latched_state())
            self._cells[cell] = (sub, pub, drift_sub, gate_sub)

    def _report_sub(self, cell: str):
        return self.create_subscription(
            CellCycle, f'{self.line_ns}/{cell}/timing/cycle', lambda msg, cell=cell: self._on_report(cell, msg),
            # depth 1: after a stall the newest report is taken first, not a backlog
            qos.cycle_report(depth=1), callback_group=self._reports)

    def _on_report(self, cell: str, msg: CellCycle) -> None:
        # t2 of the clock exchange (the EventsExecutor hands no DDS reception stamp; the delay
        # up to here is part of the exchange's round trip, and the estimator keeps the
        # exchanges of least round trip)
        recv = time.time_ns()
        if msg.cell_id != cell:
            self.get_logger().warning(f"report naming cell '{msg.cell_id}' on cell '{cell}''s topic ignored",
                                      throttle_duration_sec=10.0)
            return
        entry = self._cells[cell]
        with self._lock:
            correction, event = self.line.on_report(report_from_msg(msg), recv)
        if correction is not None:
            entry[1].publish(correction_msg(correction, self.get_clock().now().to_msg(), time.time_ns()))
        if 'duplicate' in event or 'unknown' in event:
            self.get_logger().warning(event, throttle_duration_sec=2.0)
        elif event:
            self.get_logger().info(event)

    # -- line flow ------------------------------------------------------------------------------
    def _on_plant(self, msg: PlantState) -> None:
        now = time.time_ns()
        with self._lock:
            ok, problem, events, changed = self.line.on_plant(snapshot_from_msg(msg), now)
            overflows = self.line.flow.overflows if self.line.flow else 0
        if not ok:
            # a new reason is always logged, a repeated one at most every 5 s
            if problem != self._last_rejection[0] or now - self._last_rejection[1] > 5e9:
                self._last_rejection = (problem, now)
                self.get_logger().warning(f'plant data rejected: {problem}')
            return
        if overflows > self._overflows_seen:
            self.get_logger().error(f'plant reports {overflows - self._overflows_seen} new overflow(s) '
                                    f'({overflows} in all, {self.line.flow.dropped} parts dropped)')
            self._overflows_seen = overflows
        self._apply(events, changed, now)

    def _on_drift(self, cell: str, msg: VisionDrift) -> None:
        now = time.time_ns()
        reason = f'revalidating: {msg.reason or "drift"}' if msg.hold else None
        with self._lock:
            event = self.line.set_hold(cell, DRIFT, reason)
        self._apply([event] if event else [], [cell] if event else [], now)

    def _apply(self, events: list[str], changed: list[str], now: int) -> None:
        """Log hold/release events and send the changed cells their correction now."""
        for e in events:
            self.get_logger().info(e)
        for cell in changed:
            entry = self._cells.get(cell)
            with self._lock:
                correction = self.line.correction_now(cell, now)
            if entry is not None and correction is not None:
                entry[1].publish(correction_msg(correction, self.get_clock().now().to_msg(), time.time_ns()))

    def _check_lost(self) -> None:
        with self._lock:
            before = self.line.common_silences
            events = self.line.check_lost(time.time_ns(), self.line.schedule.period_ns // LOST_CHECKS_PER_PERIOD)
        if self.line.common_silences > before:
            self.get_logger().warning('most cells fell silent at once: waiting common_silence_periods before '
                                      'calling them lost (a stall on this side is the likelier cause)',
                                      throttle_duration_sec=10.0)
        for e in events:
            self.get_logger().warning(e)
        if events:   # a lost cell is news now, not at the next state_rate_hz tick (markers wait for it)
            with self._lock:
                msg = self._state()
            self.state_pub.publish(msg)

    def _state(self):
        return line_state_msg(self.line, self.line_id, self.get_clock().now().to_msg(), time.time_ns(),
                              self._gates, self.realtime)

    def _publish_state(self) -> None:
        with self._lock:
            msg = self._state()
        self.state_pub.publish(msg)
        self.marker_pub.publish(line_markers(msg, self.params.frame_id))

    # -- services ---------------------------------------------------------------------------
    def _set_period(self, req, res):
        from rclpy.parameter import Parameter
        if not req.period_ms > 0:
            res.success, res.message = False, f'period must be > 0 ms, got {req.period_ms}'
        else:
            result = self.set_parameters([Parameter('period_ms', value=float(req.period_ms))])[0]
            res.success = result.successful
            res.message = (f'line period {req.period_ms:.3f} ms' if result.successful else result.reason)
        res.period_ms = self.line.schedule.period_ns / 1e6
        self.actions.record('set_line_period', 'set_line_period', target=self.line_id, request=req,
                            success=res.success, message=res.message)
        return res

    def _hold(self, req, res):
        with self._lock:
            res.success, res.message = self.line.hold(req.cell_id, req.hold, req.reason)
        self.get_logger().info(res.message) if res.success else self.get_logger().warning(res.message)
        self.actions.record('hold_cell', 'hold' if req.hold else 'release', target=req.cell_id, reason=req.reason,
                            request=req, success=res.success, message=res.message)
        return res

    def _resync(self, req, res):
        with self._lock:
            res.success, res.message = self.line.resync(req.cell_id)
        self.get_logger().info(res.message)
        self.actions.record('resync', 'resync', target=req.cell_id, request=req, success=res.success,
                            message=res.message)
        return res

    def _diagnose_flow(self) -> DiagReport:
        with self._lock:
            msg = self._state()
            line = self.line
            values = {'parts_in': msg.parts_in, 'parts_out': msg.parts_out,
                      'parts_in_buffers': msg.parts_in_buffers, 'parts_in_cells': msg.parts_in_cells,
                      'parts_dropped': msg.parts_dropped, 'overflows': msg.overflows,
                      'holds_applied': msg.holds_applied, 'holds_released': msg.holds_released,
                      'plant_age_s': msg.plant_age_s, 'plant_rejected': line.plant_rejected}
            held = [c for c in msg.cells if c.held]
            for c in msg.cells:
                values[f'{c.cell_id}.buffer'] = f'{c.buffer_level}/{c.buffer_capacity}'
                values[f'{c.cell_id}.hold'] = c.hold_reason or '-'
        if msg.plant_age_s < 0:
            return DiagReport(WARN, 'no plant data yet', values)
        if msg.overflows:
            return DiagReport(ERROR, f'{msg.overflows} overflow(s), {msg.parts_dropped} part(s) dropped', values)
        if msg.plant_age_s > self.params.plant_stale_s:
            return DiagReport(WARN, f'plant data stale ({msg.plant_age_s:.1f} s): holds kept as they were', values)
        if msg.plant_status:
            values['last_rejection'] = msg.plant_status
        text = f'{msg.parts_out} parts out, {msg.parts_in_buffers} in buffers, {len(held)} cell(s) held'
        if held:
            text += ': ' + ', '.join(f'{c.cell_id} ({c.hold_reason})' for c in held)
        return DiagReport(OK, text, values)

    def _diagnose(self) -> DiagReport:
        with self._lock:
            msg = self._state()
            values = {'cells_known': msg.cells_known, 'cells_locked': msg.cells_locked,
                      'cells_lost': msg.cells_lost, 'period_ms': msg.period_ms,
                      'phase_error_p99_ms': msg.phase_error_p99_ms,
                      'duplicate_reports': self.line.duplicates, 'out_of_order_reports': self.line.out_of_order,
                      'late_lost_checks': self.line.late_checks, 'common_silences': self.line.common_silences,
                      'clock_mode': msg.clock_mode,
                      'realtime': self.realtime.text if self.realtime else 'not active'}
        not_rt = []
        for c in msg.cells:
            values[f'{c.cell_id}.phase_error_ms'] = c.phase_error_ms
            values[f'{c.cell_id}.clock_offset_ms'] = c.clock_offset_ms
            values[f'{c.cell_id}.clock_skew_ppm'] = c.clock_skew_ppm
            values[f'{c.cell_id}.missed_cycles'] = c.missed_cycles
            values[f'{c.cell_id}.lost_count'] = c.lost_count
            if c.realtime_refused:
                not_rt.append(c.cell_id)
        text = f'{msg.cells_locked}/{msg.cells_known} cells locked'
        notes = []
        if not_rt:
            notes.append(f"real-time refused on {', '.join(not_rt)}")
        if self.realtime is not None and self.realtime.refused:
            notes.append('real-time refused here')
        residual = [c.cell_id for c in msg.cells if abs(c.clock_offset_ms) > self.params.max_residual_ms]
        if msg.clock_mode == 'system' and residual:
            notes.append(f"clock residual above {self.params.max_residual_ms} ms: {', '.join(residual)}")
        text += ''.join(f'; {n}' for n in notes)
        if msg.cells_lost:
            return DiagReport(ERROR, f'{msg.cells_lost} cell(s) lost; ' + text, values)
        if msg.cells_locked < msg.cells_known or not msg.cells_known or notes:
            return DiagReport(WARN, text, values)
        return DiagReport(OK, text, values)


def main(args=None):
    realtime.prefer_nonblocking_sends()
    return main_for(CoordinatorNode, args)
