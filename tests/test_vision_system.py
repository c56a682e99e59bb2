"""Vision node in its own process over real DDS.

1. source=topic: bad frames (empty, wrong encoding, wrong size) give UNDECIDED inspections with
   their reason and a log line; the node keeps running and exits cleanly on Ctrl-C. A good
   frame is submitted to the arbiter topic; the test answers as the arbiter: a rejection is
   UNDECIDED with its status, logits become a verdict, silence becomes UNDECIDED (late).
2. End to end: synthetic camera -> vision -> arbiter -> executor (real ONNX Runtime, the
   shipped model) -> Inspection with verdicts matching the ground truth; then drift (darker
   light, fainter defects) switches the cell to its fallback and raises the hold.

Waits are bounded generously for a busy 2-core machine; what is asserted is the answer (verdict,
reason, model), not how fast it came.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import REPO, wait_for

rclpy = pytest.importorskip('rclpy')
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cellos_common.nodes import qos  # noqa: E402
from cellos_inference.nodes.convert_inference import array_to_tensor  # noqa: E402
from cellos_interfaces.msg import (InferenceRequest, InferenceResult, Inspection,  # noqa: E402
                                   VisionDrift)

CELL = '/line1/cell1'
MODELS = REPO / 'ros2_ws' / 'src' / 'cellos_vision' / 'cellos_vision' / 'models'


def image(h, w, encoding, step, data) -> Image:
    return Image(height=h, width=w, encoding=encoding, step=step, data=bytes(data))


BAD_FRAMES = {
    'empty': image(0, 0, 'bgr8', 0, b''),
    'encoding': image(120, 160, '16UC1', 320, bytes(120 * 320)),
    'size': image(120, 160, 'bgr8', 480, bytes(1000)),
}


def test_bad_frames_are_undecided_with_reasons_and_the_node_keeps_running(processes, ros_probe):
    processes.start('vision', 'vision_node', namespace=CELL, params={
        # the test answers as the arbiter: the deadline leaves it time on a busy machine
        'autostart': True, 'source': 'topic', 'trigger': 'frame', 'deadline_ms': 1500.0,
        'result_grace_ms': 500.0, 'drift_enabled': False})
    probe = ros_probe
    probe.subscribe(Inspection, f'{CELL}/vision/inspection', qos.status(), key='insp')
    probe.subscribe(Image, f'{CELL}/vision/annotated', qos.image_out(), key='annotated')
    requests = []
    probe.subscribe(InferenceRequest, f'{CELL}/arbiter/request', qos.inference(), key='req',
                    callback=requests.append)
    cam = probe.node.create_publisher(Image, f'{CELL}/camera/image', qos.camera_in())
    arbiter = probe.node.create_publisher(InferenceResult, f'{CELL}/arbiter/result', qos.inference())
    wait_for(lambda: cam.get_subscription_count() > 0 and arbiter.get_subscription_count() > 0,
             20.0, what='vision node subscribed to camera/image and arbiter/result')

    def send_until(msg: Image, match, what: str, timeout=30.0):
        """Best-effort camera QoS: send again until the node's answer shows up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cam.publish(msg)
            try:
                return wait_for(lambda: [m for m in probe.received('insp') if match(m)], 0.5)
            except AssertionError:
                pass
        raise AssertionError(f'no inspection for {what} in {timeout} s')

    for kind, msg in BAD_FRAMES.items():
        got = send_until(msg, lambda m, k=kind: f'bad frame ({k})' in m.reason, kind)
        assert all(m.verdict == Inspection.VERDICT_UNDECIDED for m in got)
        assert (got[0].line_id, got[0].cell_id) == ('line1', 'cell1') and got[0].confidence == 0.0
    assert all(m.verdict == Inspection.VERDICT_UNDECIDED for m in probe.received('insp'))
    assert not requests, 'a bad frame must never reach the arbiter'
    wait_for(lambda: probe.received('annotated'), 15.0, what='annotated image of an undecided frame')

    # a good rgb8 frame goes to the arbiter as a 1x1x60x80 float32 tensor
    from cellos_vision.core.synthetic_camera import SyntheticCamera
    cam_frames = SyntheticCamera(9100)

    def good_frame(i):
        rgb = np.ascontiguousarray(cam_frames.frame(i, 'spot').image[..., ::-1])
        return image(120, 160, 'rgb8', 480, rgb.tobytes())

    def wait_request(n):
        deadline = time.monotonic() + 30.0
        while len(requests) < n and time.monotonic() < deadline:
            cam.publish(good_frame(n))
            time.sleep(0.2)
        assert len(requests) >= n, 'no InferenceRequest for a good frame'
        return requests[n - 1]

    req = wait_request(1)
    assert (req.task, req.model) == ('inspection', 'inspection_cnn')
    assert (req.line_id, req.cell_id) == ('line1', 'cell1')
    (tensor,) = req.inputs
    assert (tensor.name, tensor.dtype, list(tensor.shape)) == ('image', 'float32', [1, 1, 60, 80])

    def answer(req, **fields):
        arbiter.publish(InferenceResult(request_id=req.request_id, line_id=req.line_id, cell_id=req.cell_id,
                                        task=req.task, model_id=req.model, **fields))

    def inspection_after(n_before):
        return wait_for(lambda: probe.received('insp')[n_before:], 15.0, what='inspection')[0]

    n = len(probe.received('insp'))
    answer(req, status=InferenceResult.STATUS_DEADLINE, reason='would finish 40 ms late')
    m = inspection_after(n)
    assert m.verdict == Inspection.VERDICT_UNDECIDED and m.reason.startswith('deadline: would finish')

    req = wait_request(2)
    n = len(probe.received('insp'))
    answer(req, status=InferenceResult.STATUS_OK,
           outputs=[array_to_tensor('logits', np.array([[0, 0, 9, 0, 0]], np.float32))])
    m = inspection_after(n)
    assert (m.verdict, m.defect_class, m.reason) == (Inspection.VERDICT_FAIL, 'spot', '')
    assert m.confidence > 0.99 and m.inference_ms > 0 and m.preprocess_ms > 0

    req = wait_request(3)   # never answered: late, not a pass
    n = len(probe.received('insp'))
    m = inspection_after(n)
    assert m.verdict == Inspection.VERDICT_UNDECIDED and m.reason.startswith('late: no result')

    assert processes.procs['vision'].poll() is None, 'vision node died'
    log = processes.log('vision')
    for kind in BAD_FRAMES:
        assert f'bad frame ({kind})' in log, f'no log line for the {kind} frame'
    assert processes.stop('vision') == 0
    assert 'Traceback' not in processes.log('vision')


def _set_param(probe, node: str, name: str, value: float) -> None:
    req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
    res = probe.call(SetParameters, f'{node}/set_parameters', req)
    assert res.results[0].successful, res.results[0].reason


def test_end_to_end_verdicts_through_arbiter_and_executor_then_drift(processes, ros_probe, tmp_path):
    onnx = MODELS / 'inspection_cnn.onnx'
    fallback = MODELS / 'inspection_cnn_fallback.onnx'
    model_list = tmp_path / 'models.yaml'
    entries = [f'  - {{name: inspection_cnn, path: {onnx}, max_batch: 8}}']
    if fallback.exists():
        entries.append(f'  - {{name: inspection_cnn_fallback, path: {fallback}, max_batch: 8}}')
    model_list.write_text('models:\n' + '\n'.join(entries) + '\n')
    processes.start('executor', 'executor_node', namespace='/gpu0', params={
        'autostart': True, 'backend': 'onnxruntime', 'model_list': str(model_list),
        'cells': ['line1/cell1']})
    processes.start('arbiter', 'arbiter_node', namespace=CELL, params={
        'autostart': True, 'executor_status_topic': '/gpu0/executor/status'})
    vision_params = {
        'autostart': True, 'source': 'synthetic', 'trigger': 'timer', 'timer_rate_hz': 10.0,
        'synthetic_seed': 9100, 'deadline_ms': 500.0, 'drift_reference_size': 30,
        'drift_window_size': 15, 'drift_revalidate_samples': 10}
    if fallback.exists():   # else: the primary with the stricter threshold
        vision_params['fallback_model'] = 'inspection_cnn_fallback'
    processes.start('vision', 'vision_node', namespace=CELL, params=vision_params)
    probe = ros_probe
    probe.subscribe(Inspection, f'{CELL}/vision/inspection', qos.status(), key='insp')
    probe.subscribe(VisionDrift, f'{CELL}/vision/drift', qos.latched_state(), key='drift')

    decided = wait_for(lambda: (lambda d: d if len(d) >= 40 else None)(
        [m for m in probe.received('insp') if m.verdict != Inspection.VERDICT_UNDECIDED]),
        90.0, what='40 decided inspections through arbiter and executor')
    all_ = probe.received('insp')
    assert all(m.has_ground_truth and m.model_id == 'inspection_cnn' for m in all_)
    correct = [m for m in decided if m.defect_class == m.ground_truth_class]
    assert len(correct) / len(decided) >= 0.9, [(m.defect_class, m.ground_truth_class) for m in decided]
    for m in correct:
        want = Inspection.VERDICT_PASS if m.ground_truth_class == 'ok' else Inspection.VERDICT_FAIL
        assert m.verdict == want
    # once the graph is connected (first decided inspection), most are decided; each undecided one
    # says why (on a busy machine some miss their 500 ms deadline: late, never a silent pass)
    start = next(i for i, m in enumerate(all_) if m.verdict != Inspection.VERDICT_UNDECIDED)
    steady = all_[start:]
    undecided = [m for m in steady if m.verdict == Inspection.VERDICT_UNDECIDED]
    assert len(undecided) <= 0.5 * len(steady), [m.reason for m in undecided]
    assert all(m.reason for m in all_ if m.verdict == Inspection.VERDICT_UNDECIDED)
    wait_for(lambda: any(d.state == VisionDrift.STATE_NOMINAL for d in probe.received('drift')), 30.0,
             what='drift monitor NOMINAL after its reference window')

    # the line drifts: darker, uneven light, fainter defects
    _set_param(probe, f'{CELL}/vision', 'synthetic_drift', 1.0)
    held = wait_for(lambda: [d for d in probe.received('drift') if d.hold], 60.0,
                    what='drift hold after the light changed')[0]
    assert held.state == VisionDrift.STATE_REVALIDATING and held.reason.startswith('drift:')
    assert held.switches == 1
    assert held.confidence_threshold == pytest.approx(0.8)   # the stricter threshold
    if fallback.exists():
        assert held.model_id == 'inspection_cnn_fallback'
        wait_for(lambda: any(m.model_id == 'inspection_cnn_fallback' for m in probe.received('insp')),
                 30.0, what='inspections on the fallback model')
        # the fallback is trained across the drift range: it revalidates and the hold is released
        released = wait_for(lambda: [d for d in probe.received('drift')
                                     if d.state == VisionDrift.STATE_FALLBACK], 60.0,
                            what='fallback revalidated')[0]
        assert not released.hold and released.model_id == 'inspection_cnn_fallback'
    else:
        assert held.model_id == 'inspection_cnn'
    # the operator fixed the light: back to the primary model, learning a new reference
    _set_param(probe, f'{CELL}/vision', 'synthetic_drift', 0.0)
    assert probe.call(Trigger, f'{CELL}/vision/reset_drift', Trigger.Request()).success
    wait_for(lambda: (lambda d: d.state == VisionDrift.STATE_LEARNING and not d.hold
                      and d.model_id == 'inspection_cnn')(probe.received('drift')[-1]), 15.0,
             what='drift monitor back to LEARNING on the primary model after reset')
    for key in ('vision', 'arbiter', 'executor'):
        assert processes.procs[key].poll() is None, f'{key} died'
    assert processes.stop('vision') == 0


def test_cycle_ticks_from_the_timing_node_drive_inspections(processes, ros_probe):
    """trigger=cycle: one inspection per inspect_every cycles of the cell's real timing node;
    without an arbiter each one ends UNDECIDED (late), never as a pass.
    """
    processes.start('timing', 'timing_node', namespace=CELL, params={'autostart': True, 'period_ms': 50.0})
    processes.start('vision', 'vision_node', namespace=CELL, params={
        'autostart': True, 'trigger': 'cycle', 'inspect_every': 4,
        'deadline_ms': 60.0, 'result_grace_ms': 20.0})
    ros_probe.subscribe(Inspection, f'{CELL}/vision/inspection', qos.status(), key='insp')
    got = wait_for(lambda: (lambda m: m if len(m) >= 8 else None)(ros_probe.received('insp')), 40.0,
                   what='8 inspections driven by cycle ticks')
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got]
    # the median interval: a tick the loaded machine delivered late moves one stamp, not the figure
    period = sorted(b - a for a, b in zip(stamps, stamps[1:]))[(len(stamps) - 1) // 2]
    assert 0.15 < period < 0.3, f'{period:.3f} s between inspections: expected 4 cycles of 50 ms'
    assert [m.part_id for m in got] == list(range(got[0].part_id, got[0].part_id + len(got)))
    assert all(m.verdict == Inspection.VERDICT_UNDECIDED and m.reason.startswith('late') for m in got)
    assert processes.stop('vision') == 0
