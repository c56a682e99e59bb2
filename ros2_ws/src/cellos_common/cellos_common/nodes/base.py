"""Lifecycle base of every cellos node and the one ``main`` they share.

A node subclass lists ``PARAMS`` (cellos_common.core.params.ParamSpec) and overrides the
``configure / activate / deactivate / cleanup`` hooks; this class declares the parameters
with descriptors and ranges, validates them in one place (start-up and ``ros2 param set``),
and turns hook exceptions into lifecycle FAILURE with a clear log line.

Every callback a node registers (subscription, timer, service) runs behind a boundary
(``Boundary``): an exception that escapes it is caught, counted, logged (throttled) and shown as
ERROR in the node's diagnostics ('boundary'), and the node goes on; a service answers with its
success/accepted field false and the error as its message/reason. Nodes count the messages they
refuse with ``reject``. A worker thread is started through ``supervise`` (a SupervisedThread).
A process whose spinning or whose worker fails beyond repair exits non-zero (``main_for``), so
its supervisor restarts it; only Ctrl-C / SIGTERM ends it with 0.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Callable, Sequence

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.logging import get_logger

from cellos_common.core.boundary import Tally, clip
from cellos_common.core.params import ParameterError, ParamSet, ParamSpec, validate
from cellos_common.core.supervised_thread import SupervisedThread
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, Diagnostics, DiagReport
from cellos_common.nodes.parameters import declare_params, read_values

_AUTOSTART = ParamSpec('autostart', False,
                       'configure and activate on start, without a lifecycle manager')


class _ProcessExit:
    """The exit a process owes: set by a node whose worker cannot go on, read by spin_nodes."""

    def __init__(self):
        self.event = threading.Event()
        self.stopping = threading.Event()   # on the way out: a thread ending badly now changes nothing
        self.code = 0
        self.reason = ''
        self.waiters: list[Wakeup] = []   # spin_nodes' wake-ups: woken, never polled

    def request(self, code: int, reason: str) -> None:
        if not self.event.is_set():
            self.code, self.reason = code, reason
            self.event.set()
            for w in list(self.waiters):
                w.poke()


_process_exit = _ProcessExit()


class Wakeup:
    """What wakes a process's main thread, safe to poke from a signal handler: a pipe, no lock.

    A handler that calls Event.set() can run inside another Event.set() on the same thread (a
    second SIGTERM, or Ctrl-C reaching the whole process group after the runner's own signal) and
    deadlocks on the event's lock.
    """

    def __init__(self):
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def poke(self, *_) -> None:
        try:
            os.write(self._w, b'\0')
        except OSError:   # a full pipe is poked already; a closed one has nobody to wake
            pass

    def wait(self) -> None:
        os.read(self._r, 4096)

    def on_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.poke)


def set_on_signals(event: threading.Event) -> None:
    """SIGINT / SIGTERM set ``event`` from a thread of their own, never from the handler (see Wakeup)."""
    wake = Wakeup()
    wake.on_signals()

    def relay():
        wake.wait()
        event.set()
    threading.Thread(target=relay, name='signals', daemon=True).start()


def request_exit(reason: str, code: int = 1) -> None:
    """Make this process stop and exit with ``code`` (a node that cannot go on: its supervisor
    restarts the process). Takes effect under spin_nodes (main_for, the runner's processes).
    """
    get_logger('cellos').fatal(f'exiting with code {code}: {reason}')
    _process_exit.request(code, reason)


def watch_threads() -> None:
    """A thread that dies of an exception nobody caught (not a SupervisedThread) makes the
    process exit with code 1: a node missing a worker must not go on as if it had it.
    """
    if getattr(threading.excepthook, 'cellos', False):
        return
    previous = threading.excepthook

    def thread_died(args):
        previous(args)
        if not _process_exit.stopping.is_set():
            request_exit(f'thread {args.thread.name if args.thread else "?"} died: '
                         f'{args.exc_type.__name__}: {args.exc_value}')
    thread_died.cellos = True
    threading.excepthook = thread_died


def _response_for_error(srv_type, error: str):
    """The response a service handler that raised gives: not done, and why."""
    resp = srv_type.Response()
    for flag in ('success', 'accepted'):
        if hasattr(resp, flag):
            setattr(resp, flag, False)
    for text in ('message', 'reason'):
        if hasattr(resp, text):
            setattr(resp, text, error)
    return resp


class Boundary:
    """Mixin for rclpy nodes: every subscription, timer and service callback runs behind a
    catch-all that counts what escapes (``tally``), logs it throttled and lets the node go on.
    """

    def _init_boundary(self) -> None:
        # before Node.__init__: rclpy creates the parameter services through create_service
        if not hasattr(self, 'tally'):
            self.tally = Tally()
            self._supervised: list[SupervisedThread] = []

    def _guarded(self, kind: str, fn: Callable, error_result=None):
        if fn is None:
            return fn

        @functools.wraps(fn)   # keeps the signature rclpy inspects (message info, timer info)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # the boundary: nothing escapes into the executor
                self.fault(kind, e)
                return error_result(e) if error_result else None
        return run

    def create_subscription(self, msg_type, topic, callback, *args, **kwargs):
        self._init_boundary()
        return super().create_subscription(msg_type, topic, self._guarded(f'topic {topic}', callback),
                                           *args, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        self._init_boundary()
        name = getattr(callback, '__name__', 'callback')
        return super().create_timer(timer_period_sec, self._guarded(f'timer {name}', callback), *args, **kwargs)

    def create_service(self, srv_type, srv_name, callback, *args, **kwargs):
        self._init_boundary()
        guarded = self._guarded(f'service {srv_name}', callback, lambda e: _response_for_error(
            srv_type, clip(f'internal error: {type(e).__name__}: {e}')))
        return super().create_service(srv_type, srv_name, guarded, *args, **kwargs)

    def fault(self, kind: str, error: BaseException | str) -> None:
        """An exception caught at a boundary: counted, ERROR in diagnostics, logged (throttled)."""
        line = self.tally.fault(kind, error)
        if line is not None:
            self.get_logger().error(line)

    def reject(self, kind: str, reason: str) -> None:
        """A refused input (a bad message, a bad call): counted, logged (throttled)."""
        line = self.tally.reject(kind, reason)
        if line is not None:
            self.get_logger().warning(line)

    def supervise(self, name: str, target: Callable[[threading.Event], None], *, restart: bool = True,
                  max_restarts: int = 3, window_s: float = 60.0) -> SupervisedThread:
        """A worker thread of this node (not started): its death is logged and counted, it is
        restarted (up to ``max_restarts`` in ``window_s``), and beyond that the process exits
        with code 1. Shown in the node's 'boundary' diagnostics.
        """
        self._init_boundary()

        def died(thread_name, error, restarting):
            self.fault(f'thread {thread_name}', error)
            self.get_logger().error(f'{thread_name} thread died: {error}; '
                                    + ('restarting it' if restarting else 'not restarted'))

        def given_up(thread_name, reason):
            request_exit(f'{self.get_fully_qualified_name()}: {thread_name} thread {reason}')
        worker = SupervisedThread(name, target, restart=restart, max_restarts=max_restarts,
                                  window_s=window_s, on_death=died, on_fatal=given_up)
        self._supervised.append(worker)
        return worker

    def boundary_report(self) -> DiagReport:
        """ERROR after a recent caught fault or a worker death, WARN after recent refused inputs."""
        t = self.tally
        values = {'rejected': t.rejected, 'faults': t.faults}
        values.update({f'rejected {k}': n for k, n in sorted(t.rejected_by_kind().items())})
        values.update({f'faults {k}': n for k, n in sorted(t.faults_by_kind().items())})
        sick = []
        for w in self._supervised:
            healthy, text = w.health(t.recent_s)
            values[f'thread {w.name}'] = text
            if not healthy:
                sick.append(text)
        fault, rejected = t.last(faults=True), t.last(faults=False)
        if sick:
            return DiagReport(ERROR, '; '.join(sick), values)
        if fault is not None and fault[2] <= t.recent_s:
            return DiagReport(ERROR, f'{t.faults} fault(s) caught; last {fault[2]:.0f} s ago in {fault[0]}: '
                                     f'{fault[1]}', values)
        if rejected is not None and rejected[2] <= t.recent_s:
            return DiagReport(WARN, f'{t.rejected} input(s) refused; last in {rejected[0]}: {rejected[1]}', values)
        return DiagReport(OK, f'{t.rejected} input(s) refused, {t.faults} fault(s) caught', values)


class CellosNode(Boundary, LifecycleNode):
    PARAMS: Sequence[ParamSpec] = ()
    # rclpy executor kind its own process spins it with (make_executor): 'multi' where a
    # callback may block, 'single' where none does (less Python per message)
    SPIN = 'multi'

    def __init__(self, name: str, **kwargs):
        self._init_boundary()
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
        try:
            return self._set_own_parameters(own)
        except Exception as e:  # a bug in a check must refuse the change, not raise into rclpy
            self.fault('parameters', e)
            return SetParametersResult(successful=False, reason=f'internal error: {type(e).__name__}: {e}')

    def _set_own_parameters(self, own) -> SetParametersResult:
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
            self.tally.fault(what, e)
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
            self.diagnostics.add('boundary', self.boundary_report)
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
        for worker in self._supervised:   # a worker the node forgot to stop does not outlive it
            if not worker.stop(timeout=2.0):
                self.get_logger().error(f'{worker.name} thread did not stop in 2 s')
        self._supervised.clear()
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
    events: rclpy's EventsExecutor, the lowest CPU per message (0.19 ms a wake-up here against
    0.45 ms single), but rclpy 9.1's does not pass the message info a two-argument callback takes
    (the arbiter's publisher check): not for the arbiter.
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
               wake: Wakeup | None = None) -> int:
    """Spin until Ctrl-C / SIGTERM / ``stop``; then stop the executor and take every node
    down (deactivate, cleanup, destroy) with nothing left spinning on their entities.

    Returns the process's exit code: 0 when asked to stop; 1 when the executor died, a thread
    died of an exception nobody caught, or a node asked for it (request_exit).
    """
    ex = make_executor(executor, threads)
    for n in nodes:
        ex.add_node(n)
    wake = wake or Wakeup()   # main_for's has a byte in it if a signal came during the bring-up
    wake.on_signals()
    stop = threading.Event()
    watch_threads()
    spinner = threading.Thread(target=_spin, args=(ex, stop, wake), name='spin', daemon=False)
    spinner.start()
    code = 0   # stopped as asked
    try:
        # no polling: a thread of this process that wakes at normal priority can be preempted
        # holding the interpreter lock, and a real-time thread of the node then waits for it
        _process_exit.waiters.append(wake)
        if _process_exit.event.is_set():
            wake.poke()
        wake.wait()   # poked by a signal handler, by the spinner when it ends, or by request_exit
    finally:
        _process_exit.stopping.set()
        if wake in _process_exit.waiters:
            _process_exit.waiters.remove(wake)
        stop.set()
        ex.shutdown(timeout_sec=5.0)
        spinner.join()
        if _process_exit.event.is_set():
            code = _process_exit.code
        for n in nodes:
            if isinstance(n, CellosNode):
                n.on_shutdown(None)
            n.destroy_node()
    return code


def _spin(executor, stop: threading.Event, wake: Wakeup) -> None:
    try:
        # what Executor.spin() does; rclpy 9.1's EventsExecutor.spin() busy-loops and never
        # fires a timer, while its spin_once() works
        while not stop.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=1.0)   # shutdown() wakes it at once
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not stop.is_set():  # the executor itself failed: the process must not keep running deaf
            raise
        # else: rclpy races its own shutdown (guard conditions already gone): nothing to do
    finally:
        if not stop.is_set() and not _process_exit.event.is_set():
            # the executor returned by itself (its context shut down): not a requested stop
            _process_exit.request(1, 'the executor stopped spinning')
        stop.set()
        wake.poke()


def main_for(node_cls, args=None) -> int:
    """Entry point body shared by every node executable."""
    # a thread waking from a sleep (the cell's cycle, the inference worker) waits for the GIL up
    # to the switch interval: 5 ms by default
    sys.setswitchinterval(0.0005)
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    # Ctrl-C during the autostart bring-up, or a thread dying there, is seen by spin_nodes
    wake = Wakeup()
    wake.on_signals()
    watch_threads()
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
        code = spin_nodes([node], executor=node_cls.SPIN, wake=wake)
    finally:
        rclpy.try_shutdown()
    return code
