"""Audit over real DDS, real processes.

1. A one-cell line (executor with the shipped model, arbiter, vision on the synthetic camera,
   site energy feed, energy gate) and the line's audit recorder: every inspection the line
   publishes is in the recording, also across a SIGKILL of the recorder (at most the last
   second before the kill is lost; the killed file opens; the restarted recorder continues the
   same bag); operator actions and registry changes are recorded; the lineage of a part is its
   real chain: the sha256 of the frame the camera made for that part, the executor's content id
   of the model (the ONNX file's sha256), the verdict the cell published, the gate, the energy.
2. Deferred jobs survive SIGKILLs of their energy gate: none lost, each released once, at the
   time its deadline asked for.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import pytest

from conftest import REPO, wait_for

rclpy = pytest.importorskip('rclpy')
from builtin_interfaces.msg import Time  # noqa: E402

from cellos_audit.core import lineage  # noqa: E402
from cellos_audit.core.recording_reader import FileReport, iter_file, recording_files  # noqa: E402
from cellos_common.nodes import qos  # noqa: E402
from cellos_interfaces.msg import GateState, InferenceResult, Inspection  # noqa: E402
from cellos_interfaces.srv import DeferJob, LoadModel, SetEnergyOverride, UnloadModel  # noqa: E402
from cellos_vision.core.synthetic_camera import SyntheticCamera  # noqa: E402
from cellos_vision.core.vision_pipeline import frame_sha256  # noqa: E402

LINE = '/line1'
CELL = '/line1/cell_01'
MODELS = REPO / 'ros2_ws' / 'src' / 'cellos_vision' / 'cellos_vision' / 'models'
MODEL = MODELS / 'inspection_cnn.onnx'
CANDIDATE = MODELS / 'inspection_cnn_fallback.onnx'   # another file: another content id
TRACE = REPO / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv'
SEED = 4242
FLUSH_S = 0.5
KILL_LOSS_BOUND_S = 1.0 + 0.5     # flush period + the kill's own scheduling on 2 busy cores


def _active(processes, key: str) -> bool:
    return ']: active' in processes.log(key)


def start_recorder(processes, key: str, out) -> None:
    processes.start(key, 'audit_recorder_node', namespace=LINE, params={
        'autostart': True, 'cells': ['cell_01'], 'discover_cells': False, 'output_dir': str(out),
        'bag_name': 'line1_test', 'flush_period_s': FLUSH_S,
        'executor_status_topic': '/gpu0/executor/status', 'registry_topic': '/gpu0/executor/registry'})
    wait_for(lambda: _active(processes, key), 30.0, what=f'{key} active')


def test_recorder_records_the_line_across_a_sigkill_and_the_lineage_of_a_part(processes, ros_probe, tmp_path):
    out = tmp_path / 'audit'
    start_recorder(processes, 'recorder', out)
    model_list = tmp_path / 'models.yaml'
    model_list.write_text(f'models:\n  - {{name: inspection_cnn, path: {MODEL}, max_batch: 8}}\n')
    processes.start('executor', 'executor_node', namespace='/gpu0', params={
        'autostart': True, 'backend': 'onnxruntime', 'model_list': str(model_list),
        'cells': ['line1/cell_01']})
    processes.start('feed', 'energy_feed_node', namespace='/site', params={
        'autostart': True, 'trace_file': str(TRACE)})
    processes.start('gate', 'energy_gate_node', namespace=CELL, params={
        'autostart': True, 'job_store': str(tmp_path / 'jobs.sqlite3')})
    processes.start('arbiter', 'arbiter_node', namespace=CELL, params={
        'autostart': True, 'executor_status_topic': '/gpu0/executor/status'})
    probe = ros_probe
    seen: list[tuple[float, Inspection]] = []
    probe.subscribe(Inspection, f'{CELL}/vision/inspection', qos.status(), key='insp',
                    callback=lambda m: seen.append((time.time(), m)))
    results: list[tuple[float, InferenceResult]] = []
    probe.subscribe(InferenceResult, f'{CELL}/arbiter/result', qos.inference(), key='res',
                    callback=lambda m: results.append((time.time(), m)))
    processes.start('vision', 'vision_node', namespace=CELL, params={
        'autostart': True, 'source': 'synthetic', 'trigger': 'timer', 'timer_rate_hz': 20.0,
        'synthetic_seed': SEED, 'deadline_ms': 500.0, 'drift_enabled': False, 'annotate': False})
    wait_for(lambda: sum(m.verdict != Inspection.VERDICT_UNDECIDED for _, m in seen) >= 30, 60.0,
             what='30 decided inspections')

    # operator actions through services, each recorded with what, why and who served it
    res = probe.call(SetEnergyOverride, '/site/set_override', SetEnergyOverride.Request(
        active=True, dr_level=1, duration_s=2.0, reason='test: demand response drill'))
    assert res.success, res.message
    res = probe.call(LoadModel, '/gpu0/executor/load_model', LoadModel.Request(
        name='inspection_cnn_candidate', path=str(CANDIDATE)))
    assert res.success, res.message
    assert probe.call(UnloadModel, '/gpu0/executor/unload_model',
                      UnloadModel.Request(model='inspection_cnn_candidate')).success
    time.sleep(1.5)

    t_kill = time.time()
    processes.kill('recorder')
    killed = recording_files([out / 'line1_test'])
    assert [f.name for f in killed] == ['line1_test_0.mcap']
    report = FileReport(killed[0])
    last = max(r.log_time for r in iter_file(killed[0], report)) / 1e9
    assert not report.complete, 'a killed recorder cannot have closed its file'
    kill_loss = t_kill - last
    print(f'recorder SIGKILL: newest message in the killed file {kill_loss:.3f} s before the kill')
    assert kill_loss <= KILL_LOSS_BOUND_S

    time.sleep(1.0)                                   # the line runs on without its recorder
    start_recorder(processes, 'recorder2', out)
    t_restart = time.time()
    # DDS matches the new subscriptions with each publisher in its own time (seconds on busy cores)
    second = out / 'line1_test' / 'line1_test_1.mcap'
    wait_for(lambda: second.exists() and {'Inspection', 'InferenceResult'} <= {
        r.type.rsplit('/', 1)[1] for r in iter_file(second)}, 30.0, what='the restarted recorder hears the cell')
    print(f'restarted recorder matched the cell after {time.time() - t_restart:.2f} s')
    n = len(seen)
    wait_for(lambda: len(seen) >= n + 40, 30.0, what='40 more inspections with the recorder back')
    assert processes.stop('vision') == 0
    time.sleep(1.0)
    assert processes.stop('recorder2') == 0
    for key in ('executor', 'arbiter', 'gate', 'feed'):
        assert processes.procs[key].poll() is None, f'{key} died'

    bag = out / 'line1_test'
    assert [f.name for f in recording_files([bag])] == ['line1_test_0.mcap', 'line1_test_1.mcap']
    audit = lineage.load([bag])
    recorded = {d.part_id: d for d in audit.decisions}
    assert len(recorded) == len(audit.decisions), 'each decision once'

    # once a recorder hears a publisher, every message it publishes is in the recording (but the
    # last second before the kill)
    def heard(kind):
        return [min(r.log_time for r in iter_file(f) if r.type.endswith(kind)) / 1e9 for f in recording_files([bag])]
    (insp_0, insp_1), (res_0, res_1) = heard('/Inspection'), heard('/InferenceResult')

    def recording(t, first, again):
        return first <= t <= t_kill - KILL_LOSS_BOUND_S or t >= again + 0.2

    def sent(t, m):
        # when the publisher stamped it: a busy test process receives it later, and its arrival
        # here could fall after the restarted recorder matched while the message went out before
        stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        return min(t, stamp) if stamp > 0 else t
    expected = [m.part_id for t, m in seen if recording(sent(t, m), insp_0, insp_1)]
    missing = sorted(set(expected) - set(recorded))
    assert not missing, f'{len(missing)} published inspections not recorded: {missing[:20]}'
    joined = {d.request_id for d in audit.decisions if d.status == 'OK'}
    want = {m.request_id for t, m in results
            if m.status == 0 and recording(sent(t, m), max(insp_0, res_0), max(insp_1, res_1))}
    assert want and want <= joined, f'results not joined to their inspection: {sorted(want - joined)[:10]}'

    # the lineage of a decided part is its real chain
    probe_msgs = {m.part_id: m for _, m in seen}
    # (before the recorder heard the gate, the gate level of a decision is 'unknown', as it should be)
    first_gate = min(r.log_time for f in recording_files([bag]) for r in iter_file(f) if r.type.endswith('/GateState'))
    part = next(d for d in audit.decisions if d.status == 'OK' and d.verdict != 'UNDECIDED' and d.time_ns > first_gate)
    [d] = lineage.by_part(audit, part.part_id)
    camera = SyntheticCamera(SEED)
    assert d.frame_sha256 == frame_sha256(camera.frame(d.part_id - camera.first_part_id).image)
    assert d.model == 'inspection_cnn' and d.model_id == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert d.verdict == {0: 'PASS', 1: 'FAIL', 2: 'UNDECIDED'}[probe_msgs[d.part_id].verdict]
    assert d.confidence == pytest.approx(probe_msgs[d.part_id].confidence, rel=1e-6)
    assert d.gate_level in ('full', 'eco', 'critical-only', 'halt') and d.carbon_g_per_kwh > 0
    assert d.energy_wh > 0 and d.energy_source in ('model', 'rapl', 'nvml') and d.carbon_g > 0
    assert d.model_loaded['cause'] == 'model_list'

    actions = {a.action: a for a in audit.actions}
    assert actions['energy_override'].reason == 'test: demand response drill'
    assert actions['energy_override'].node == '/site/energy_feed' and actions['energy_override'].success
    assert actions['load_model'].service == '/gpu0/executor/load_model'
    assert 'unload_model' in actions
    changes = [(c.change, c.cause, c.model_name) for c in audit.registry]
    assert ('loaded', 'model_list', 'inspection_cnn') in changes
    assert ('loaded', 'service', 'inspection_cnn_candidate') in changes
    assert ('unloaded', 'service', 'inspection_cnn_candidate') in changes

    # the installed CLI answers the same
    cli = subprocess.run([sys.executable, '-m', 'cellos_audit.lineage_cli', 'part', str(d.part_id), str(bag)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and d.frame_sha256 in cli.stdout and d.model_id in cli.stdout, cli.stderr


def _defer(probe, job_id: str, duration_s: float, finish_in_s: float):
    t = time.time() + finish_in_s
    req = DeferJob.Request(job_id=job_id, duration_s=duration_s,
                           latest_finish=Time(sec=int(t), nanosec=int((t % 1) * 1e9)))
    return probe.call(DeferJob, f'{CELL}/energy/defer', req)


def test_deferred_jobs_survive_sigkill_none_lost_none_released_twice(processes, ros_probe, tmp_path):
    store = tmp_path / 'jobs.sqlite3'
    # no site feed: the gate sits at its safe level with no forecast, so a job is held to its latest start
    params = {'autostart': True, 'job_store': str(store), 'check_period_s': 0.1, 'deferral_margin_s': 0.5,
              'feed_topic': '/site/no_feed'}
    processes.start('gate1', 'energy_gate_node', namespace=CELL, params=params)
    states: list[tuple[float, GateState]] = []
    ros_probe.subscribe(GateState, f'{CELL}/energy/gate', qos.latched_state(), key='gate',
                        callback=lambda m: states.append((time.time(), m)))
    t0 = time.time()
    jobs = {'job_a': (1.0, 10.0), 'job_b': (1.0, 20.0), 'job_c': (1.0, 600.0)}   # duration, finish in
    for job_id, (duration, finish) in jobs.items():
        res = _defer(ros_probe, job_id, duration, finish)
        assert res.accepted, res.reason
    wait_for(lambda: states and set(states[-1][1].deferred_job_ids) == set(jobs), 10.0, what='three jobs waiting')

    processes.kill('gate1')
    processes.start('gate2', 'energy_gate_node', namespace=CELL, params=params)
    t_restart = time.time()
    t_up, first = wait_for(lambda: next(((t, m) for t, m in states if t > t_restart), None), 20.0,
                           what='the restarted gate')
    assert set(jobs) <= set(first.deferred_job_ids) | set(first.released_job_ids), 'a job was lost'
    released_a = wait_for(lambda: next((t for t, m in states if 'job_a' in m.released_job_ids), None), 20.0,
                          what='job_a released')
    due_a = t0 + 10.0 - 1.0 - 0.5          # its latest start: finish - duration - margin
    assert due_a - 1.0 <= released_a <= max(due_a, t_up) + 2.0, \
        f'job_a released {released_a - due_a:+.2f} s from its latest start (gate up {t_up - due_a:+.2f} s)'

    processes.kill('gate2')     # right after a release: it must not come again
    processes.start('gate3', 'energy_gate_node', namespace=CELL, params=params)
    t_restart = time.time()
    wait_for(lambda: any(t > t_restart and {'job_b', 'job_c'} <= set(m.deferred_job_ids) | set(m.released_job_ids)
                         and 'job_a' not in m.deferred_job_ids for t, m in states), 20.0,
             what='the third gate holds job_b and job_c, not job_a')
    wait_for(lambda: any(t > t_restart and 'job_b' in m.released_job_ids for t, m in states), 20.0,
             what='job_b released')
    again = _defer(ros_probe, 'job_a', 1.0, 60.0)
    assert not again.accepted and 'already released' in again.reason
    last = states[-1][1]
    assert list(last.deferred_job_ids) == ['job_c'] and {'job_a', 'job_b'} <= set(last.released_job_ids)
    logs = ''.join(processes.log(k) for k in ('gate1', 'gate2', 'gate3'))
    for job_id in ('job_a', 'job_b'):
        assert logs.count(f'released deferred job {job_id}:') == 1, f'{job_id} released more than once'
    assert 'job_c' not in ''.join(line for line in logs.splitlines() if 'released deferred job' in line)
    assert processes.stop('gate3') == 0
