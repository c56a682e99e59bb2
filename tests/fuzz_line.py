"""A running line to fuzz over DDS, and the fuzz of each node family (the system test and the
benchmark share it).

The line is the launch plan's (cellos_bringup.launch_plan.line_nodes: site feed, executor,
coordinator, plant, per cell its energy gate, arbiter, timing and vision), each node in its own
process under one lifecycle manager, plus a standalone vision node (/fuzz/cell_01, frames from a
topic, ticks from a topic nobody else reads) so vision's camera and cycle inputs can be fuzzed
without reaching the line's coordinator. Each family publishes generated messages
(fuzz_messages: from the field types, and mutants of valid messages) on every topic its nodes
subscribe to and calls every service they serve; then the line must be whole: every process
alive, the line locked again, parts conserved, and the refused inputs counted in the nodes'
'boundary' diagnostics.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy

import fuzz_messages as fm
from conftest import REPO, Processes
from probe import Probe

from builtin_interfaces.msg import Time
from cellos_bringup import launch_plan as plan
from cellos_common.nodes import qos
from cellos_inference.nodes.convert_inference import array_to_tensor
from cellos_interfaces.msg import (CellCycle, EnergySignal, ExecutorStatus, GateState, InferenceRequest,
                                   InferenceResult, Inspection, LineState, PhaseCorrection, PlantState, PlantStation,
                                   VisionDrift)
from cellos_interfaces.srv import (DeferJob, HoldCell, ListModels, LoadModel, Resync, SetEnergyOverride,
                                   SetLinePeriod, UnloadModel)
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

LINE = 'line1'
CELLS = plan.cell_ids(2)
PERIOD_MS = 50.0
CONFIG = REPO / 'config'
STANDALONE = '/fuzz/cell_01'      # the standalone vision's namespace
PRODUCTION_MODELS = ('inspection_cnn', 'inspection_cnn_fallback')


def cycle_qos():
    return qos.cycle_report(PERIOD_MS / 1e3)


@dataclass
class Family:
    """What one family's fuzz publishes and calls, and whose boundary must have counted refusals."""

    name: str
    topics: list = field(default_factory=list)      # (topic, type, qos, messages)
    calls: list = field(default_factory=list)       # (service, type, requests)
    counted_by: tuple = ()                          # node fqns whose diagnostics must count refusals


class FuzzLine:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.processes = Processes(tmp)
        self.probe = Probe('cellos_fuzz_probe')
        self.lock = threading.Lock()
        self.diag: dict[str, dict] = {}
        self.state: LineState | None = None
        self.specs = plan.line_nodes(LINE, len(CELLS), period_ms=PERIOD_MS, with_executor=True, with_vision=True,
                                     with_energy=True, with_flow=True)
        self.manager = plan.manager_node(LINE, self.specs)
        self.probe.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, qos.diagnostics())
        self.probe.node.create_subscription(LineState, f'/{LINE}/line_state', self._on_state, qos.latched_state())
        self.responder_answer = None
        self.probe.node.create_subscription(InferenceRequest, f'/{LINE}/{CELLS[0]}/arbiter/request',
                                            self._on_vision_request, qos.inference())
        self._result_pub = self.probe.node.create_publisher(InferenceResult, f'/{LINE}/{CELLS[0]}/arbiter/result',
                                                            qos.inference())
        self.last_cycle: CellCycle | None = None     # cell_01's: its session is public
        self.probe.node.create_subscription(CellCycle, f'/{LINE}/{CELLS[0]}/timing/cycle', self._on_cycle,
                                            qos.cycle_watch())
        self.messages = self.calls = 0

    # -- bring-up ---------------------------------------------------------------------------
    def start(self) -> None:
        import yaml
        stores = {'vision_node': {'drift_store': str(self.tmp / 'vision_drift_{ns}.sqlite3')},
                  'energy_feed_node': {'override_store': str(self.tmp / 'energy_override_{ns}.sqlite3')},
                  'energy_gate_node': {'job_store': str(self.tmp / 'deferred_jobs_{ns}.sqlite3')}}
        for s in [*self.specs, self.manager]:
            # after the area files, as the runner does: a later file wins, and so do these values
            overrides = self.tmp / f'{s.fqn.strip("/").replace("/", "_")}.params.yaml'
            overrides.write_text(yaml.safe_dump({s.fqn: {'ros__parameters': {
                **plan.resolve_overrides(s.overrides, str(CONFIG)), **stores.get(s.executable, {})}}}))
            files = [a for k in s.params for a in ('--params-file', str(CONFIG / plan.PARAMS_FILES[k]))]
            self.processes.start(s.fqn, s.executable, *files, '--params-file', str(overrides), namespace=s.namespace)
        self.processes.start(STANDALONE, 'vision_node', namespace=STANDALONE, params={
            'autostart': True, 'source': 'topic', 'trigger': 'cycle', 'cycle_period_ms': PERIOD_MS,
            'drift_store': "''", 'deadline_ms': 100.0})

    def wait_whole(self, timeout: float) -> LineState:
        """Every process alive and the line's cells locked (and flowing); the latest LineState."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = self.dead()
            if dead:
                raise AssertionError(f'process(es) died: {dead}')
            s = self.line_state()
            if s is not None and self._locked(s):
                return s
            time.sleep(0.2)
        raise AssertionError(f'line not locked within {timeout:.0f} s: {self._describe(self.line_state())}')

    def _locked(self, s: LineState) -> bool:
        ours = {c.cell_id: c for c in s.cells if c.cell_id in CELLS}
        return len(ours) == len(CELLS) and all(c.locked for c in ours.values())

    def _describe(self, s: LineState | None) -> str:
        if s is None:
            return 'no line state'
        return ', '.join(f'{c.cell_id} {"locked" if c.locked else "not locked"}' for c in s.cells)

    # -- observations -----------------------------------------------------------------------
    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for s in msg.status:
                self.diag[s.name] = {kv.key: kv.value for kv in s.values} | {'_level': s.level, '_message': s.message}

    def _on_cycle(self, msg: CellCycle) -> None:
        self.last_cycle = msg

    def _on_state(self, msg: LineState) -> None:
        with self.lock:
            self.state = msg

    def line_state(self) -> LineState | None:
        with self.lock:
            return self.state

    def boundary(self, fqn: str) -> dict:
        with self.lock:
            return dict(self.diag.get(f'{fqn}: boundary', {}))

    def dead(self) -> dict[str, int]:
        return {k: p.returncode for k, p in self.processes.procs.items() if p.poll() is not None}

    def conserved(self, s: LineState) -> bool:
        return s.plant_age_s >= 0 and s.parts_in == (s.parts_out + s.parts_in_buffers + s.parts_in_cells
                                                     + s.parts_dropped)

    # -- fuzzing ----------------------------------------------------------------------------
    def _on_vision_request(self, req: InferenceRequest) -> None:
        """Answer vision's real requests first, with mutants of a valid answer (decode paths)."""
        answer = self.responder_answer
        if answer is not None:
            self._result_pub.publish(answer(req))

    def publish(self, topic: str, msg_type, profile, messages, wait_s: float = 10.0) -> int:
        pub = self.probe.node.create_publisher(msg_type, topic, profile)
        try:
            end = time.monotonic() + wait_s
            while pub.get_subscription_count() == 0 and time.monotonic() < end:
                time.sleep(0.05)
            for i, m in enumerate(messages):
                pub.publish(m)
                if i % 20 == 19:
                    time.sleep(0.02)     # a burst at a time: the nodes' queues are finite
            time.sleep(0.5)
        finally:
            self.probe.node.destroy_publisher(pub)
        self.messages += len(messages)
        return len(messages)

    def call_all(self, service: str, srv_type, requests, timeout: float = 5.0) -> tuple[int, int]:
        """(answered, not answered)."""
        client = self.probe.node.create_client(srv_type, service)
        answered = missed = 0
        try:
            if not client.wait_for_service(timeout_sec=10.0):
                return 0, len(requests)
            for req in requests:
                done = threading.Event()
                future = client.call_async(req)
                future.add_done_callback(lambda _: done.set())
                if done.wait(timeout):
                    answered += 1
                else:
                    client.remove_pending_request(future)
                    missed += 1
        finally:
            self.probe.node.destroy_client(client)
        self.calls += len(requests)
        return answered, missed

    def run(self, family: Family) -> dict:
        """Fuzz a family; the counts of what was sent and answered."""
        out = {'messages': 0, 'calls': 0, 'unanswered': 0}
        for topic, msg_type, profile, messages in family.topics:
            out['messages'] += self.publish(topic, msg_type, profile, messages)
        for service, srv_type, requests in family.calls:
            answered, missed = self.call_all(service, srv_type, requests)
            out['calls'] += answered + missed
            out['unanswered'] += missed
        return out

    def close(self) -> None:
        self.processes.close()
        self.probe.close()


# -- the families -----------------------------------------------------------------------------
def _stamp(t: float) -> Time:
    return Time(sec=int(t), nanosec=int((t % 1) * 1e9))


def vision_family(n: int, line: FuzzLine) -> Family:
    cell = f'/{LINE}/{CELLS[0]}'
    ok = InferenceResult(line_id=LINE, cell_id=CELLS[0], task='inspection', status=0,
                         outputs=[array_to_tensor('logits', np.array([[0, 9, 0, 0, 0]], np.float32))])
    feedback = Inspection(line_id=LINE, cell_id=CELLS[0], part_id=1, has_ground_truth=True, ground_truth_class='spot')
    tick = CellCycle(line_id='fuzz', cell_id='cell_01', cycle_index=1, state=CellCycle.STATE_LOCKED,
                     period_ns=int(PERIOD_MS * 1e6))
    frame = Image(height=60, width=80, encoding='mono8', step=80, data=bytes(4800))
    return Family('vision', topics=[
        (f'{cell}/arbiter/result', InferenceResult, qos.inference(),
         fm.examples(InferenceResult, n // 2) + fm.mutants(ok, n // 2)),
        (f'{cell}/vision/feedback', Inspection, qos.status(), fm.examples(Inspection, n // 2)
         + fm.mutants(feedback, n // 2)),
        (f'{STANDALONE}/timing/cycle', CellCycle, cycle_qos(), fm.examples(CellCycle, n // 2)
         + fm.mutants(tick, n // 2)),
        (f'{STANDALONE}/camera/image', Image, qos.camera_in(), fm.examples(Image, n // 4) + fm.mutants(frame, n // 4)),
    ], calls=[(f'{cell}/vision/reset_drift', Trigger, [Trigger.Request()] * 3),
              (f'{STANDALONE}/vision/reset_drift', Trigger, [Trigger.Request()] * 3)],
        counted_by=(f'{cell}/vision', f'{STANDALONE}/vision'))


def vision_answers(line: FuzzLine, n: int):
    """Answers to vision's own requests: mutants of a valid one, with the real request id."""
    ok = InferenceResult(line_id=LINE, cell_id=CELLS[0], task='inspection', status=0,
                         outputs=[array_to_tensor('logits', np.array([[0, 9, 0, 0, 0]], np.float32))])
    pool = fm.mutants(ok, n)
    i = [0]

    def answer(req):
        m = pool[i[0] % len(pool)]
        i[0] += 1
        m.request_id = req.request_id
        return m
    return answer


def energy_family(n: int, line: FuzzLine) -> Family:
    now = time.time()
    good = EnergySignal(site_id='site', source='fuzz', price_per_mwh=40.0, carbon_g_per_kwh=100.0,
                        power_budget_w=5000.0, forecast_step_s=60.0, forecast_price_per_mwh=[40.0] * 24)
    good.header.stamp = good.data_time = _stamp(now)
    job = DeferJob.Request(job_id='fuzz-job', duration_s=60.0, latest_finish=_stamp(now + 3600))
    override = SetEnergyOverride.Request(active=True, dr_level=1, power_budget_w=1000.0, duration_s=5.0, reason='fuzz')
    calls = [(f'/{LINE}/{c}/energy/defer', DeferJob, fm.examples(DeferJob.Request, n // 4)
              + fm.mutants(job, n // 4)) for c in CELLS]
    calls.append(('/site/set_override', SetEnergyOverride, fm.examples(SetEnergyOverride.Request, n // 4)
                  + fm.mutants(override, n // 4) + [SetEnergyOverride.Request(active=False)]))
    return Family('energy', topics=[
        ('/site/energy_feed', EnergySignal, qos.latched_state(), fm.examples(EnergySignal, n // 2)
         + fm.mutants(good, n // 2))],
        calls=calls, counted_by=(*(f'/{LINE}/{c}/energy_gate' for c in CELLS), '/site/energy_feed'))


def inference_family(n: int, line: FuzzLine) -> Family:
    cell = f'/{LINE}/{CELLS[0]}'
    req = InferenceRequest(line_id=LINE, cell_id=CELLS[0], task='inspection', model='inspection_cnn',
                           priority=0, deadline=_stamp(time.time() + 5.0),
                           inputs=[array_to_tensor('image', np.zeros((1, 1, 60, 80), np.float32))])
    result = InferenceResult(line_id=LINE, cell_id=CELLS[0], task='inspection', status=0, request_id=1)
    gate = GateState(line_id=LINE, cell_id=CELLS[0], level=0)
    status = ExecutorStatus(executor_id='gpu0', backend='onnxruntime')
    model_names = [r for r in fm.examples(UnloadModel.Request, n // 4) if r.model not in PRODUCTION_MODELS]
    return Family('inference', topics=[
        (f'{cell}/arbiter/request', InferenceRequest, qos.inference(), fm.examples(InferenceRequest, n // 4)
         + fm.mutants(req, n // 4)),
        (f'{cell}/inference/result', InferenceResult, qos.inference(), fm.examples(InferenceResult, n // 4)
         + fm.mutants(result, n // 4)),
        (f'{cell}/energy/gate', GateState, qos.latched_state(), fm.examples(GateState, n // 4)
         + fm.mutants(gate, n // 4)),
        ('/gpu0/executor/status', ExecutorStatus, qos.status(), fm.examples(ExecutorStatus, n // 4)
         + fm.mutants(status, n // 4)),
        (f'{cell}/inference/request', InferenceRequest, qos.inference(), fm.examples(InferenceRequest, n // 4)
         + fm.mutants(req, n // 4)),
    ], calls=[('/gpu0/executor/load_model', LoadModel, fm.examples(LoadModel.Request, n // 8)),
              ('/gpu0/executor/unload_model', UnloadModel, model_names),
              ('/gpu0/executor/list_models', ListModels, [ListModels.Request()] * 3)],
        counted_by=(f'{cell}/arbiter', '/gpu0/executor'))


def line_family(n: int, line: FuzzLine) -> Family:
    cell = f'/{LINE}/{CELLS[0]}'
    tick = CellCycle(line_id=LINE, cell_id=CELLS[0], cycle_index=10, state=CellCycle.STATE_LOCKED,
                     period_ns=int(PERIOD_MS * 1e6))
    correction = PhaseCorrection(period_ns=int(PERIOD_MS * 1e6))
    plant = PlantState(line_id=LINE, source='fuzz', parts_in=10, parts_out=4, stations=[
        PlantStation(cell_id=CELLS[0], parts_done=6), PlantStation(cell_id=CELLS[1], buffer_level=1,
                                                                   buffer_capacity=8, parts_done=4)])
    drift = VisionDrift(line_id=LINE, cell_id=CELLS[0], state=VisionDrift.STATE_NOMINAL)
    # the scenarios read off the code: the cell's session is public (every report carries it)
    session = line.last_cycle.session if line.last_cycle else 0
    big = 2**63 - 1
    scenarios_cycle = [CellCycle(line_id=LINE, cell_id=CELLS[0], session=session, send_ns=big, sync_t1_ns=big,
                                 sync_t4_ns=big, sync_t2_ns=1, sync_t3_ns=1, state=CellCycle.STATE_LOCKED)]
    scenarios_correction = [PhaseCorrection(cell_id=CELLS[0], session=session, period_ns=10**15, anchor_ns=1)]
    scenarios_plant = [PlantState(line_id=LINE, parts_in=2**32, stations=[
                           PlantStation(cell_id=CELLS[0], parts_done=-1), PlantStation(cell_id=CELLS[1])]),
                       PlantState(line_id=LINE, stations=[PlantStation(cell_id=f'c{i}') for i in range(5000)])]
    return Family('line', topics=[
        (f'{cell}/timing/cycle', CellCycle, cycle_qos(), fm.examples(CellCycle, n // 4) + fm.mutants(tick, n // 4)
         + scenarios_cycle),
        (f'/{LINE}/rogue/timing/cycle', CellCycle, cycle_qos(), fm.examples(CellCycle, n // 4)),
        (f'{cell}/timing/correction', PhaseCorrection, qos.correction(), fm.examples(PhaseCorrection, n // 4)
         + fm.mutants(correction, n // 4) + scenarios_correction),
        (f'/{LINE}/plant/state', PlantState, qos.plant_state(), fm.examples(PlantState, n // 4)
         + fm.mutants(plant, n // 4) + scenarios_plant),
        (f'{cell}/vision/drift', VisionDrift, qos.latched_state(), fm.examples(VisionDrift, n // 4)
         + fm.mutants(drift, n // 4) + [drift]),
    ], calls=[(f'/{LINE}/hold_cell', HoldCell, fm.examples(HoldCell.Request, n // 8)),
              (f'/{LINE}/set_line_period', SetLinePeriod, fm.examples(SetLinePeriod.Request, n // 8)
               + [SetLinePeriod.Request(period_ms=PERIOD_MS)]),
              (f'/{LINE}/resync', Resync, fm.examples(Resync.Request, n // 8))],
        counted_by=(f'/{LINE}/coordinator', f'{cell}/timing'))


FAMILIES = {'vision': vision_family, 'energy': energy_family, 'inference': inference_family, 'line': line_family}


def refused(line: FuzzLine, fqns) -> dict[str, int]:
    return {f: int(line.boundary(f).get('rejected', '0')) for f in fqns}


def settle(line: FuzzLine, family: Family, timeout: float = 45.0) -> dict:
    """After a family: wait for the line to be whole and the refusals to show in diagnostics."""
    state = line.wait_whole(timeout)
    end = time.monotonic() + 10.0
    counts = refused(line, family.counted_by)
    while not all(counts.values()) and time.monotonic() < end:
        time.sleep(0.5)
        counts = refused(line, family.counted_by)
    state = line.line_state() or state
    return {'locked': line._locked(state), 'conserved': line.conserved(state), 'refused': counts,
            'faults': {f: int(line.boundary(f).get('faults', '0')) for f in family.counted_by}}


__all__ = ['FAMILIES', 'FuzzLine', 'Family', 'settle', 'vision_answers', 'rclpy']
