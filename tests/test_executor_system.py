"""Executor + arbiters in separate processes over real DDS, real ONNX Runtime inference.

The assertions are about answers, not about speed: every request ends with exactly one answer
and its reason, within a bound generous enough for a busy 2-core machine (the figures are the
benchmarks'). Requests whose status could depend on how fast the machine is get a deadline far
beyond any stall (LONG_S), or accept each status that is a correct answer in the race.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import wait_for
from inference_client import CellClient

import testmodels
from cellos_inference.core.inference_types import Status
from cellos_common.nodes import qos
from cellos_inference.nodes.convert_inference import result_outputs
from cellos_interfaces.msg import ExecutorStatus, GateState
from cellos_interfaces.srv import ListModels, LoadModel, UnloadModel

CELLS = ('/line1/cell1', '/line1/cell2')
X = {'x': np.arange(4, dtype=np.float32).reshape(1, 4)}
IMG = {'image': np.zeros((1, 3, 64, 64), np.float32)}
LONG_S = 10.0     # a deadline no stall of a busy machine reaches: the status cannot be a timeout
WAIT_S = 15.0     # how long the test waits for an answer that must come


@pytest.fixture
def models(tmp_path):
    testmodels.affine(tmp_path / 'affine.onnx')
    testmodels.conv_net(tmp_path / 'conv.onnx', size=64, channels=32, layers=3)
    # heavy compute (~75 ms here), small input: queues build without big DDS bursts
    testmodels.conv_net(tmp_path / 'slow.onnx', size=64, channels=128, layers=16)
    (tmp_path / 'models.yaml').write_text(
        'models:\n  - {name: affine, path: affine.onnx, max_batch: 8}\n'
        '  - {name: conv, path: conv.onnx, max_batch: 4}\n'
        '  - {name: slow, path: slow.onnx, max_batch: 1}\n')
    return tmp_path


def start_executor(processes, models, **extra):
    params = dict(autostart=True, backend='onnxruntime', model_list=str(models / 'models.yaml'),
                  cells=['line1/cell1', 'line1/cell2'], max_queue_per_cell=4, max_queue_delay_ms=2.0,
                  status_period_s=0.1)
    params.update(extra)
    return processes.start('executor', 'executor_node', namespace='/gpu0', params=params)


def start_arbiters(processes, **extra):
    for ns in CELLS:
        params = dict(autostart=True, max_in_flight=64, tick_s=0.005, executor_timeout_s=0.6,
                      use_energy_gate=ns.endswith('cell2'))
        params.update(extra)
        processes.start(f'arbiter{ns}', 'arbiter_node', namespace=ns, params=params)


def ready(client, timeout=30.0):
    """First request goes through once discovery is done (the arbiter holds it till then)."""
    def ok():
        key = client.send('affine', X, task='warmup', deadline_s=3.0)
        try:
            return client.result(key, 4.0).status == Status.OK
        except AssertionError:
            return False
    wait_for(ok, timeout, what=f'{client.ns} served')
    with client.lock:   # a warm-up sent before discovery finished never reached the arbiter
        for key in [k for k in client.sent if k[0] == 'warmup']:
            del client.sent[key]


def test_statuses_isolation_services(processes, ros_probe, models):
    start_executor(processes, models)
    start_arbiters(processes)
    c1, c2 = CellClient(ros_probe, CELLS[0]), CellClient(ros_probe, CELLS[1])
    raw1 = CellClient(ros_probe, CELLS[0], 'inference/request', 'inference/result')
    raw2 = CellClient(ros_probe, CELLS[1], 'inference/request', 'inference/result')
    ros_probe.subscribe(ExecutorStatus, '/gpu0/executor/status', qos.status(), key='status')
    ready(c1)
    ready(c2)

    ok = c1.result(c1.send('affine', X, deadline_s=LONG_S), WAIT_S)
    assert ok.status == Status.OK and ok.backend == 'onnxruntime-cpu', ok.reason
    np.testing.assert_allclose(result_outputs(ok)['y'], 2 * X['x'] + 1)
    assert (ok.line_id, ok.cell_id) == ('line1', 'cell1') and len(ok.model_id) == 64

    bad = {
        Status.UNKNOWN_MODEL: c1.send('nope', X, deadline_s=LONG_S),
        Status.BAD_DTYPE: c1.send('affine', {'x': X['x'].astype(np.float64)}, deadline_s=LONG_S),
        Status.BAD_SHAPE: c1.send('affine', {'x': np.zeros((1, 5), np.float32)}, deadline_s=LONG_S),
        Status.NON_FINITE: c1.send('affine', {'x': np.array([[0, np.inf, 0, 0]], np.float32)}, deadline_s=LONG_S),
        Status.REJECTED: c1.send('affine', X, cell_ns='line1/cell2', deadline_s=LONG_S),
    }
    # 'slow' (~75 ms of compute) cannot meet a 50 ms deadline: the executor refuses it with DEADLINE
    # when the request reaches it in time, the arbiter answers TIMEOUT at the deadline when it does
    # not (a busy machine): either is right; silence or a late answer is not
    late = c1.send('slow', IMG, deadline_s=0.05)
    # wrong byte size: the shape says 4 floats, the data holds 3
    from cellos_inference.nodes.convert_inference import make_request
    msg = make_request(request_id=999, line_id='line1', cell_id='cell1', task='inspection', model='affine',
                       priority=1, deadline_s=time.time() + LONG_S, inputs=X)
    msg.inputs[0].data = msg.inputs[0].data[:12]
    c1.sent[('inspection', 999)] = (time.time(), 0)
    c1.pub.publish(msg)
    bad[Status.BAD_SIZE] = ('inspection', 999)
    for status, key in bad.items():
        r = c1.result(key, WAIT_S)
        assert (r.status, bool(r.reason)) == (status, True), (status, r.status, r.reason)
    r = c1.result(late, WAIT_S)
    assert r.status in (Status.DEADLINE, Status.TIMEOUT) and r.reason, (r.status, r.reason)
    lateness = c1.results[late][0] - c1.sent[late][1]
    assert lateness < 2.0, f'answered {lateness:.2f} s after its deadline'

    # queue full: one runs, max_queue_per_cell=4 wait, the rest are refused at once (the 16 leave
    # the probe in one burst and reach the executor together however busy the machine is)
    keys = [c2.send('slow', IMG, deadline_s=60.0) for _ in range(16)]
    got = [c2.result(k, 60.0).status for k in keys]
    assert got.count(Status.QUEUE_FULL) >= 1 and got.count(Status.OK) >= 5, got
    assert set(got) == {Status.OK, Status.QUEUE_FULL}, got

    # energy gate hook (cell2 follows its gate): background is gated in ECO, critical passes
    gate_pub = ros_probe.node.create_publisher(GateState, '/line1/cell2/energy/gate',
                                               qos.latched_state())
    gate_pub.publish(GateState(line_id='line1', cell_id='cell2', level=GateState.LEVEL_ECO, reason='test peak'))

    def gated():
        r = c2.result(c2.send('affine', X, task='background_score', priority=2, deadline_s=LONG_S), WAIT_S)
        return r.status == Status.GATED and 'test peak' in r.reason
    wait_for(gated, 30, what='GATED status')
    assert c2.result(c2.send('affine', X, priority=0, deadline_s=LONG_S), WAIT_S).status == Status.OK

    # a request whose cell does not match its topic is answered on that topic only
    raw1.send('affine', X, cell_ns='line1/cell2', request_id=2**40, deadline_s=LONG_S)
    r = raw1.result(('inspection', 2**40), WAIT_S)
    assert r.status == Status.REJECTED and 'does not match' in r.reason
    time.sleep(0.3)
    assert ('inspection', 2**40) not in raw2.results
    # isolation: nothing of cell1 ever reached cell2's topics, and vice versa
    assert all((m.line_id, m.cell_id) == ('line1', 'cell2') for _, m in raw2.results.values())
    assert all((m.line_id, m.cell_id) == ('line1', 'cell1') for _, m in c1.results.values())
    assert all((m.line_id, m.cell_id) == ('line1', 'cell2') for _, m in c2.results.values())
    assert c1.duplicates == c2.duplicates == 0

    # services
    names = sorted(m.name for m in ros_probe.call(ListModels, '/gpu0/executor/list_models',
                                                  ListModels.Request()).models)
    assert names == ['affine', 'conv', 'slow']
    resp = ros_probe.call(LoadModel, '/gpu0/executor/load_model',
                          LoadModel.Request(name='affine2', path=str(models / 'affine.onnx')))
    assert resp.success and resp.model.name == 'affine2' or 'affine' in resp.message
    resp = ros_probe.call(LoadModel, '/gpu0/executor/load_model',
                          LoadModel.Request(name='missing', path=str(models / 'none.onnx')))
    assert not resp.success and 'no file' in resp.message
    assert ros_probe.call(UnloadModel, '/gpu0/executor/unload_model',
                          UnloadModel.Request(model='conv')).success
    assert c1.result(c1.send('conv', IMG, deadline_s=LONG_S), WAIT_S).status == Status.UNKNOWN_MODEL

    status = wait_for(lambda: ros_probe.received('status'), 10, what='executor status')[-1]
    cells = {f'{c.line_id}/{c.cell_id}': c for c in status.cells}
    assert set(cells) == {'line1/cell1', 'line1/cell2'} and status.backend.startswith('onnxruntime')
    # the status counts what cell2 was answered above (at least)
    served, refused = got.count(Status.OK), got.count(Status.QUEUE_FULL)
    assert cells['line1/cell2'].served >= served and cells['line1/cell2'].rejected >= refused, \
        (cells['line1/cell2'], served, refused)
    assert sum(c.compute_share for c in cells.values()) == pytest.approx(1.0, abs=0.01)
    assert cells['line1/cell2'].compute_ms_p50 > 0 and status.max_batch_seen >= 1

    assert processes.stop('executor') == 0                # clean Ctrl-C
    r = c1.result(c1.send('slow', IMG, deadline_s=1.0), WAIT_S)
    assert r.status == Status.TIMEOUT and r.reason


def test_executor_killed_mid_load_every_request_answered(processes, ros_probe, models):
    start_executor(processes, models, max_queue_per_cell=64)
    start_arbiters(processes)
    clients = [CellClient(ros_probe, ns) for ns in CELLS]
    for c in clients:
        ready(c)
    # paced like cells at a 200 Hz cycle: an unpaced burst of 3 MB overruns the transport's
    # buffers and DDS then repairs the loss only at its next heartbeat (seconds)
    for i in range(30):
        for c in clients:
            # the first ones time out at their deadline, the rest when the executor is seen lost
            c.send('slow', IMG, deadline_s=0.4 if i < 5 else 8.0)
        time.sleep(0.005)
    time.sleep(0.05)
    before_kill = time.time()
    processes.kill('executor')
    killed = time.time()
    # The arbiter declares the executor lost executor_timeout_s (0.6 s) after its last status,
    # published at most status_period_s (0.1 s) before the kill: a request whose deadline came
    # before that must have been answered at its deadline, not when the loss was noticed. The
    # 8 s ones must have been answered on the loss, long before their deadline. How late an
    # answer leaves on a busy machine is bounded generously (the tight figure is a benchmark's).
    at_deadline_until = before_kill + 0.6 - 0.1
    for c in clients:
        wait_for(lambda c=c: c.answered() == len(c.sent), 15, what=f'{c.ns}: all answered')
        statuses = {}
        for key, (sent, deadline) in c.sent.items():
            got_at, msg = c.results[key]
            statuses[msg.status] = statuses.get(msg.status, 0) + 1
            assert msg.status in (Status.OK, Status.TIMEOUT, Status.DEADLINE), (msg.status, msg.reason)
            assert got_at <= deadline + 1.0, f'{key} answered {got_at - deadline:.3f} s after its deadline'
            if msg.status == Status.TIMEOUT and deadline <= at_deadline_until:
                assert 'before the deadline' in msg.reason, (key, msg.reason)
        assert statuses.get(Status.TIMEOUT, 0) >= 10, statuses
        assert c.duplicates == 0
    lost = [m for c in clients for t, m in c.results.values() if 'executor lost' in m.reason]
    last = max(t for c in clients for t, m in c.results.values())
    assert lost and last - killed < 5.0, f'{len(lost)} answered as lost, the last {last - killed:.2f} s after the kill'

    start_executor(processes, models)                    # the executor returns: cells reconnect
    for c in clients:
        wait_for(lambda c=c: c.result(c.send('affine', X, deadline_s=3.0), 5.0).status == Status.OK,
                 45, what=f'{c.ns} reconnected')
