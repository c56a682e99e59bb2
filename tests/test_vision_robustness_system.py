"""Vision node in its own process over real DDS, the test playing its arbiter:

1. results it cannot use (an OK answer whose output has an unknown dtype or the wrong byte length,
   an unknown status) make that inspection UNDECIDED with the reason, a result for another cell
   is refused without answering anything, and the refusals are counted in its diagnostics;
2. its drift state survives SIGKILL: a restarted node keeps the reference it learned (it does not
   learn a new one on drifted data: the drift is caught against the old one) and keeps its hold.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from conftest import wait_for

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from cellos_common.nodes import qos  # noqa: E402
from cellos_inference.nodes.convert_inference import array_to_tensor  # noqa: E402
from cellos_interfaces.msg import (InferenceRequest, InferenceResult, Inspection, Tensor,  # noqa: E402
                                   VisionDrift)

CELL = '/line1/cell_07'
CLASSES = 5


def logits(confidence: float) -> np.ndarray:
    """Logits whose top-class ('ok') probability is ``confidence``."""
    top = math.log((CLASSES - 1) * confidence / (1 - confidence))
    return np.array([[top, 0, 0, 0, 0]], np.float32)


class FakeArbiter:
    """Answers every request on the cell's arbiter/request with ``self.answer(request)``."""

    def __init__(self, probe):
        self.probe = probe
        self.pub = probe.node.create_publisher(InferenceResult, f'{CELL}/arbiter/result', qos.inference())
        self.lock = threading.Lock()
        self.answer = None
        self.requests = 0
        probe.subscribe(InferenceRequest, f'{CELL}/arbiter/request', qos.inference(), key='req',
                        callback=self._on_request)

    def _on_request(self, req):
        with self.lock:
            self.requests += 1
            answer = self.answer
        if answer is not None:
            for msg in answer(req):
                self.pub.publish(msg)


def result(req, **fields) -> InferenceResult:
    return InferenceResult(request_id=req.request_id, line_id=req.line_id, cell_id=req.cell_id, task=req.task,
                           model_id=req.model, **fields)


def boundary_values(probe) -> dict:
    for arr in reversed(probe.received('diag')):
        for s in arr.status:
            if s.name == f'{CELL}/vision: boundary':
                return {kv.key: kv.value for kv in s.values} | {'_level': s.level}
    return {}


def start_vision(processes, key, **params):
    return processes.start(key, 'vision_node', namespace=CELL, params={
        'autostart': True, 'source': 'synthetic', 'trigger': 'timer', 'timer_rate_hz': 20.0,
        'deadline_ms': 800.0, 'result_grace_ms': 200.0, **params})


def test_results_vision_cannot_use_are_undecided_with_the_reason(processes, ros_probe):
    arbiter = FakeArbiter(ros_probe)
    ros_probe.subscribe(Inspection, f'{CELL}/vision/inspection', qos.status(), key='insp')
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
    bad = {
        'dtype': lambda req: [result(req, status=0, outputs=[
            Tensor(name='logits', dtype='complex128', shape=[1, 5], data=bytes(80))])],
        'size': lambda req: [result(req, status=0, outputs=[
            Tensor(name='logits', dtype='float32', shape=[1, 5], data=bytes(19))])],
        'status': lambda req: [result(req, status=200, reason='forged')],
        # a forged answer for another cell first: refused; then the real one decides
        'other cell': lambda req: [InferenceResult(request_id=req.request_id, line_id='line1', cell_id='cell_08',
                                                   task='inspection', status=0,
                                                   outputs=[array_to_tensor('logits', logits(0.999))]),
                                   result(req, status=0, outputs=[array_to_tensor('logits', logits(0.99))])],
    }
    start_vision(processes, 'vision', drift_enabled=False)
    wait_for(lambda: arbiter.pub.get_subscription_count() > 0, 20.0, what='vision subscribed to arbiter/result')
    expect = {'dtype': "bad result: bad output 'logits': output dtype 'complex128'",
              'size': "bad result: bad output 'logits': output has 19 bytes",
              'status': 'bad result: unknown result status 200'}
    for kind, answer in bad.items():
        ros_probe.clear('insp')
        with arbiter.lock:
            arbiter.answer = answer
        got = wait_for(lambda: [m for m in ros_probe.received('insp') if m.reason.startswith(expect[kind])]
                       if kind in expect else
                       [m for m in ros_probe.received('insp') if m.verdict == Inspection.VERDICT_PASS],
                       15.0, what=f'inspection answered by a {kind} result')
        if kind in expect:
            assert all(m.verdict == Inspection.VERDICT_UNDECIDED and m.confidence == 0.0 for m in got)
        else:   # the forged 0.999 answer did not decide it: the real 0.99 did
            assert all(abs(m.confidence - 0.99) < 1e-3 for m in got), [m.confidence for m in got]
    values = wait_for(lambda: (lambda v: v if int(v.get('rejected arbiter/result', 0)) >= 4 else None)(
        boundary_values(ros_probe)), 10.0, what='refused results counted in the diagnostics')
    assert values['faults'] == '0', values
    assert processes.procs['vision'].poll() is None, 'vision died'
    assert processes.stop('vision') == 0
    assert 'Traceback' not in processes.log('vision')


def test_drift_reference_and_hold_survive_sigkill(processes, ros_probe, tmp_path):
    store = tmp_path / 'vision_drift_{ns}.sqlite3'
    params = {'drift_store': str(store), 'drift_reference_size': 12, 'drift_window_size': 6,
              'drift_revalidate_samples': 100000, 'fallback_model': "''"}
    arbiter = FakeArbiter(ros_probe)
    rng = np.random.default_rng(7)
    ros_probe.subscribe(VisionDrift, f'{CELL}/vision/drift', qos.latched_state(), key='drift')

    def confident(req):
        return [result(req, status=0, outputs=[array_to_tensor('logits', logits(rng.uniform(0.97, 0.995)))])]

    def drifted(req):
        return [result(req, status=0, outputs=[array_to_tensor('logits', logits(rng.uniform(0.72, 0.8)))])]

    def latest_drift():
        got = ros_probe.received('drift')
        return got[-1] if got else None

    arbiter.answer = confident
    start_vision(processes, 'vision', **params)
    wait_for(lambda: (d := latest_drift()) and d.state == VisionDrift.STATE_NOMINAL, 30.0,
             what='reference learned (NOMINAL)')
    processes.kill('vision')                 # SIGKILL: nothing written at exit

    ros_probe.clear('drift')
    with arbiter.lock:
        arbiter.answer = None                # no answers until the restarted node said its state
    start_vision(processes, 'vision2', **params)
    first = wait_for(latest_drift, 30.0, what='drift state of the restarted node')
    assert first.state == VisionDrift.STATE_NOMINAL and not first.hold, first
    assert 'drift state restored' in processes.log('vision2') and 'NOMINAL' in processes.log('vision2')
    # the data has drifted by now: judged against the kept reference, not learned as a new one
    with arbiter.lock:
        arbiter.answer = drifted
    held = wait_for(lambda: (d := latest_drift()) and d.hold and d, 30.0, what='drift hold after the restart')
    assert held.state == VisionDrift.STATE_REVALIDATING and held.switches == 1 and held.reason.startswith('drift:')
    assert not any(d.state == VisionDrift.STATE_LEARNING for d in ros_probe.received('drift'))
    processes.kill('vision2')

    ros_probe.clear('drift')
    with arbiter.lock:
        arbiter.answer = confident
    start_vision(processes, 'vision3', **params)
    again = wait_for(latest_drift, 30.0, what='drift state after the second restart')
    assert again.state == VisionDrift.STATE_REVALIDATING and again.hold and again.switches == 1, again
    wait_for(lambda: arbiter.requests > 20, 20.0, what='inspections after the second restart')
    assert latest_drift().hold, 'the hold is released only by revalidation or the operator'
    assert processes.stop('vision3') == 0
