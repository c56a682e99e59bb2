"""Brings a set of lifecycle nodes up (configure all, then activate all) over their
``change_state`` services, the way nav2_lifecycle_manager does, and down again.

Used by the lifecycle_manager node, the no-launch runner and the system tests. Every wait
is bounded and, when a ``stop`` event is given, ends within ~0.1 s of it being set (Ctrl-C).
"""
from __future__ import annotations

import threading
import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

_SLICE_S = 0.1

STATE_LABELS = {
    State.PRIMARY_STATE_UNKNOWN: 'unknown',
    State.PRIMARY_STATE_UNCONFIGURED: 'unconfigured',
    State.PRIMARY_STATE_INACTIVE: 'inactive',
    State.PRIMARY_STATE_ACTIVE: 'active',
    State.PRIMARY_STATE_FINALIZED: 'finalized',
}


def resolve_names(names, namespace: str) -> list[str]:
    """Fully qualified node names: a relative name is taken in ``namespace`` (as nav2 does),
    an absolute one as is. Blank entries are dropped; a duplicate is an error.
    """
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    out = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        fqn = name if name.startswith('/') else f'{ns}/{name}'
        fqn = '/' + '/'.join(p for p in fqn.split('/') if p)
        if fqn in out:
            raise ValueError(f"node '{fqn}' listed twice")
        out.append(fqn)
    return out


class LifecycleClient:
    def __init__(self, node, stop: threading.Event | None = None):
        self._node = node
        self._clients: dict[str, tuple] = {}
        self._stop = stop or threading.Event()

    def _pair(self, fqn: str):
        if fqn not in self._clients:
            self._clients[fqn] = (self._node.create_client(ChangeState, f'{fqn}/change_state'),
                                  self._node.create_client(GetState, f'{fqn}/get_state'))
        return self._clients[fqn]

    def _wait_service(self, client, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if client.wait_for_service(timeout_sec=max(0.0, min(_SLICE_S, left))):
                return True
            if left <= 0:
                return False
        return False

    def _call(self, client, request, timeout: float):
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + timeout
        while not done.wait(_SLICE_S):
            if self._stop.is_set() or time.monotonic() > deadline:
                client.remove_pending_request(future)
                return None
        return future.result()

    def state(self, fqn: str, timeout: float = 2.0) -> int | None:
        """The node's lifecycle state id, or None if it did not answer within ``timeout``.

        get_state is asked again every second: a request sent while the graph still lists a
        dead process's service (DDS forgets a killed participant only after its lease), or
        before a restarted node's server matched, is never answered.
        """
        _, get = self._pair(fqn)
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self._wait_service(get, left):
                return None
            res = self._call(get, GetState.Request(), min(1.0, left))
            if res is not None:
                return res.current_state.id
        return None

    def transition(self, fqn: str, transition_id: int, timeout: float = 10.0) -> bool:
        change, _ = self._pair(fqn)
        if not self._wait_service(change, timeout):
            return False
        req = ChangeState.Request()
        req.transition.id = transition_id
        res = self._call(change, req, timeout)
        return bool(res and res.success)

    def bring_up(self, names, timeout: float = 30.0, log=print) -> list[str]:
        """configure every node, then activate every node. Returns the nodes that failed."""
        deadline = time.monotonic() + timeout
        failed = []
        for step, want, tid in (('configure', State.PRIMARY_STATE_INACTIVE, Transition.TRANSITION_CONFIGURE),
                                ('activate', State.PRIMARY_STATE_ACTIVE, Transition.TRANSITION_ACTIVATE)):
            for fqn in names:
                if fqn in failed:
                    continue
                if self._stop.is_set():
                    failed.append(fqn)
                    continue
                left = max(1.0, deadline - time.monotonic())
                current = self.state(fqn, left)
                if current is None:
                    if self._pair(fqn)[1].service_is_ready():   # there, but it never answered
                        log(f'lifecycle: {step} {fqn} failed: its get_state went unanswered for {left:.1f} s '
                            '(the node is not spinning, or the answers do not reach this client)')
                    else:
                        log(f'lifecycle: {step} {fqn} failed: no lifecycle services (node not running?)')
                    failed.append(fqn)
                    continue
                if current == want or (want == State.PRIMARY_STATE_INACTIVE
                                       and current == State.PRIMARY_STATE_ACTIVE):
                    continue
                if not self.transition(fqn, tid, left):
                    log(f'lifecycle: {step} {fqn} failed (see its log)')
                    failed.append(fqn)
        return failed

    def bring_down(self, names, timeout: float = 5.0, cleanup: bool = False, log=print) -> list[str]:
        """deactivate every active node (and, with ``cleanup``, clean up every inactive one), in
        reverse order. Returns the nodes that failed.
        """
        failed = []
        for fqn in reversed(list(names)):
            if self._stop.is_set():
                failed.append(fqn)
                continue
            current = self.state(fqn, timeout)
            if current == State.PRIMARY_STATE_ACTIVE:
                if not self.transition(fqn, Transition.TRANSITION_DEACTIVATE, timeout):
                    log(f'lifecycle: deactivate {fqn} failed')
                    failed.append(fqn)
                    continue
                current = State.PRIMARY_STATE_INACTIVE
            if cleanup and current == State.PRIMARY_STATE_INACTIVE:
                if not self.transition(fqn, Transition.TRANSITION_CLEANUP, timeout):
                    log(f'lifecycle: cleanup {fqn} failed')
                    failed.append(fqn)
            elif current is None:
                log(f'lifecycle: {fqn} did not answer get_state')
                failed.append(fqn)
        return failed

    def states(self, names, timeout: float = 2.0) -> dict[str, int | None]:
        return {fqn: self.state(fqn, timeout) for fqn in names}
