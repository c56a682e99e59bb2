"""Line coordinator (one per line, e.g. /line1/coordinator).

Discovers cells from their ``<line>/<cell>/timing/cycle`` reports, answers each report with
that cell's correction on ``<line>/<cell>/timing/correction``, publishes ``line_state``
(transient local) and ``line_markers``, and serves ``set_line_period``, ``hold_cell``, ``resync``.

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
from rclpy.event_handler import SubscriptionEventCallbacks
from visualization_msgs.msg import MarkerArray

from cellos_line.core.line_coordinator import DRIFT, LineConfig, LineCoordinator
from cellos_common.core.params import ParamSpec
from cellos_line.core.schedule import stagger_offsets
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_line.nodes.convert_flow import snapshot_from_msg
from cellos_line.nodes.convert_timing import correction_msg, line_state_msg, report_from_msg
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
from cellos_common.nodes.operator_action import OperatorActions
from cellos_line.nodes.line_markers import line_markers

BACKUP_FACTOR = 5.0  # the timer path, for a missed deadline event

PARAMS = [
    ParamSpec('line_id', '', "line id; empty: the last part of the node's namespace"),
    ParamSpec('period_ms', 20.0, 'line cycle period', min=0.0, max=60000.0, min_exclusive=True, unit='ms'),
    ParamSpec('offset_mode', 'aligned', 'cell offsets on the schedule: aligned, staggered (spread over one '
              'period to spread GPU load) or custom (cell_offsets_ms)', choices=('aligned', 'staggered', 'custom')),
    ParamSpec('cells', [], 'expected cell ids in line order (empty: discover)', read_only=True, item=str),
    ParamSpec('cell_offsets_ms', 0.0, "the cell's offset on the line schedule with offset_mode custom",
              keys='cells', min=-60000.0, max=60000.0, unit='ms'),
    ParamSpec('accept_unknown_cells', True, 'take cells that are not in cells into the line'),
    ParamSpec('lost_after_periods', 1.25, 'a cell whose reports stop this long is lost: the QoS deadline of '
              'the cycle reports (a backup timer declares it after twice as long)',
              min=qos.CYCLE_DEADLINE_PERIODS, max=100.0),
    ParamSpec('lock_threshold_ms', 1.0, 'measured |phase error| within which a cell counts as locked',
              min=0.0, max=1000.0, min_exclusive=True, unit='ms'),
    ParamSpec('state_rate_hz', 5.0, 'line_state and marker publication rate', min=0.1, max=100.0, unit='Hz'),
    ParamSpec('discovery_period_s', 0.5, 'how often to look for new cells', min=0.05, max=60.0, unit='s'),
    ParamSpec('frame_id', 'map', 'frame of the RViz markers'),
    ParamSpec('plant_topic', 'plant/state', 'PlantState topic of the plant simulation or PLC bridge'),
    ParamSpec('backpressure_latency_cycles', 2, 'cycle starts between a plant sample and the cell acting '
              'on the hold decided from it; a cell is held while the next buffer has fewer free places '
              'than this (plus its part in work). Every buffer capacity must be >= this', min=1, max=100),
    ParamSpec('plant_stale_s', 2.0, 'plant data older than this is reported stale (holds are kept)',
              min=0.01, max=3600.0, unit='s'),
]


class CoordinatorNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('coordinator', **kwargs)
        self._lock = threading.Lock()
        self._cells: dict[str, tuple] = {}    # cell id -> (report sub, correction pub, drift sub, gate sub)
        self._gates: dict[str, int] = {}      # cell id -> GateState.LEVEL_*

    def check_params(self, p) -> None:
        stagger_offsets([], 1, p.offset_mode, p.cell_offsets_ms)

    def on_params_changed(self, p) -> None:
        with self._lock:
            if int(p.period_ms * 1e6) != self.line.schedule.period_ns:
                self.line.set_period(int(p.period_ms * 1e6), time.time_ns())
            self.line.set_offsets(p.offset_mode, p.cell_offsets_ms)

    def configure(self) -> None:
        p = self.params
        self.line_id = p.line_id or self.get_namespace().rstrip('/').rsplit('/', 1)[-1] or 'line'
        self.line_ns = self.get_namespace().rstrip('/')
        cfg = LineConfig(
            period_ns=int(p.period_ms * 1e6), offset_mode=p.offset_mode,
            custom_offsets_ms=dict(p.cell_offsets_ms), expected_cells=tuple(p.cells),
            accept_unknown_cells=p.accept_unknown_cells, lost_after_periods=p.lost_after_periods,
            lock_threshold_ns=int(p.lock_threshold_ms * 1e6),
            backpressure_latency_cycles=p.backpressure_latency_cycles)
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
            self.create_timer(self.line.schedule.period_ns / 2e9, lambda: self._check_lost(BACKUP_FACTOR)),
            self.create_timer(1.0 / p.state_rate_hz, self._publish_state),
        ]
        self._discover()

    def deactivate(self) -> None:
        for t in self._line_timers:
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
            events = SubscriptionEventCallbacks(
                deadline=lambda _e, cell=cell: self._check_lost(1.0, cell),
                liveliness=lambda e, cell=cell: e.alive_count == 0 and self._check_lost(1.0, cell))
            sub = self.create_subscription(
                CellCycle, name, lambda msg, info, cell=cell: self._on_report(cell, msg, info),
                # depth 1: after a stall the newest report is taken first, not a backlog
                qos.cycle_report(self.params.period_ms / 1e3, self.params.lost_after_periods, depth=1),
                event_callbacks=events, callback_group=self._reports)
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

    def _on_report(self, cell: str, msg: CellCycle, info) -> None:
        # t2 of the clock exchange: stamped by DDS on arrival, before any executor delay
        recv = info['received_timestamp'] or time.time_ns()
        if msg.cell_id != cell:
            self.get_logger().warning(f"report naming cell '{msg.cell_id}' on cell '{cell}''s topic ignored",
                                      throttle_duration_sec=10.0)
            return
        entry = self._cells[cell]
        with self._lock:
            correction, event = self.line.on_report(report_from_msg(msg), recv)
        if 'duplicate' in event or 'unknown' in event:
            self.get_logger().warning(event, throttle_duration_sec=2.0)
        elif event:
            self.get_logger().info(event)
        if correction is not None:
            entry[1].publish(correction_msg(correction, self.get_clock().now().to_msg(), time.time_ns()))

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

    def _check_lost(self, factor: float, cell: str | None = None) -> None:
        with self._lock:
            events = self.line.check_lost(time.time_ns(), factor, cell)
        for e in events:
            self.get_logger().warning(e)

    def _publish_state(self) -> None:
        with self._lock:
            msg = line_state_msg(self.line, self.line_id, self.get_clock().now().to_msg(), time.time_ns(), self._gates)
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
            msg = line_state_msg(self.line, self.line_id, self.get_clock().now().to_msg(), time.time_ns(), self._gates)
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
            msg = line_state_msg(self.line, self.line_id, self.get_clock().now().to_msg(), time.time_ns(), self._gates)
            values = {'cells_known': msg.cells_known, 'cells_locked': msg.cells_locked,
                      'cells_lost': msg.cells_lost, 'period_ms': msg.period_ms,
                      'phase_error_p99_ms': msg.phase_error_p99_ms,
                      'duplicate_reports': self.line.duplicates, 'out_of_order_reports': self.line.out_of_order}
        for c in msg.cells:
            values[f'{c.cell_id}.phase_error_ms'] = c.phase_error_ms
            values[f'{c.cell_id}.clock_offset_ms'] = c.clock_offset_ms
        if msg.cells_lost:
            return DiagReport(ERROR, f'{msg.cells_lost} cell(s) lost', values)
        if msg.cells_locked < msg.cells_known or not msg.cells_known:
            return DiagReport(WARN, f'{msg.cells_locked}/{msg.cells_known} cells locked', values)
        return DiagReport(OK, f'{msg.cells_locked}/{msg.cells_known} cells locked', values)


def main(args=None):
    return main_for(CoordinatorNode, args)
