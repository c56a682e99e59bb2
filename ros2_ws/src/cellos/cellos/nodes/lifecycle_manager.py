"""Brings a set of lifecycle nodes up (configure all, then activate all) over their
``change_state`` services, the way nav2_lifecycle_manager does, and down again."""
from __future__ import annotations

import threading
import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState


class LifecycleClient:
    def __init__(self, node):
        self._node = node
        self._clients: dict[str, tuple] = {}

    def _pair(self, fqn: str):
        if fqn not in self._clients:
            self._clients[fqn] = (self._node.create_client(ChangeState, f'{fqn}/change_state'),
                                  self._node.create_client(GetState, f'{fqn}/get_state'))
        return self._clients[fqn]

    def _call(self, client, request, timeout: float):
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def state(self, fqn: str, timeout: float = 2.0) -> int | None:
        _, get = self._pair(fqn)
        if not get.wait_for_service(timeout_sec=timeout):
            return None
        res = self._call(get, GetState.Request(), timeout)
        return None if res is None else res.current_state.id

    def transition(self, fqn: str, transition_id: int, timeout: float = 10.0) -> bool:
        change, _ = self._pair(fqn)
        if not change.wait_for_service(timeout_sec=timeout):
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
                left = max(1.0, deadline - time.monotonic())
                if self.state(fqn, left) == want:
                    continue
                if not self.transition(fqn, tid, left):
                    log(f'lifecycle: {step} {fqn} failed (see its log)')
                    failed.append(fqn)
        return failed

    def bring_down(self, names, timeout: float = 5.0) -> None:
        for fqn in names:
            if self.state(fqn, timeout) == State.PRIMARY_STATE_ACTIVE:
                self.transition(fqn, Transition.TRANSITION_DEACTIVATE, timeout)
