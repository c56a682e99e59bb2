"""Lifecycle manager of a line (e.g. /line1/lifecycle_manager), in the manner of
nav2_lifecycle_manager: brings the listed managed nodes up as a whole (configure all, then
activate all) and down again. A plain node: it is the thing that manages, not managed.

Parameters: node_names (string array; relative names are taken in this node's namespace,
absolute ones as given, e.g. ['coordinator', 'cell_01/timing', '/gpu0/executor']),
autostart, transition_timeout_s, watch_period_s.
Services (std_srvs/Trigger): ~/startup, ~/shutdown (deactivate + cleanup, reverse order),
~/is_active (success: every managed node is active; message: each node's state).
Exit code: 0 after Ctrl-C / SIGTERM; 1 when the autostart bring-up failed (the launch files
shut the whole launch down on it); 2 for bad parameters.

Watching: after a startup, the manager asks each node for its state every watch_period_s. A node
that does not answer is reported missing (its process died); a node that answers unconfigured
or inactive (a respawned process comes back unconfigured) is brought up again, alone: the rest
of the line keeps running. nav2_lifecycle_manager, on a broken bond, resets every node and, with
attempt_respawn_reconnection, brings the whole set up again once the node is back; a line must
not stop all its cells because one cell's vision restarted, so only the node that came back is
re-brought. The count of re-bring-ups per node is in the manager's diagnostics and its log. A
re-bring-up that fails is retried with a backoff (2 s doubling to 60 s). After ~/shutdown the
manager leaves the nodes down until the next ~/startup.
"""
from __future__ import annotations

import sys
import threading
import time

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from cellos_common.core.params import ParameterError, ParamSpec, validate
from cellos_common.nodes.base import Boundary, set_on_signals
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, Diagnostics, DiagReport
from cellos_common.nodes.lifecycle_client import STATE_LABELS, LifecycleClient, resolve_names
from cellos_common.nodes.parameters import declare_params, read_values
from lifecycle_msgs.msg import State

PARAMS = [
    ParamSpec('node_names', [], 'managed nodes in bring-up order; relative names are taken in this '
              "node's namespace", read_only=True, item=str),
    ParamSpec('autostart', False, 'bring the managed nodes up (configure all, then activate all) at start',
              read_only=True),
    ParamSpec('transition_timeout_s', 30.0, 'bound on a whole bring-up (nodes still starting are waited for)',
              min=0.0, max=600.0, min_exclusive=True, unit='s', read_only=True),
    ParamSpec('watch_period_s', 1.0, "after a startup, how often each node's state is checked (a node back "
              'unconfigured after its process was respawned is brought up again); 0: not watched',
              min=0.0, max=60.0, unit='s', read_only=True),
]
RETRY_S = (2.0, 60.0)   # backoff of a failed re-bring-up: first, at most


class LifecycleManagerNode(Boundary, Node):
    PARAMS = PARAMS

    def __init__(self, stop: threading.Event | None = None, **kwargs):
        self._init_boundary()
        super().__init__('lifecycle_manager', **kwargs)
        self.params = validate(PARAMS, read_values(self, declare_params(self, PARAMS)))
        try:
            self.managed = resolve_names(self.params.node_names, self.get_namespace())
        except ValueError as e:
            raise ParameterError(f"parameter 'node_names': {e}") from None
        self.stop = stop or threading.Event()
        self.exit_code = 0
        self.client = LifecycleClient(self, stop=self.stop)
        # startup / shutdown / autostart one at a time; the clients' responses arrive on the
        # default group, served by another executor thread while a bring-up waits
        self._group = MutuallyExclusiveCallbackGroup()
        self._manager_services = [
            self.create_service(Trigger, '~/startup', self._on_startup, callback_group=self._group),
            self.create_service(Trigger, '~/shutdown', self._on_shutdown, callback_group=self._group),
            self.create_service(Trigger, '~/is_active', self._on_is_active, callback_group=self._group),
        ]
        self._autostart_timer = None
        self._want_active = False        # after a startup, until a shutdown
        self.rebrought = {fqn: 0 for fqn in self.managed}
        self._missing: dict[str, float] = {}          # fqn -> monotonic time it stopped answering
        self._retry: dict[str, tuple[float, float]] = {}   # fqn -> (next try, backoff)
        self._states: dict[str, int | None] = {}
        self.diagnostics = Diagnostics(self, self.get_fully_qualified_name())
        self.diagnostics.start()
        self.diagnostics.add('managed nodes', self._diag)
        self.diagnostics.add('boundary', self.boundary_report)
        self._watch_timer = (self.create_timer(self.params.watch_period_s, self._watch, callback_group=self._group)
                             if self.params.watch_period_s > 0 and self.managed else None)
        if not self.managed:
            self.get_logger().warning('node_names is empty: nothing to manage')
        else:
            self.get_logger().info(f'managing {len(self.managed)} nodes: {", ".join(self.managed)}')
        if self.params.autostart and self.managed:
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=self._group)

    # -- transitions ------------------------------------------------------------------------
    def startup(self) -> list[str]:
        log = self.get_logger()
        log.info(f'startup: configuring then activating {len(self.managed)} nodes')
        failed = self.client.bring_up(self.managed, timeout=self.params.transition_timeout_s,
                                      log=log.error)
        if self.stop.is_set():
            log.warning('startup interrupted (shutting down)')
        elif failed:
            log.error(f'startup failed for {len(failed)} of {len(self.managed)} nodes: {", ".join(failed)}')
        else:
            log.info(f'startup: all {len(self.managed)} nodes active')
        self._want_active = not self.stop.is_set()
        self._retry.clear()
        return failed

    def shutdown(self) -> list[str]:
        log = self.get_logger()
        log.info(f'shutdown: deactivating and cleaning up {len(self.managed)} nodes')
        self._want_active = False
        failed = self.client.bring_down(self.managed, timeout=5.0, cleanup=True, log=log.error)
        if failed:
            log.error(f'shutdown failed for {", ".join(failed)}')
        else:
            log.info(f'shutdown: all {len(self.managed)} nodes unconfigured')
        return failed

    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        failed = self.startup()
        if failed and not self.stop.is_set():
            self.get_logger().fatal(f'autostart failed ({", ".join(failed)}): exiting with code 1; the nodes '
                                    'that came up are left as they are')
            self.exit_code = 1
            self.stop.set()

    # -- watching -------------------------------------------------------------------------
    def _watch(self) -> None:
        if not self._want_active or self.stop.is_set():
            return
        log = self.get_logger()
        for fqn in self.managed:
            if self.stop.is_set() or not self._want_active:
                return
            state = self.client.state(fqn, timeout=1.0)
            self._states[fqn] = state
            now = time.monotonic()
            if state is None:
                if fqn not in self._missing:
                    self._missing[fqn] = now
                    log.error(f'{fqn} does not answer (its process died?): waiting for it to come back')
                continue
            if state == State.PRIMARY_STATE_ACTIVE:
                if self._missing.pop(fqn, None) is not None:
                    log.info(f'{fqn} answers again, active')
                self._retry.pop(fqn, None)
                continue
            if state not in (State.PRIMARY_STATE_UNCONFIGURED, State.PRIMARY_STATE_INACTIVE):
                continue   # finalized or in a transition: nothing to do from here (reported)
            next_try, backoff = self._retry.get(fqn, (0.0, RETRY_S[0]))
            if now < next_try:
                continue
            log.warning(f'{fqn} is {STATE_LABELS.get(state, state)} (restarted?): bringing it up again')
            failed = self.client.bring_up([fqn], timeout=self.params.transition_timeout_s, log=log.error)
            if self.stop.is_set():
                return
            if failed:
                self._retry[fqn] = (time.monotonic() + backoff, min(RETRY_S[1], 2 * backoff))
                log.error(f'{fqn}: bringing it up again failed; next try in {backoff:.0f} s')
                continue
            self.rebrought[fqn] += 1
            self._missing.pop(fqn, None)
            self._retry.pop(fqn, None)
            self._states[fqn] = State.PRIMARY_STATE_ACTIVE
            log.warning(f'{fqn} active again ({self.rebrought[fqn]} time(s) brought back up)')

    def _diag(self) -> DiagReport:
        total = sum(self.rebrought.values())
        values = {'nodes': len(self.managed), 'rebrought': total, 'watching': self._watch_timer is not None,
                  'want_active': self._want_active}
        for fqn in self.managed:
            state = self._states.get(fqn)
            values[fqn] = (STATE_LABELS.get(state, str(state)) if state is not None else
                           'no answer' if fqn in self._missing else 'not checked yet')
            if self.rebrought[fqn]:
                values[f'rebrought {fqn}'] = self.rebrought[fqn]
        if self._missing:
            return DiagReport(ERROR, f'not answering: {", ".join(sorted(self._missing))}', values)
        failing = [f for f in self._retry]
        if failing:
            return DiagReport(ERROR, f'could not bring up again: {", ".join(sorted(failing))}', values)
        if total:
            return DiagReport(WARN, f'{total} node restart(s) brought back up', values)
        return DiagReport(OK, 'managing' if self._want_active else 'nodes down (no startup yet, or shut down)',
                          values)

    # -- services ---------------------------------------------------------------------------
    def _on_startup(self, request, response):
        failed = self.startup()
        response.success = not failed and bool(self.managed)
        response.message = (f'failed: {", ".join(failed)}' if failed else
                            f'{len(self.managed)} nodes active' if self.managed else 'no nodes to manage')
        return response

    def _on_shutdown(self, request, response):
        failed = self.shutdown()
        response.success = not failed
        response.message = f'failed: {", ".join(failed)}' if failed else f'{len(self.managed)} nodes unconfigured'
        return response

    def _on_is_active(self, request, response):
        states = self.client.states(self.managed, timeout=1.0)
        response.success = bool(states) and all(s == State.PRIMARY_STATE_ACTIVE for s in states.values())
        response.message = ', '.join(f'{n}={STATE_LABELS.get(s, "no answer" if s is None else s)}'
                                     for n, s in states.items())
        return response


def main(args=None) -> int:
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    try:
        node = LifecycleManagerNode(stop=stop)
    except (ParameterError, rclpy.exceptions.InvalidParameterValueException,
            rclpy.exceptions.InvalidParameterTypeException) as e:
        print(f'error: {e}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        _spin(node, stop)
    finally:
        node.diagnostics.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


def _spin(node, stop: threading.Event) -> None:
    # always multi-threaded (not base.make_executor, whose kind an environment variable may
    # change): a bring-up blocks one thread while another serves the clients' responses
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    set_on_signals(stop)

    def spin():
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            if not stop.is_set():   # the executor itself failed: not a clean exit
                node.exit_code = node.exit_code or 1
            raise
        finally:
            stop.set()
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5.0)
        spinner.join()


if __name__ == '__main__':
    sys.exit(main())
