"""A cell's inference arbiter (namespace /<line>/<cell>, node name arbiter).

Topics (relative to the cell namespace):
  arbiter/request     InferenceRequest  in, from the cell's tasks (vision, ...)
  arbiter/result      InferenceResult   out, one per request, same request_id and task
  inference/request   InferenceRequest  out, to the executor (request_id rewritten per cell)
  inference/result    InferenceResult   in, from the executor (only from its publisher: ResultSource)
  <executor_status_topic> ExecutorStatus in: heartbeat (only from the executor's node); no status
                      for executor_timeout_s = lost; its model list is what the arbiter checks
                      requests against before they travel
  <gate_topic>        GateState          in, when use_energy_gate (the cell's energy gate)
The cell is the namespace: line_id/cell_id of every request must name it, and the executor
knows this arbiter by it.

Transport to the executor: shared memory where the executor is on this host and accepts the
cell's region (core.shm_transport; registered with <executor>/register_shm at each new executor
instance), else inline. A request that does not fit a slot, or finds no free slot, goes inline.
"""
from __future__ import annotations

import time

from cellos_common.core.cell_names import cell_ns, split_cell_ns
from rclpy.clock import Clock, ClockType

from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.convert_time import s_to_time, time_to_s
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_inference.core.arbiter_policy import (ArbiterConfig, ArbiterPolicy, EnergyGate, Pending,
                                                  ResultSource)
from cellos_inference.core.inference_types import Priority, Status
from cellos_inference.core.model_aliases import ROLE_SEP
from cellos_inference.core.shm_transport import ClientRegion, RegionError, boot_id, supported as shm_supported
from cellos_inference.nodes.convert_inference import (MAX_BUDGET_S, MAX_ID, MAX_NAME, check_request_against,
                                                      check_result, outcome_to_result, ref_to_tensor, request_arrays,
                                                      request_bytes, result_refs, result_with_inline_outputs,
                                                      status_models)
from cellos_interfaces.msg import ExecutorStatus, GateState, InferenceRequest, InferenceResult
from cellos_interfaces.srv import RegisterShm

# timers on the monotonic clock: a wall-clock step neither stalls nor bursts them
STEADY = Clock(clock_type=ClockType.STEADY_TIME)
REGISTER_RETRY_S = 30.0
IDLE_CHECK_S = 0.25   # the tick with nothing pending: region registration, held requests


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
        ParamSpec('tick_s', 0.01, 'timeout resolution: the arbiter wakes at each pending deadline less this (a '
                  'timeout leaves at most this early), and this often while requests wait for the executor',
                  min=0.001, max=1.0, unit='s'),
        ParamSpec('transport', 'auto', 'to the executor: auto (shared memory where the executor is on this '
                  'host, else inline), shm (same, and say so when it cannot), inline',
                  choices=('auto', 'shm', 'inline'), read_only=True),
        ParamSpec('shm_slot_kb', 1024, 'bytes of one shared-memory slot (inputs + outputs of one request); '
                  'a request that does not fit goes inline', min=4, max=1 << 20, unit='kB', read_only=True),
        ParamSpec('shm_slots', 0, 'slots of the region (requests in flight through shared memory); 0: '
                  'max_in_flight', min=0, max=4096, read_only=True),
    ]

    def __init__(self, **kwargs):
        super().__init__('arbiter', **kwargs)

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
        status_topic = p.executor_status_topic
        self._executor_node = status_topic.rsplit('/', 1)[0] if status_topic.endswith('/status') else ''
        self._results_from = ResultSource()
        self._status_from = ResultSource()
        self._models: dict = {}
        self._max_request_bytes = 0
        self._instance = ''
        self.counts: dict[str, int] = {}
        self.region: ClientRegion | None = None
        self._region_note = 'inline (transport parameter)' if p.transport == 'inline' else 'not registered yet'
        if p.transport != 'inline':
            ok, why = shm_supported()
            if ok:
                try:
                    self.region = ClientRegion(self.cell_ns, p.shm_slots or p.max_in_flight, p.shm_slot_kb * 1024)
                except (RegionError, OSError) as e:
                    ok, why = False, str(e)
            if not ok:
                self._region_note = f'inline: {why}'
                (self.get_logger().warning if p.transport == 'shm' else self.get_logger().info)(
                    f'shared-memory transport not available: {why}')
        self._register_client = None
        self._registering, self._register_after, self._late_slots = False, 0.0, {}
        if self.region is not None and self._executor_node:
            self._register_client = self.create_client(RegisterShm, f'{self._executor_node}/register_shm')
        self._task_results = self.create_publisher(InferenceResult, 'arbiter/result', qos.inference())
        self._to_executor = self.create_publisher(InferenceRequest, 'inference/request', qos.inference())
        self._result_topic = self.resolve_topic_name('inference/result')
        self._subs = [
            self.create_subscription(InferenceRequest, 'arbiter/request', self._on_task_request,
                                     qos.inference()),
            self.create_subscription(InferenceResult, 'inference/result', self._on_executor_result,
                                     qos.inference()),
            self.create_subscription(ExecutorStatus, status_topic, self._on_status, qos.status())]
        if p.use_energy_gate:
            self._subs.append(self.create_subscription(GateState, p.gate_topic, self._on_gate,
                                                       qos.latched_state()))
        # no polling: the tick is armed for the next thing due (core.arbiter_policy.next_check), so a
        # line's cells cost no CPU between requests
        self._tick_timer = self.create_timer(IDLE_CHECK_S, self._tick, clock=STEADY)
        self._check_at = time.monotonic() + IDLE_CHECK_S
        self._arbiter_timers = [self._tick_timer]
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
        if self.region is not None:
            if self.region.handle and self._register_client is not None and self._register_client.service_is_ready():
                self._register_client.call_async(RegisterShm.Request(
                    line_id=self.line_id, cell_id=self.cell_id, release=True, handle=self.region.handle))
            self.region.close()    # the executor keeps its own mapping until it lets go
            self.region = None
        if self._register_client is not None:
            self.destroy_client(self._register_client)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- task side ------------------------------------------------------------------------
    def _answer(self, outcome) -> None:
        self._task_results.publish(outcome_to_result(outcome, self.get_clock().now().to_msg()))

    def _refuse(self, msg: InferenceRequest, status: Status, reason: str) -> None:
        self._count(f'refused here ({status.name})')
        self.reject(f'request ({status.name})', f'#{msg.request_id} ({msg.task[:MAX_ID]!r}): {reason}')
        self._answer(self.policy.outcome(
            Pending(0, msg.request_id, msg.task[:MAX_ID], msg.model[:MAX_NAME], Priority.NORMAL, 0.0),
            status, reason))

    def _on_task_request(self, msg: InferenceRequest) -> None:
        now = time.monotonic()
        if not self.active:
            return self._refuse(msg, Status.SHUTTING_DOWN, 'arbiter is not active')
        why = self._check_locally(msg)
        if why is not None:
            return self._refuse(msg, *why)
        # task and arbiter share this host's clock: the deadline becomes monotonic once, here, capped
        # as the executor caps it (a deadline years ahead would not fit the forwarded message's Time)
        deadline = now + min(time_to_s(msg.deadline) - time.time(), MAX_BUDGET_S)
        adm = self.policy.submit(request_id=msg.request_id, cell_ns=cell_ns(msg.line_id, msg.cell_id), task=msg.task,
                                 model=msg.model, priority=msg.priority, deadline=deadline, now=now, payload=msg)
        if adm.refusal is not None:
            return self._answer(adm.refusal)
        self._forward(now)
        self._arm(now, self.policy.next_check(now, self.params.tick_s, IDLE_CHECK_S))

    def _check_locally(self, msg: InferenceRequest):
        """(status, reason) for what the executor would refuse, found before anything travels."""
        if len(msg.task) > MAX_ID or len(msg.model) > MAX_NAME or len(msg.line_id) > MAX_ID \
                or len(msg.cell_id) > MAX_ID:
            return Status.REJECTED, 'task, model, line_id or cell_id longer than the limits'
        size = request_bytes(msg)
        if self._max_request_bytes and size > self._max_request_bytes:
            return Status.BAD_SIZE, (f'{size} tensor bytes: the executor accepts at most '
                                     f'{self._max_request_bytes} per request')
        if any(t.shm_size for t in msg.inputs):
            return Status.REJECTED, 'a task sends its tensors inline; shared memory is between arbiter and executor'
        if self._models and ROLE_SEP not in msg.model:   # a role (inspection@serving): the executor resolves it
            info = self._models.get(msg.model)
            if info is None and not (len(msg.model) >= 8 and any(k.startswith(msg.model.lower())
                                                                 for k in self._models if len(k) == 64)):
                names = sorted({m.name for m in self._models.values()})
                return Status.UNKNOWN_MODEL, f'no model {msg.model!r} on the executor (loaded: {", ".join(names)})'
            if info is not None:
                refusal = check_request_against(msg, info)
                if refusal is not None:
                    return refusal.status, refusal.reason
        return None

    def _forward(self, now: float) -> None:
        can_send = self._to_executor.get_subscription_count() > 0
        for p in self.policy.to_forward(now, can_send):
            msg = p.payload
            msg.request_id, msg.priority = p.forward_id, int(p.priority)
            msg.line_id, msg.cell_id = self.line_id, self.cell_id
            wall = time.time()
            msg.header.stamp = s_to_time(wall)
            msg.deadline = s_to_time(wall + max(0.0, p.deadline - now))
            self._to_shared_memory(p, msg)
            p.payload = None   # the tensors are the executor's now; keep no copy
            self._to_executor.publish(msg)

    def _to_shared_memory(self, p: Pending, msg: InferenceRequest) -> None:
        """Move the tensors into a slot of the region when there is one, a free slot, and room."""
        region = self.region
        if region is None or not region.handle:
            return
        slot = region.acquire()
        if slot is None:
            self._count('inline (no free slot)')
            return
        try:
            written = region.write_inputs(slot, request_arrays(msg))
        except ValueError:
            written = None          # a tensor that does not decode: the executor answers it inline
        if written is None:
            region.release(slot)
            self._count('inline (does not fit a slot)')
            return
        refs, out_offset, out_size = written
        p.slot = slot
        msg.inputs = [ref_to_tensor(r) for r in refs]
        msg.shm_region, msg.shm_output_offset, msg.shm_output_size = region.handle, out_offset, out_size

    def _release_slot(self, p: Pending, quarantine: bool = False) -> None:
        if p.slot is not None and self.region is not None:
            (self.region.quarantine if quarantine else self.region.release)(p.slot)

    def _tick(self) -> None:
        now = time.monotonic()
        alive = self.policy.executor_alive(now)
        for p, why in self.policy.expire(now, lead_s=self.params.tick_s):
            # the executor may still write into a timed-out request's slot: held until its late
            # answer, or until a new executor instance
            if p.slot is not None:
                self._late_slots[p.forward_id] = p.slot
            self._release_slot(p, quarantine=True)
            self._answer(self.policy.outcome(p, Status.TIMEOUT, why))
        if alive:
            self._register_region()
        self._forward(now)
        self._arm(now, self.policy.next_check(now, self.params.tick_s, IDLE_CHECK_S), force=True)

    def _arm(self, now: float, at: float, force: bool = False) -> None:
        """The tick next at ``at`` (monotonic s); unless ``force``, only if that is earlier than planned."""
        if not force and at >= self._check_at:
            return
        self._check_at = at
        self._tick_timer.timer_period_ns = max(1, int(1e9 * (at - now)))
        self._tick_timer.reset()

    # -- executor side --------------------------------------------------------------------
    def _executor_gids(self, topic: str):
        node = self._executor_node
        return {bytes(i.endpoint_gid[:16]) for i in self.get_publishers_info_by_topic(topic)
                if f"{i.node_namespace.rstrip('/')}/{i.node_name}" == node}

    def _gid_ok(self, source: ResultSource, info, topic: str, what: str) -> bool:
        gid = bytes((info.get('publisher_gid') or {}).get('data', b''))[:16]
        ok, why = source.accept(gid, lambda: self._executor_gids(topic))
        if ok:
            if why == 'bound':
                self.get_logger().info(f'{what}: bound to the executor publisher {gid.hex()}')
            return True
        self._count(f'{what} refused (not from the executor)')
        self.reject(f'{what} not from the executor', f'on {topic}: {why} (publisher {gid.hex() or "?"})')
        return False

    def _on_executor_result(self, msg: InferenceResult, info) -> None:
        if not self._gid_ok(self._results_from, info, self._result_topic, 'result'):
            return
        bad = check_result(msg)
        if bad:
            self._count('results refused (malformed)')
            self.reject('executor result (malformed)', f'#{msg.request_id}: {bad}')
            return
        p = self.policy.on_result(msg.request_id)
        if p is None:
            slot = self._late_slots.pop(msg.request_id, None)
            if slot is not None and self.region is not None:
                self.region.release(slot)
            self.get_logger().debug(f'late executor result #{msg.request_id} dropped (already answered)')
            return
        if msg.shm_region:
            msg = self._outputs_inline(msg)
        self._release_slot(p)
        self.policy.count(msg.status)
        msg.request_id, msg.task = p.request_id, p.task
        msg.line_id, msg.cell_id = self.line_id, self.cell_id
        self._task_results.publish(msg)

    def _outputs_inline(self, msg: InferenceResult) -> InferenceResult:
        """Copy the outputs the executor wrote into our slot into the task's result."""
        region = self.region
        try:
            if region is None or msg.shm_region != region.handle:
                raise RegionError(f'region {msg.shm_region:#x} is not this cell\'s')
            arrays = {r.name: region.read(r) for r in result_refs(msg)}
        except (RegionError, ValueError) as e:
            self._count('results with unreadable outputs')
            msg.status, msg.reason = int(Status.INTERNAL), f'outputs in shared memory unreadable: {e}'
            arrays = {}
        return result_with_inline_outputs(msg, arrays)

    def _on_status(self, msg: ExecutorStatus, info) -> None:
        if not self._gid_ok(self._status_from, info, self.params.executor_status_topic, 'status'):
            return
        now = time.monotonic()
        was_alive = self.policy.executor_alive(now)
        self.policy.executor_seen(now)
        self._models = status_models(msg)
        self._max_request_bytes = int(msg.max_request_bytes)
        if msg.instance_id != self._instance:
            self._instance = msg.instance_id[:64]
            self._new_executor_instance()
        if not was_alive:
            self.get_logger().info(f'executor {msg.executor_id[:MAX_NAME]} reachable ({msg.backend[:MAX_NAME]})')

    def _new_executor_instance(self) -> None:
        """A (re)started executor maps nothing of ours: every slot is free, register again."""
        self._late_slots = {}
        if self.region is not None:
            self.region.release_all()
            self.region.handle = 0
            self._registering, self._register_after = False, 0.0
            self._register_region()

    def _register_region(self) -> None:
        region = self.region
        if region is None or region.handle or self._register_client is None or self._registering \
                or time.monotonic() < self._register_after:
            return
        if not self._register_client.service_is_ready():
            return
        self._registering = True
        req = RegisterShm.Request(line_id=self.line_id, cell_id=self.cell_id, pid=region.pid, fd=region.fd,
                                  size=region.size, nonce=list(region.nonce), boot_id=boot_id())
        instance = self._instance
        self._register_client.call_async(req).add_done_callback(lambda f: self._registered(f, instance))

    def _registered(self, future, instance: str) -> None:
        self._registering = False
        if self.region is None or instance != self._instance:
            return
        try:
            resp = future.result()
        except Exception as e:  # the executor went away during the call
            self._region_note = f'inline: registration failed ({type(e).__name__}: {e})'
            return
        if resp.success:
            self.region.handle = int(resp.handle)
            self._region_note = f'shared memory ({self.region.slots} slots of {self.region.slot_bytes} bytes)'
            self.get_logger().info(f'requests go through shared memory: {resp.message}')
            return
        self._region_note = f'inline: the executor refused the region ({resp.message})'
        self._register_after = time.monotonic() + REGISTER_RETRY_S
        (self.get_logger().warning if self.params.transport == 'shm' else self.get_logger().info)(
            f'shared memory refused by the executor, requests go inline: {resp.message} '
            f'(asked again in {REGISTER_RETRY_S:.0f} s or at the next executor start)')

    def _on_gate(self, msg: GateState) -> None:
        try:
            self.gate.set(msg.level, msg.reason)
        except ValueError as e:
            self._count('gate states refused')
            self.reject('gate state', f'{e}; the gate stays {self.gate.level.name}')

    def _diag(self) -> DiagReport:
        alive = self.policy.executor_alive(time.monotonic())
        values = {'cell': self.cell_ns, 'executor': 'reachable' if alive else 'lost',
                  'pending': len(self.policy.pending), 'gate': self.gate.level.name,
                  'transport': self._region_note}
        if self.region is not None:
            values.update({'shm free slots': self.region.free_slots(),
                           'shm quarantined slots': len(self.region.quarantined)})
        values.update({f'status {k}': v for k, v in sorted(self.policy.counts.items())})
        values.update(sorted(self.counts.items()))
        return DiagReport(OK if alive else WARN, 'executor reachable' if alive else 'executor lost', values)


def main(args=None):
    return main_for(ArbiterNode, args)
