"""A cell's own inference policy: which of its tasks' requests go to the executor now.

The arbiter is the cell's only client of the executor. It applies, in order: the cell,
deadline already past, per-task priority, the energy gate, max in flight. Everything it
forwards is tracked until exactly one result has gone back to the task: the executor's
result, or TIMEOUT at the request's deadline (or at once when the executor is lost with
the request in flight). Requests accepted while no executor is reachable wait here and
go out when it returns, or time out at their deadline.

Times here are the arbiter's monotonic clock: the node converts a task's wall-clock deadline
once, on arrival (task and arbiter share a host and its clock), so a step of the wall clock
neither expires every request nor makes a lost executor look alive.

``ResultSource`` is the trust rule for results: only the executor the arbiter talks to may
answer. Without DDS-Security this is a tripwire, not authentication (module docstring there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from cellos_common.core.gate_level import GateLevel
from cellos_inference.core.inference_types import Outcome, Priority, Status


# Which priority classes each gate level lets through.
GATE_ALLOWS = {
    GateLevel.FULL: {Priority.CRITICAL, Priority.NORMAL, Priority.BACKGROUND},
    GateLevel.ECO: {Priority.CRITICAL, Priority.NORMAL},
    GateLevel.CRITICAL_ONLY: {Priority.CRITICAL},
    GateLevel.HALT: set(),
}


@dataclass
class EnergyGate:
    """The cell's energy gate as the arbiter applies it: ``set(level, reason)`` from its GateState.

    HALT still lets the cell's safety-critical tasks through (critical class and named in
    ``safety_tasks``). Any callable ``(priority, task) -> (allowed, reason)`` can replace it.
    """

    level: GateLevel = GateLevel.FULL
    reason: str = ''
    safety_tasks: frozenset = frozenset({'inspection'})

    def set(self, level: int, reason: str = '') -> None:
        """ValueError for a level that is not a GateLevel (the gate keeps its level)."""
        try:
            level = GateLevel(level)
        except ValueError:
            raise ValueError(f'gate level {level} is not one of {[int(g) for g in GateLevel]}') from None
        self.level, self.reason = level, reason[:256]

    def __call__(self, priority: Priority, task: str) -> tuple[bool, str]:
        if priority in GATE_ALLOWS[self.level]:
            return True, ''
        if self.level == GateLevel.HALT and priority == Priority.CRITICAL and task in self.safety_tasks:
            return True, ''
        return False, (f'energy gate {self.level.name}' + (f' ({self.reason})' if self.reason else '')
                       + f' does not allow {priority.name.lower()} task {task!r} now')


@dataclass
class ArbiterConfig:
    cell_ns: str                                         # 'line1/cell_01'
    max_in_flight: int = 16
    task_priority: dict = field(default_factory=dict)   # task -> Priority (overrides the request)
    executor_timeout_s: float = 1.0                      # no executor heartbeat for this long: lost


@dataclass
class Pending:
    forward_id: int
    request_id: int
    task: str
    model: str
    priority: Priority
    deadline: float
    payload: Any = None          # what the shell forwards (the request message)
    forwarded: bool = False
    slot: int | None = None      # its shared-memory slot while forwarded that way


@dataclass
class Admission:
    pending: Pending | None      # accepted (track it, forward when possible)
    refusal: Outcome | None      # or answered at once


class ArbiterPolicy:
    def __init__(self, config: ArbiterConfig,
                 gate: Callable[[Priority, str], tuple[bool, str]] | None = None):
        self.config = config
        self.gate = gate if gate is not None else EnergyGate()
        self.pending: dict[int, Pending] = {}
        self._next_id = 0
        self._executor_seen: float | None = None
        self.counts: dict[str, int] = {}

    # -- executor presence ------------------------------------------------------------
    def executor_seen(self, now: float) -> None:
        self._executor_seen = now

    def executor_alive(self, now: float) -> bool:
        return self._executor_seen is not None and now - self._executor_seen <= self.config.executor_timeout_s

    # -- requests from the cell's tasks -----------------------------------------------------
    def count(self, status: int) -> None:
        try:
            name = Status(status).name
        except ValueError:
            name = f'status {status}'
        self.counts[name] = self.counts.get(name, 0) + 1

    def _refuse(self, request_id, task, model, status, reason) -> Admission:
        self.count(status)
        return Admission(None, Outcome(request_id, self.config.cell_ns, task, model, Status(status), reason))

    def submit(self, *, request_id: int, cell_ns: str, task: str, model: str, priority: int,
               deadline: float, now: float, payload: Any = None) -> Admission:
        if cell_ns and cell_ns != self.config.cell_ns:
            return self._refuse(request_id, task, model, Status.REJECTED,
                                f'cell {cell_ns!r} does not match this cell ({self.config.cell_ns!r})')
        if deadline <= now:
            return self._refuse(request_id, task, model, Status.DEADLINE,
                                f'deadline passed {1e3 * (now - deadline):.1f} ms before the arbiter got it')
        try:
            prio = Priority(self.config.task_priority.get(task, priority))
        except ValueError:
            return self._refuse(request_id, task, model, Status.REJECTED, f'unknown priority {priority}')
        allowed, why = self.gate(prio, task)
        if not allowed:
            return self._refuse(request_id, task, model, Status.GATED, why)
        if len(self.pending) >= self.config.max_in_flight:
            return self._refuse(request_id, task, model, Status.REJECTED,
                                f'cell has {len(self.pending)} requests in flight '
                                f'(max_in_flight {self.config.max_in_flight})')
        self._next_id += 1
        p = Pending(self._next_id, request_id, task, model, prio, deadline, payload)
        self.pending[p.forward_id] = p
        return Admission(p, None)

    def to_forward(self, now: float, can_send: bool) -> list[Pending]:
        """Accepted requests that should go to the executor now (marked forwarded)."""
        if not (can_send and self.executor_alive(now)):
            return []
        out = [p for p in self.pending.values() if not p.forwarded]
        for p in out:
            p.forwarded = True
        return out

    def on_result(self, forward_id: int) -> Pending | None:
        """The pending request a result answers; None when it was already answered."""
        return self.pending.pop(forward_id, None)

    def expire(self, now: float, lead_s: float = 0.0) -> list[tuple[Pending, str]]:
        """Requests to answer TIMEOUT now: deadline within ``lead_s`` (the caller's tick, so
        the answer leaves no later than the deadline), or in flight to a lost executor.
        """
        alive = self.executor_alive(now)
        out = []
        for fid, p in list(self.pending.items()):
            if p.deadline - lead_s <= now:
                why = ('executor did not answer before the deadline' if p.forwarded else
                       'no executor reachable before the deadline')
            elif p.forwarded and not alive:
                why = (f'executor lost (no status for > {self.config.executor_timeout_s:.1f} s) '
                       'with this request in flight')
            else:
                continue
            del self.pending[fid]
            out.append((p, why))
        return out

    def next_check(self, now: float, lead_s: float, idle_s: float) -> float:
        """When ``expire`` or ``to_forward`` may next have something to do (monotonic s), ``idle_s``
        from now at the latest: a pending deadline (less ``lead_s``), the executor's status
        falling due with requests in flight, or ``lead_s`` from now while requests are held.
        """
        at = now + idle_s
        for p in self.pending.values():
            if not p.forwarded:
                return now + lead_s
            at = min(at, p.deadline - lead_s)
        if self.pending and self._executor_seen is not None:
            at = min(at, self._executor_seen + self.config.executor_timeout_s)
        return max(at, now + lead_s)

    def outcome(self, p: Pending, status: Status, reason: str) -> Outcome:
        self.count(status)
        return Outcome(p.request_id, self.config.cell_ns, p.task, p.model, Status(status), reason)


class ResultSource:
    """Results are accepted only from the executor's own publisher.

    Bound at first contact: the first result's publisher GID (from the message info) is
    accepted only if the graph shows that GID as a publisher of the executor's node (its
    name from the status topic); it is then bound. A result from any other GID is refused
    and counted. When the bound publisher leaves the graph (the executor restarted), the next
    executor publisher is bound the same way.

    Without DDS-Security this is a tripwire, not authentication: a process on the domain can
    name its node like the executor and publish. It catches a stray or careless publisher,
    and a forger must impersonate the executor's node name while the executor is down.
    With SROS2 (docs/trust_model.md) the permissions stop the forger.
    """

    def __init__(self):
        self.bound: bytes | None = None
        self.refused = 0

    def accept(self, gid: bytes, executor_gids) -> tuple[bool, str]:
        """``executor_gids()``: the GIDs the graph shows for the executor's publishers now."""
        if gid and gid == self.bound:
            return True, ''
        gids = executor_gids()
        if gid and gid in gids and (self.bound is None or self.bound not in gids):
            self.bound = gid
            return True, 'bound'
        self.refused += 1
        if not gid:
            return False, 'no publisher GID in the message info'
        return False, ('publisher is not the executor' if gid not in gids else
                       'another executor publisher is bound')
