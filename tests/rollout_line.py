"""A small line for model rollout tests and the rollout benchmark: executor, per cell an arbiter
and a vision node (synthetic camera on a timer, rollout on), the line's review queue and rollout
controller; a bad candidate model; the production verdict of a frame computed offline.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from conftest import REPO, wait_for

MODELS = REPO / 'ros2_ws' / 'src' / 'cellos_vision' / 'cellos_vision' / 'models'
PRODUCTION = MODELS / 'inspection_cnn.onnx'
EXECUTOR = '/gpu0/executor'
LINE = 'line1'


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bad_candidate(path: Path, shift: int = 1) -> Path:
    """The production network with its last layer's classes rotated by ``shift``: confident and
    wrong on every part (what a candidate trained with a broken label map looks like).
    """
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(PRODUCTION))
    last = [n for n in m.graph.node if n.op_type == 'Gemm'][-1]
    init = {i.name: i for i in m.graph.initializer}
    for name in last.input[1:3]:
        a = numpy_helper.to_array(init[name])
        init[name].CopyFrom(numpy_helper.from_array(np.roll(a, shift, axis=0).copy(), name))
    onnx.save(m, str(path))
    return path


class OfflineProduction:
    """The shipped model's verdict on a synthetic part, computed here with ONNX Runtime: what the
    cell must have published if nothing but production decided.
    """

    def __init__(self, seed: int, drift: float = 0.0, threshold: float = 0.7):
        import onnxruntime as ort
        from cellos_vision.core.inspection import ModelMeta
        from cellos_vision.core.synthetic_camera import SyntheticCamera
        from cellos_vision.core.vision_preprocess import PreprocessSpec
        self.camera = SyntheticCamera(seed, drift=drift)
        self.meta = ModelMeta.load('inspection_cnn')
        self.spec = PreprocessSpec.from_meta(self.meta.raw)
        self.session = ort.InferenceSession(str(PRODUCTION), providers=['CPUExecutionProvider'])
        self.threshold = threshold

    def decision(self, part_id: int, frame_sha256: str):
        """(verdict, class) of production on the part; None when the frame is not the one the cell saw."""
        from cellos_vision.core.inspection import decide
        from cellos_vision.core.vision_pipeline import frame_sha256 as digest
        from cellos_vision.core.vision_preprocess import preprocess
        frame = self.camera.frame(part_id - 1)
        if digest(frame.image) != frame_sha256:
            return None
        x = preprocess(frame.image, self.spec)
        logits = self.session.run([self.meta.output_name], {self.meta.input_name: x})[0]
        d = decide(logits[0], self.meta.classes, self.threshold, '', self.meta.ok_class)
        return int(d.verdict), d.defect_class


def model_list(tmp_path: Path) -> Path:
    p = tmp_path / 'models.yaml'
    p.write_text(f'models:\n  - {{name: inspection_cnn, path: {PRODUCTION}, max_batch: 8}}\n')
    return p


def start_line(processes, tmp_path: Path, cells=('cell_01',), *, vision: dict | None = None,
               controller: dict | None = None, review: dict | None = None, rate_hz: float = 8.0) -> dict:
    """Start the line's processes (autostart); the paths the test needs."""
    paths = {'aliases': tmp_path / 'aliases.sqlite3', 'review': tmp_path / 'review.sqlite3',
             'labelled': tmp_path / 'labelled'}
    processes.start('executor', 'executor_node', namespace='/gpu0', params={
        'autostart': True, 'model_list': str(model_list(tmp_path)), 'alias_store': str(paths['aliases']),
        'cells': [f'{LINE}/{c}' for c in cells], 'discover_cells': False})
    processes.start('review', 'review_queue_node', namespace=f'/{LINE}', params={
        'autostart': True, 'store': str(paths['review']), 'labelled_dir': str(paths['labelled']), **(review or {})})
    processes.start('controller', 'rollout_controller_node', namespace=f'/{LINE}', params={
        'autostart': True, 'executor': EXECUTOR, **(controller or {})})
    for i, c in enumerate(cells):
        ns = f'/{LINE}/{c}'
        processes.start(f'arbiter_{c}', 'arbiter_node', namespace=ns, params={
            'autostart': True, 'executor_status_topic': f'{EXECUTOR}/status',
            'tasks': ['inspection', 'inspection_shadow'], 'task_priorities.inspection': 'critical',
            'task_priorities.inspection_shadow': 'background'})
        processes.start(f'vision_{c}', 'vision_node', namespace=ns, params={
            'autostart': True, 'source': 'synthetic', 'trigger': 'timer', 'timer_rate_hz': rate_hz,
            'synthetic_seed': 100 + i, 'rollout_task': 'inspection', 'aliases_topic': f'{EXECUTOR}/aliases',
            'deadline_ms': 2000.0, 'result_grace_ms': 500.0, 'annotate': False, 'drift_enabled': False,
            'review': False, **(vision or {})})
    return paths


def set_param(probe, node: str, name: str, value) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    if isinstance(value, bool):
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    else:
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
    res = probe.call(SetParameters, f'{node}/set_parameters', SetParameters.Request(
        parameters=[Parameter(name=name, value=v)]))
    assert res.results[0].successful, res.results[0].reason


def t_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def subscribe_cells(probe, cells) -> None:
    """Each cell's verdicts ('insp <cell>'), shadow verdicts ('shadow <cell>'), results ('result <cell>')."""
    from cellos_common.nodes import qos
    from cellos_interfaces.msg import InferenceResult, Inspection
    for c in cells:
        ns = f'/{LINE}/{c}'
        probe.subscribe(Inspection, f'{ns}/vision/inspection', qos.status(), key=f'insp {c}')
        probe.subscribe(Inspection, f'{ns}/vision/shadow', qos.status(), key=f'shadow {c}')
        probe.subscribe(InferenceResult, f'{ns}/arbiter/result', qos.inference(), key=f'result {c}')


def served(probe, cell: str, after_s: float = 0.0, before_s: float = float('inf')) -> list:
    """(inspection, its result or None) of the cell's verdicts captured in [after_s, before_s)."""
    results = {r.request_id: r for r in probe.received(f'result {cell}') if r.task == 'inspection'}
    return [(m, results.get(m.request_id)) for m in probe.received(f'insp {cell}')
            if after_s <= t_s(m.header.stamp) < before_s]


def shadow_check(probe, cells, t0: float, t1: float, production_id: str) -> dict:
    """Verdicts the cells published in [t0, t1) against production's, computed offline on the same
    frame: compared, changed (verdict or class not production's), not_production (results served
    by another model), and on the parts the shadow model also saw: shadowed, disagree.
    """
    from cellos_interfaces.msg import InferenceResult
    out = dict(compared=0, changed=0, not_production=0, shadowed=0, disagree=0, foreign_frames=0)
    for i, c in enumerate(cells):
        offline = OfflineProduction(100 + i)
        shadow = {s.part_id: s for s in probe.received(f'shadow {c}')}
        for m, r in served(probe, c, t0, t1):
            if r is not None and r.model_id != production_id:
                out['not_production'] += 1
            if r is None or r.status != InferenceResult.STATUS_OK:
                continue        # late or refused: UNDECIDED with its reason, no model's verdict
            want = offline.decision(m.part_id, m.frame_sha256)
            if want is None:
                out['foreign_frames'] += 1
                continue
            out['compared'] += 1
            out['changed'] += (m.verdict, m.defect_class) != want
            s = shadow.get(m.part_id)
            if s is not None:
                out['shadowed'] += 1
                out['disagree'] += s.defect_class != m.defect_class
    return out


def canary_check(probe, cell: str, t0: float, rolled, bad_id: str) -> dict:
    """A canary's figures from the rollback (a ModelRegistryChange): served (the cell's verdicts the
    candidate served since t0), wrong (decided, and not the part's truth), after_trigger (served
    from frames captured after the figures that crossed the threshold were sent), rollback_s (from
    those figures to the rollback; None if the probe missed them).
    """
    from cellos_interfaces.msg import InferenceResult, Inspection
    t_rolled = t_s(rolled.header.stamp)
    trig_cell, trig_part = trigger_of(rolled.reason)
    canary = [(m, r) for m, r in served(probe, cell, t0, t_rolled) if r is not None and r.model_id == bad_id]
    wrong = [m for m, r in canary if r.status == InferenceResult.STATUS_OK
             and m.verdict != Inspection.VERDICT_UNDECIDED and m.defect_class != m.ground_truth_class]
    trig = [s for s in probe.received('stats') if f'{s.line_id}/{s.cell_id}' == trig_cell
            and s.last_part_id == trig_part and s.candidate_id == bad_id]
    t_trig = t_s(trig[0].header.stamp) if trig else None
    return {'served': len(canary), 'wrong': len(wrong), 'trigger': f'{trig_cell} part {trig_part}',
            'after_trigger': len([m for m, _ in canary if t_trig is not None and t_s(m.header.stamp) > t_trig]),
            'rollback_s': None if t_trig is None else t_rolled - t_trig}


def call_ok(probe, srv_type, name: str, request, timeout: float = 20.0):
    resp = probe.call(srv_type, name, request, timeout=timeout)
    assert resp.success, f'{name}: {resp.message}'
    return resp


def trigger_of(reason: str) -> tuple[str, int]:
    """The cell and part a rollout controller's reason names as its trigger."""
    m = re.search(r'trigger (\S+) part (\d+)', reason)
    assert m, f'no trigger in {reason!r}'
    return m.group(1), int(m.group(2))


def wait_served(probe, key: str, n: int, timeout: float, what: str):
    return wait_for(lambda: len(probe.received(key)) >= n, timeout, what=what)


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True)
