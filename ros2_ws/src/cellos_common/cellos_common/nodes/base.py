"""Lifecycle base of every cellos node and the one ``main`` they share.

A node subclass lists ``PARAMS`` (cellos_common.core.params.ParamSpec) and overrides the
``configure / activate / deactivate / cleanup`` hooks; this class declares the parameters
with descriptors and ranges, validates them in one place (start-up and ``ros2 param set``),
and turns hook exceptions into lifecycle FAILURE with a clear log line.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Sequence

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.logging import get_logger

from cellos_common.core.params import ParameterError, ParamSet, ParamSpec, validate
from cellos_common.nodes.diagnostics import Diagnostics
from cellos_common.nodes.parameters import declare_params, read_values

_AUTOSTART = ParamSpec('autostart', False,
                       'configure and activate on start, without a lifecycle manager')


class CellosNode(LifecycleNode):
    PARAMS: Sequence[ParamSpec] = ()
    # rclpy executor kind its own process spins it with (make_executor): 'multi' where a
    # callback may block, 'single' where none does (less Python per message)
    SPIN = 'multi'

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self._specs = (*self.PARAMS, _AUTOSTART)
        # {declared name: default}: the plain parameters and each map's entries
        self._declared = declare_params(self, self._specs)
        self.params: ParamSet | None = None
        # one per node lifetime (created at the first configure): diagnostic_updater declares its
        # parameter when constructed, and a second declaration raises
        self.diagnostics: Diagnostics | None = None
        self.active = False
        # between a completed configure and the start of cleanup: only then do runtime changes
        # reach on_params_changed
        self._configured = False
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None, **kwargs):
        """A timer on the steady clock unless given another: a step of the wall clock neither
        silences it (a step back) nor fires it in a burst (a step forward).
        """
        return super().create_timer(timer_period_sec, callback, callback_group,
                                    clock or Clock(clock_type=ClockType.STEADY_TIME), **kwargs)

    # -- parameters -----------------------------------------------------------------------
    def read_params(self) -> ParamSet:
        return validate(self._specs, read_values(self, self._declared))

    def _on_set_parameters(self, params) -> SetParametersResult:
        # rclpy calls this for every declaration too, also for parameters another component
        # declares on this node (diagnostic_updater.period while configuring): not ours to judge
        own = [p for p in params if p.name in self._declared]
        if not own:
            return SetParametersResult(successful=True)
        current = read_values(self, self._declared)
        current.update({p.name: p.value for p in own})
        try:
            new = validate(self._specs, current)
            self.check_params(new)
        except ParameterError as e:
            self.get_logger().error(f'rejected: {e}')
            return SetParametersResult(successful=False, reason=str(e))
        if self._configured:
            before, self.params = self.params, new
            try:
                self.on_params_changed(new)
            except Exception as e:  # a change the node cannot apply is refused; the node keeps running
                self.params = before
                self.get_logger().error(f'rejected: {type(e).__name__}: {e}')
                return SetParametersResult(successful=False, reason=f'{type(e).__name__}: {e}')
        return SetParametersResult(successful=True)

    def check_params(self, params: ParamSet) -> None:
        """Cross-parameter checks; raise ParameterError."""

    def on_params_changed(self, params: ParamSet) -> None:
        """Apply a validated runtime change (after configure)."""

    # -- lifecycle hooks for subclasses -------------------------------------------------
    def configure(self) -> None: ...
    def activate(self) -> None: ...
    def deactivate(self) -> None: ...
    def cleanup(self) -> None: ...

    def hardware_id(self) -> str:
        return self.get_fully_qualified_name()

    def _guard(self, what: str, fn) -> TransitionCallbackReturn:
        try:
            fn()
        except ParameterError as e:
            self.get_logger().error(f'{what} failed: {e}')
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # any other failure must also leave the node in a defined state
            self.get_logger().error(f'{what} failed: {type(e).__name__}: {e}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state) -> TransitionCallbackReturn:
        def run():
            params = self.read_params()
            self.check_params(params)
            self.params = params
            if self.diagnostics is None:
                self.diagnostics = Diagnostics(self, self.hardware_id())
            self.diagnostics.start()
            self.configure()
            self._configured = True
        result = self._guard('configure', run)
        if result != TransitionCallbackReturn.SUCCESS:
            self._release()
        return result

    def on_activate(self, state) -> TransitionCallbackReturn:
        def run():
            self.activate()
            self.active = True
        result = self._guard('activate', run)
        if result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info('active')
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        return self._guard('deactivate', self.deactivate)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        def run():
            self._configured = False
            self.cleanup()
        result = self._guard('cleanup', run)
        self._release()
        return result

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self.active:
            self.active = False
            self._guard('deactivate', self.deactivate)
        if self._configured:
            self._configured = False
            self._guard('cleanup', self.cleanup)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """What the base holds while configured: the diagnostics' timer and publisher, the params."""
        self._configured = False
        if self.diagnostics is not None:
            self.diagnostics.stop()
        self.params = None

    def bring_up(self) -> bool:
        """configure + activate in-process (what a lifecycle manager does over services)."""
        from lifecycle_msgs.msg import State
        self.trigger_configure()
        if self._state_machine.current_state[0] != State.PRIMARY_STATE_INACTIVE:
            return False
        self.trigger_activate()
        return self._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE

    def autostart(self) -> bool:
        return bool(self.get_parameter('autostart').value)


def make_executor(kind: str = 'multi', threads: int | None = None):
    """multi: callbacks may block (model loading, inference bookkeeping); single: light nodes;
    events: rclpy's EventsExecutor, the lowest latency and CPU per message.
    CELLOS_EXECUTOR overrides the kind for every process of a run.
    """
    kind = os.environ.get('CELLOS_EXECUTOR') or kind
    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=threads)
    if kind == 'single':
        return SingleThreadedExecutor()
    if kind == 'events':
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError as e:  # Jazzy before rclpy 7.1.4 has no EventsExecutor
            get_logger('cellos').warning(
                f'EventsExecutor not available in this rclpy ({e}): using the SingleThreadedExecutor')
            return SingleThreadedExecutor()
        return EventsExecutor()
    raise ValueError(f"unknown executor kind '{kind}' (multi | single | events)")


def spin_nodes(nodes, *, executor: str = 'multi', threads: int | None = None,
               stop: threading.Event | None = None) -> None:
    """Spin until Ctrl-C / SIGTERM / ``stop``; then stop the executor and take every node
    down (deactivate, cleanup, destroy) with nothing left spinning on their entities.
    """
    ex = make_executor(executor, threads)
    for n in nodes:
        ex.add_node(n)
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    spinner = threading.Thread(target=_spin, args=(ex, stop), daemon=False)
    spinner.start()
    try:
        # no polling: a thread of this process that wakes at normal priority can be preempted
        # holding the interpreter lock, and a real-time thread of the node then waits for it
        stop.wait()   # set by a signal handler, or by the spinner when it ends
    finally:
        stop.set()
        ex.shutdown(timeout_sec=5.0)
        spinner.join()
        for n in nodes:
            if isinstance(n, CellosNode):
                n.on_shutdown(None)
            n.destroy_node()


def _spin(executor, stop: threading.Event) -> None:
    try:
        # what Executor.spin() does; rclpy 9.1's EventsExecutor.spin() busy-loops and never
        # fires a timer, while its spin_once() works
        while not stop.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=1.0)   # shutdown() wakes it at once
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not stop.is_set():  # a callback raised: the process must not keep running deaf
            raise
        # else: rclpy races its own shutdown (guard conditions already gone): nothing to do
    finally:
        stop.set()


def main_for(node_cls, args=None) -> int:
    """Entry point body shared by every node executable."""
    # a thread waking from a sleep (the cell's cycle, the inference worker) waits for the GIL up
    # to the switch interval: 5 ms by default
    sys.setswitchinterval(0.0005)
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    try:
        node = node_cls()
    except (ParameterError, rclpy.exceptions.InvalidParameterValueException,
            rclpy.exceptions.InvalidParameterTypeException) as e:
        print(f'error: {e}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if node.autostart() and not node.bring_up():
        node.get_logger().error('autostart failed; the node stays up, unconfigured, for a lifecycle manager')
    try:
        spin_nodes([node], executor=node_cls.SPIN)
    finally:
        rclpy.try_shutdown()
    return 0
