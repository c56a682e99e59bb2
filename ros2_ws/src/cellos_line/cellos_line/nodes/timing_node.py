"""Timing node (one per cell): runs the cell's periodic cycle, phase-locked by the coordinator.

Publishes ``timing/cycle`` (CellCycle) at every cycle start; applies ``timing/correction``
(PhaseCorrection). The cycle runs on its own thread with absolute wake-ups, so executor load
does not add to the timer jitter.
"""
from __future__ import annotations

import random
import threading
import time

from cellos_interfaces.msg import CellCycle, PhaseCorrection

from cellos_line.core.cycle_clock import CycleClock, CycleConfig, CycleState
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_line.nodes.convert_timing import cycle_msg
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport

PARAMS = [
    ParamSpec('line_id', 'line1', 'line this cell belongs to'),
    ParamSpec('cell_id', '', "cell id; empty: the last part of the node's namespace"),
    ParamSpec('period_ms', 20.0, 'nominal cycle period until the coordinator sends the line schedule',
              min=0.0, max=60000.0, min_exclusive=True, unit='ms'),
    ParamSpec('max_slew_fraction', 0.1, 'largest phase correction per cycle, as a fraction of the period',
              min=0.001, max=0.49),
    ParamSpec('lock_threshold_ms', 1.0, '|phase error| within which the cell counts as locked',
              min=0.0, max=1000.0, min_exclusive=True, unit='ms'),
    ParamSpec('lock_cycles', 3, 'consecutive cycles within the threshold before reporting LOCKED',
              min=1, max=1000),
    ParamSpec('coordinator_timeout_cycles', 5.0,
              'cycles without a correction before free-running on the last schedule', min=1.0, max=10000.0),
    ParamSpec('clock_offset_ms', 0.0,
              "artificial offset added to this cell's clock (tests: proves the coordinator's estimate)",
              min=-60000.0, max=60000.0, unit='ms'),
]


class TimingNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('timing', **kwargs)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.session = random.getrandbits(32)
        self._sync = (0, 0, 0, 0)
        self._jitter_ns = 0
        self._cycles = 0
        self._last_session_warn = 0.0

    # -- clock --------------------------------------------------------------------------------
    def now_ns(self) -> int:
        """This cell's clock (system clock plus the artificial test offset)."""
        return time.time_ns() + self._clock_offset_ns

    def check_params(self, p) -> None:
        if p.lock_threshold_ms >= p.period_ms / 2:
            raise ParameterError(f"lock_threshold_ms ({p.lock_threshold_ms}) must be below half the "
                                 f"period ({p.period_ms / 2} ms)")

    def on_params_changed(self, p) -> None:
        self._clock_offset_ns = int(p.clock_offset_ms * 1e6)

    def configure(self) -> None:
        p = self.params
        self.cell_id = p.cell_id or self.get_namespace().rstrip('/').rsplit('/', 1)[-1] or self.get_name()
        self._clock_offset_ns = int(p.clock_offset_ms * 1e6)
        period_ns = int(p.period_ms * 1e6)
        self.config = CycleConfig(
            period_ns=period_ns, max_slew_fraction=p.max_slew_fraction,
            lock_threshold_ns=int(p.lock_threshold_ms * 1e6), lock_cycles=p.lock_cycles,
            coordinator_timeout_ns=int(p.coordinator_timeout_cycles * period_ns))
        self.cycle_pub = self.create_publisher(CellCycle, 'timing/cycle', qos.cycle_report(p.period_ms / 1e3))
        self.correction_sub = self.create_subscription(
            PhaseCorrection, 'timing/correction', self._on_correction, qos.correction())
        self.diagnostics.add('cycle', self._diagnose)
        self.get_logger().info(f"cell '{self.cell_id}' on line '{p.line_id}', nominal period "
                               f"{p.period_ms:.3f} ms, session {self.session:#010x}")

    def activate(self) -> None:
        self.clock = CycleClock(self.config, self.now_ns())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f'{self.cell_id}-cycle', daemon=True)
        self._thread.start()

    def deactivate(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def cleanup(self) -> None:
        self.destroy_publisher(self.cycle_pub)
        self.destroy_subscription(self.correction_sub)

    # -- corrections ----------------------------------------------------------------------------
    def _on_correction(self, msg: PhaseCorrection, info) -> None:
        # t4 of the clock exchange: stamped by DDS on arrival, before any executor delay
        t4 = (info['received_timestamp'] + self._clock_offset_ns) if info['received_timestamp'] else self.now_ns()
        if msg.cell_id != self.cell_id:
            self.get_logger().warning(f"correction for cell '{msg.cell_id}' on this cell's topic ignored",
                                      throttle_duration_sec=5.0)
            return
        if msg.session != self.session:
            return  # computed for an earlier run of this cell: the next one will be ours
        with self._lock:
            if not hasattr(self, 'clock'):
                return
            self._sync = (msg.echo_t1_ns, msg.recv_t2_ns, msg.send_t3_ns, t4)
            if msg.period_ns > 0:
                was = self.clock.state
                self.clock.on_correction(msg.anchor_ns, msg.anchor_index, msg.period_ns,
                                         msg.command, t4, msg.reason)
                if was == CycleState.FREE_RUNNING:
                    self.get_logger().info('coordinator back: re-locking')
                if was != CycleState.HELD and self.clock.held:
                    self.get_logger().info(f'held by the coordinator: {msg.reason}')
                elif was == CycleState.HELD and not self.clock.held:
                    self.get_logger().info('released by the coordinator')

    # -- the cycle ----------------------------------------------------------------------------
    def _run(self) -> None:
        with self._lock:
            intended, wake = self.clock.advance(self.now_ns())
        last_work = 0
        while not self._stop.is_set():
            delay = (wake - self.now_ns()) / 1e9
            if delay > 0 and self._stop.wait(delay):
                break
            actual = self.now_ns()
            with self._lock:
                jitter = self.clock.on_started(actual, wake)
                state_before = self.clock.state
                msg = cycle_msg(stamp=self.get_clock().now().to_msg(), line_id=self.params.line_id,
                                cell_id=self.cell_id, session=self.session, clock=self.clock,
                                cycle_start_ns=actual, work_ns=last_work, sync=self._sync,
                                send_ns=self.now_ns())
            self.cycle_pub.publish(msg)
            self._jitter_ns = jitter
            self._cycles += 1
            last_work = self.now_ns() - actual
            with self._lock:
                intended, wake = self.clock.advance(self.now_ns())
                if state_before != CycleState.FREE_RUNNING and self.clock.state == CycleState.FREE_RUNNING:
                    self.get_logger().warning('no correction from the coordinator: free-running on the last '
                                              f'schedule, period {self.clock.period_ns / 1e6:.3f} ms')
            if wake < self.now_ns() - self.clock.period_ns:
                self.get_logger().warning('cycle thread fell more than a period behind',
                                          throttle_duration_sec=5.0)

    def _diagnose(self) -> DiagReport:
        if not hasattr(self, 'clock'):
            return DiagReport(WARN, 'not active', {})
        with self._lock:
            state = self.clock.state
            values = {'state': state.name, 'cycle_index': self.clock.index,
                      'period_ms': self.clock.period_ns / 1e6, 'phase_error_ms': self.clock.error_ns / 1e6,
                      'last_jitter_ms': self._jitter_ns / 1e6, 'cycles': self._cycles,
                      'session': f'{self.session:#010x}'}
        level = {CycleState.LOCKED: OK, CycleState.HELD: OK, CycleState.FREE_RUNNING: WARN,
                 CycleState.LOCKING: WARN, CycleState.STARTING: WARN}.get(state, ERROR)
        return DiagReport(level, state.name.lower().replace('_', '-'), values)


def main(args=None):
    return main_for(TimingNode, args)
