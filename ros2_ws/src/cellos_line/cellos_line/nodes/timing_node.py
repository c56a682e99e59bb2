"""Timing node (one per cell): runs the cell's periodic cycle, phase-locked by the coordinator.

Publishes ``timing/cycle`` (CellCycle) at every cycle start; applies ``timing/correction``
(PhaseCorrection). The cycle runs on its own thread with absolute wake-ups, at SCHED_FIFO
``thread_priority`` where the OS allows (normal priority, said once, where it does not), so
executor load does not add to the timer jitter. Its work per wake-up is bounded: take the
cycle's figures and hand them to a RealtimePublisher, whose own thread publishes them (a
publish can block on the network: it never stalls the cycle).

The interpreter lock: a woken cycle thread must take it from whichever thread of this process
holds it. The process holds only this node, so that is the executor taking a correction
(rarely: the coordinator answers at its sync rate). Left at normal priority on a loaded
machine, that thread can wait tens of milliseconds for a CPU while holding the lock, and the
real-time cycle thread waits with it (32 cells on 2 cores showed 20-60 ms stalls). So the
executor's thread runs one priority below the cycle thread (its work is bounded too), with
the DDS threads that stamp and deliver the corrections; the main thread sleeps until the end.

The node spins single-threaded, not on the EventsExecutor: it has one subscription, and the
single-threaded executor hands the correction's DDS reception stamp (t4 of the clock
exchange, before any executor delay), which rclpy's EventsExecutor cannot.
"""
from __future__ import annotations

import gc
import random
import threading
import time

from cellos_interfaces.msg import CellCycle, PhaseCorrection

from cellos_common.core import realtime
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
from cellos_line.core.cycle_clock import CycleClock, CycleConfig, CycleState
from cellos_common.nodes.realtime_publisher import RealtimePublisher
from cellos_line.nodes.convert_timing import cycle_msg, cycle_payload, fill_cycle_msg

PARAMS = [
    ParamSpec('line_id', 'line1', 'line this cell belongs to'),
    ParamSpec('cell_id', '', "cell id; empty: the last part of the node's namespace"),
    ParamSpec('period_ms', 20.0, 'nominal cycle period until the coordinator sends the line schedule',
              min=0.0, max=60000.0, min_exclusive=True, unit='ms'),
    ParamSpec('max_slew_fraction', 0.1, 'largest phase correction per cycle, as a fraction of the period',
              min=0.001, max=0.49),
    ParamSpec('lock_threshold_ms', 1.0, 'the line\'s lock criterion, judged here only: median |cycle start - '
              'schedule tick| of the last cycles within this (twice this to stay locked)',
              min=0.0, max=1000.0, min_exclusive=True, unit='ms'),
    ParamSpec('lock_cycles', 3, 'cycles on the schedule since a disturbance (first schedule, stall, re-sync, '
              'free-running) before the cell may report LOCKED', min=1, max=1000),
    ParamSpec('coordinator_timeout_ms', 300.0,
              'without a correction for this long the cell free-runs on the last schedule (and its plant '
              'starts no part); above the coordinator\'s sync interval', min=1.0, max=600000.0, unit='ms'),
    ParamSpec('clock_offset_ms', 0.0,
              "artificial offset added to this cell's clock (tests: proves the coordinator's estimate)",
              min=-60000.0, max=60000.0, unit='ms'),
    *realtime.PARAMS,
]


class TimingNode(CellosNode):
    SPIN = 'single'    # no callback blocks; DDS reception stamps (see above)
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('timing', **kwargs)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.session = random.getrandbits(32)
        self._jitter_ns = 0
        self._cycles = 0
        self._clock_offset_ns = 0
        self.realtime: realtime.Result | None = None
        self.clock: CycleClock | None = None   # made by the cycle thread when it starts

    # -- clock --------------------------------------------------------------------------------
    def now_ns(self) -> int:
        """This cell's clock (system clock plus the artificial test offset)."""
        return time.time_ns() + self._clock_offset_ns

    def check_params(self, p) -> None:
        if p.lock_threshold_ms >= p.period_ms / 2:
            raise ParameterError(f"lock_threshold_ms ({p.lock_threshold_ms}) must be below half the "
                                 f"period ({p.period_ms / 2} ms)")
        try:
            realtime.check_cpus(realtime.Request.from_params(p).cpus)
        except ValueError as e:
            raise ParameterError(str(e)) from None

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
            coordinator_timeout_ns=int(p.coordinator_timeout_ms * 1e6))
        self.rt_request = realtime.Request.from_params(p)
        self.cycle_pub = self.create_publisher(CellCycle, 'timing/cycle', qos.cycle_report())
        self.correction_sub = self.create_subscription(
            PhaseCorrection, 'timing/correction', self._on_correction, qos.correction())
        self.diagnostics.add('cycle', self._diagnose)
        self.get_logger().info(f"cell '{self.cell_id}' on line '{p.line_id}', nominal period "
                               f"{p.period_ms:.3f} ms, session {self.session:#010x}")

    def activate(self) -> None:
        gc.freeze()   # what start-up made stays out of the collections the cycle thread may run
        req = self.rt_request
        below = realtime.Request(max(0, req.priority - 1), req.cpus)
        self._rt_timer = realtime.apply_in_executor(self, below, self._executor_realtime)
        self._reports = RealtimePublisher(
            self.cycle_pub, cycle_msg(self.params.line_id, self.cell_id, self.session),
            lambda msg, payload: fill_cycle_msg(msg, payload, stamp_ns=time.time_ns(), send_ns=self.now_ns()),
            f'{self.cell_id}-report', below)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f'{self.cell_id}-cycle', daemon=True)
        self._thread.start()

    def _executor_realtime(self, result: realtime.Result) -> None:
        if result.priority:
            # the DDS threads stamp a correction's arrival (t4) and hand it to the executor
            result.dds_threads, refused = realtime.apply_to_threads(realtime.Request(result.priority, result.cpus))
            result.refused += refused
        if result.refused and self.rt_request.priority:
            self.get_logger().warning(f'executor and DDS threads run at {result.text}')

    def deactivate(self) -> None:
        self.destroy_timer(self._rt_timer)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._reports.close()

    def cleanup(self) -> None:
        self.destroy_publisher(self.cycle_pub)
        self.destroy_subscription(self.correction_sub)

    # -- corrections ----------------------------------------------------------------------------
    def _on_correction(self, msg: PhaseCorrection, info) -> None:
        # t4 of the clock exchange: stamped by DDS on arrival (on this host's clock)
        received = info['received_timestamp']
        t4 = received + self._clock_offset_ns if received else self.now_ns()
        if msg.cell_id != self.cell_id:
            self.get_logger().warning(f"correction for cell '{msg.cell_id}' on this cell's topic ignored",
                                      throttle_duration_sec=5.0)
            return
        if msg.session != self.session:
            return  # computed for an earlier run of this cell: the next one will be ours
        with self._lock:
            if self.clock is None:
                return
            self.clock.exchange.on_echo(msg.echo_t1_ns, msg.recv_t2_ns, msg.send_t3_ns, t4)
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
    def _enter_realtime(self) -> None:
        self.realtime = realtime.apply(self.rt_request)
        if self.realtime.refused:
            self.get_logger().warning(f'cycle thread runs at {self.realtime.text}: timer jitter under CPU load '
                                      'will show in the phase (docs/realtime.md says what a site sets)')
        elif self.rt_request.wanted:
            self.get_logger().info(f'cycle thread: {self.realtime.text}')

    def _run(self) -> None:
        self._enter_realtime()
        with self._lock:
            # the first cycle counts from when this thread runs, not from activate() (the
            # thread may start late on a busy machine: that is no stall)
            self.clock = CycleClock(self.config, self.now_ns())
            intended, wake = self.clock.advance(self.now_ns())
        last_work = 0
        while not self._stop.is_set():
            delay = (wake - self.now_ns()) / 1e9
            if delay > 0 and self._stop.wait(delay):
                break
            actual = self.now_ns()
            with self._lock:
                if self.clock.stalled(actual):
                    late_ms = (actual - self.clock.intended_ns) / 1e6
                    missed = self.clock.missed_cycles
                    wake = self.clock.skip_to(actual)
                    missed = self.clock.missed_cycles - missed
                else:
                    missed = 0
                    jitter = self.clock.on_started(actual, wake)
                    state_before = self.clock.state
                    payload = cycle_payload(self.clock, actual, last_work, self.realtime)
            if missed:
                # no cycle now: the next one starts on the schedule, the missed ones never run
                self.get_logger().warning(f'cycle thread stalled {late_ms:.1f} ms: skipped {missed} cycle(s), '
                                          f'next on the schedule ({self.clock.missed_cycles} missed in all)',
                                          throttle_duration_sec=1.0)
                continue
            self._reports.try_publish(payload)
            self._jitter_ns = jitter
            self._cycles += 1
            last_work = self.now_ns() - actual
            with self._lock:
                intended, wake = self.clock.advance(self.now_ns())
                if state_before != CycleState.FREE_RUNNING and self.clock.state == CycleState.FREE_RUNNING:
                    self.get_logger().warning('no correction from the coordinator: free-running on the last '
                                              f'schedule, period {self.clock.period_ns / 1e6:.3f} ms')
        realtime.normal()

    def _diagnose(self) -> DiagReport:
        if self.clock is None:
            return DiagReport(WARN, 'not active', {})
        with self._lock:
            state = self.clock.state
            values = {'state': state.name, 'locked': self.clock.locked, 'cycle_index': self.clock.index,
                      'period_ms': self.clock.period_ns / 1e6, 'phase_error_ms': self.clock.error_ns / 1e6,
                      'last_jitter_ms': self._jitter_ns / 1e6, 'cycles': self._cycles,
                      'missed_cycles': self.clock.missed_cycles, 'stalls': self.clock.stalls,
                      'reports_sent': self._reports.sent, 'reports_replaced_unsent': self._reports.replaced,
                      'realtime': self.realtime.text if self.realtime else 'not started',
                      'session': f'{self.session:#010x}'}
        level = {CycleState.LOCKED: OK, CycleState.HELD: OK, CycleState.FREE_RUNNING: WARN,
                 CycleState.LOCKING: WARN, CycleState.STARTING: WARN}.get(state, ERROR)
        text = state.name.lower().replace('_', '-')
        if self.realtime is not None and self.realtime.refused:
            level, text = max(level, WARN), f'{text}; real-time refused: {"; ".join(self.realtime.refused)}'
        return DiagReport(level, text, values)


def main(args=None):
    realtime.prefer_nonblocking_sends()
    return main_for(TimingNode, args)
