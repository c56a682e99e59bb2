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


def bad_candidate(path: Path) -> Path:
    """The production network with its last layer's classes rotated by one: confident and wrong on
    every part (what a candidate trained with a broken label map looks like).
    """
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(PRODUCTION))
    last = [n for n in m.graph.node if n.op_type == 'Gemm'][-1]
    init = {i.name: i for i in m.graph.initializer}
    for name in last.input[1:3]:
        a = numpy_helper.to_array(init[name])
        init[name].CopyFrom(numpy_helper.from_array(np.roll(a, 1, axis=0).copy(), name))
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
