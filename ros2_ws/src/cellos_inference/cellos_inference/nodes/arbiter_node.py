"""A cell's inference arbiter (namespace /<line>/<cell>, node name arbiter).

Topics (relative to the cell namespace):
  arbiter/request     InferenceRequest  in, from the cell's tasks (vision, ...)
  arbiter/result      InferenceResult   out, one per request, same request_id and task
  inference/request   InferenceRequest  out, to the executor (request_id rewritten per cell)
  inference/result    InferenceResult   in, from the executor
  <executor_status_topic> ExecutorStatus in: heartbeat; no status for executor_timeout_s = lost
  <gate_topic>        GateState          in, when use_energy_gate (the cell's energy gate)
The cell is the namespace: line_id/cell_id of every request must name it, and the executor
knows this arbiter by it.
"""
from __future__ import annotations

from cellos_inference.core.arbiter_policy import ArbiterConfig, ArbiterPolicy, EnergyGate, Pending
from cellos_inference.core.inference_types import Priority, Status
from cellos_common.core.cell_names import cell_ns, split_cell_ns
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.convert_time import time_to_s
from cellos_inference.nodes.convert_inference import outcome_to_result
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_interfaces.msg import ExecutorStatus, GateState, InferenceRequest, InferenceResult


class ArbiterNode(CellosNode):
    SPIN = 'single'    # no callback blocks; the single-threaded executor halves its CPU per request
    PARAMS = [
        ParamSpec('executor_status_topic', '/gpu0/executor/status', "the executor's status topic",
                  read_only=True),
        ParamSpec('executor_timeout_s', 1.0, 'no executor status for this long: executor lost, '
                  'requests in flight answered TIMEOUT', min=0.1, max=60.0, unit='s'),
        ParamSpec('max_in_flight', 16, 'requests of this cell in flight before REJECTED', min=1,
                  max=10000),
        ParamSpec('tasks', ['inspection'], "tasks whose priority class this arbiter sets (task_priorities)",
                  read_only=True),
        ParamSpec('task_priorities', 'normal', "the task's priority class, in place of the one its requests "
                  'carry', keys='tasks', choices=('critical', 'normal', 'background'),
                  key_defaults=(('inspection', 'critical'),)),
        ParamSpec('use_energy_gate', False, "follow the cell's energy gate (GateState)", read_only=True),
        ParamSpec('gate_topic', 'energy/gate', 'GateState topic (relative: in the cell namespace)',
                  read_only=True),
        ParamSpec('safety_tasks', ['inspection'], 'critical tasks that run even when the gate halts',
                  read_only=True),
        ParamSpec('tick_s', 0.01, 'timeout / forward check period; a timeout leaves <= 1 tick early',
                  min=0.001, max=1.0, unit='s'),
    ]

    def __init__(self, **kwargs):
        super().__init__('arbiter', **kwargs)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def configure(self) -> None:
        p = self.params
        self.line_id, self.cell_id = split_cell_ns(self.get_namespace())
        if not self.line_id:
            raise ParameterError(f'an arbiter runs in its cell\'s namespace /<line>/<cell>, not {self.get_namespace()}')
        self.cell_ns = cell_ns(self.line_id, self.cell_id)
        self.gate = EnergyGate(safety_tasks=frozenset(p.safety_tasks))
        self.policy = ArbiterPolicy(ArbiterConfig(
            self.cell_ns, p.max_in_flight, {task: Priority[c.upper()] for task, c in p.task_priorities.items()},
            p.executor_timeout_s), self.gate)
        self._task_results = self.create_publisher(InferenceResult, 'arbiter/result', qos.inference())
        self._to_executor = self.create_publisher(InferenceRequest, 'inference/request', qos.inference())
        self._subs = [
            self.create_subscription(InferenceRequest, 'arbiter/request', self._on_task_request,
                                     qos.inference()),
            self.create_subscription(InferenceResult, 'inference/result', self._on_executor_result,
                                     qos.inference()),
            self.create_subscription(ExecutorStatus, p.executor_status_topic, self._on_status,
                                     qos.status())]
        if p.use_energy_gate:
            self._subs.append(self.create_subscription(GateState, p.gate_topic, self._on_gate,
                                                       qos.latched_state()))
        self._arbiter_timers = [self.create_timer(p.tick_s, self._tick)]
        self.diagnostics.add('arbiter', self._diag)
        self.get_logger().info(f'cell {self.cell_ns}: tasks -> {self.resolve_topic_name("arbiter/request")}'
                               f', executor via {self.resolve_topic_name("inference/request")}')

    def deactivate(self) -> None:
        # every request still pending gets its one answer before the node stops
        for p in list(self.policy.pending.values()):
            self.policy.pending.pop(p.forward_id, None)
            self._answer(self.policy.outcome(p, Status.SHUTTING_DOWN, 'arbiter is shutting down'))

    def cleanup(self) -> None:
        for t in self._arbiter_timers:
            self.destroy_timer(t)
        for s in self._subs:
            self.destroy_subscription(s)
        self.destroy_publisher(self._task_results)
        self.destroy_publisher(self._to_executor)

    # -- task side ------------------------------------------------------------------------
    def _answer(self, outcome) -> None:
        self._task_results.publish(outcome_to_result(outcome, self.get_clock().now().to_msg()))

    def _on_task_request(self, msg: InferenceRequest) -> None:
        now = self._now()
        if not self.active:
            return self._answer(self.policy.outcome(
                Pending(0, msg.request_id, msg.task, msg.model, Priority.NORMAL, 0.0),
                Status.SHUTTING_DOWN, 'arbiter is not active'))
        adm = self.policy.submit(request_id=msg.request_id, cell_ns=cell_ns(msg.line_id, msg.cell_id), task=msg.task,
                                 model=msg.model, priority=msg.priority,
                                 deadline=time_to_s(msg.deadline), now=now, payload=msg)
        if adm.refusal is not None:
            return self._answer(adm.refusal)
        self._forward(now)

    def _forward(self, now: float) -> None:
        can_send = self._to_executor.get_subscription_count() > 0
        for p in self.policy.to_forward(now, can_send):
            msg = p.payload
            msg.request_id, msg.priority = p.forward_id, int(p.priority)
            msg.line_id, msg.cell_id = self.line_id, self.cell_id
            p.payload = None   # the tensors are the executor's now; keep no copy
            self._to_executor.publish(msg)

    def _tick(self) -> None:
        now = self._now()
        for p, why in self.policy.expire(now, lead_s=self.params.tick_s):
            self._answer(self.policy.outcome(p, Status.TIMEOUT, why))
        self._forward(now)

    # -- executor side --------------------------------------------------------------------
    def _on_executor_result(self, msg: InferenceResult) -> None:
        p = self.policy.on_result(msg.request_id)
        if p is None:
            self.get_logger().debug(f'late executor result #{msg.request_id} dropped (already answered)')
            return
        self.policy.count(msg.status)
        msg.request_id, msg.task = p.request_id, p.task
        msg.line_id, msg.cell_id = self.line_id, self.cell_id
        self._task_results.publish(msg)

    def _on_status(self, msg: ExecutorStatus) -> None:
        was_alive = self.policy.executor_alive(self._now())
        self.policy.executor_seen(self._now())
        if not was_alive:
            self.get_logger().info(f'executor {msg.executor_id} reachable ({msg.backend})')

    def _on_gate(self, msg: GateState) -> None:
        self.gate.set(msg.level, msg.reason)

    def _diag(self) -> DiagReport:
        alive = self.policy.executor_alive(self._now())
        values = {'cell': self.cell_ns, 'executor': 'reachable' if alive else 'lost',
                  'pending': len(self.policy.pending), 'gate': self.gate.level.name}
        values.update({f'status {k}': v for k, v in sorted(self.policy.counts.items())})
        return DiagReport(OK if alive else WARN, 'executor reachable' if alive else 'executor lost', values)


def main(args=None):
    return main_for(ArbiterNode, args)
