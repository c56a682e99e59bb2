"""The executor keeps its promises over real DDS, between real processes: zero-copy requests
through the cell's shared-memory region and the inline path side by side, regions owned by one
cell and reclaimed when its process is SIGKILLed, unknown cells refused with the reason, an
oversized or malformed request answered, forged results and gate states refused by the arbiter.

Clock steps of the executor host are tested below the node (test_convert_inference: a request's
time left comes from the sender's stamps whatever the executor's wall clock; test_executor_scheduler:
a clock that steps back never inflates the work ahead): libfaketime, the one way to step a process's
clock here, also steps CLOCK_MONOTONIC and, preloaded into the executor (even with FAKETIME=+0),
left 2 of 3 requests unanswered (its futex/timed-wait interposition and the multi-threaded rclpy
executor do not go together), so a system test with it would test libfaketime.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import testmodels
from diagnostic_msgs.msg import DiagnosticArray

from conftest import wait_for
from inference_client import CellClient
from test_executor_system import IMG, X, models, ready, start_executor  # noqa: F401 (fixture)

from cellos_common.nodes import qos
from cellos_common.nodes.lifecycle_client import LifecycleClient
from cellos_inference.core.inference_types import Status
from cellos_inference.core.shm_transport import ClientRegion, boot_id, supported
from cellos_inference.nodes.convert_inference import make_request, result_outputs
from cellos_interfaces.msg import GateState, InferenceResult, Tensor
from cellos_interfaces.srv import ListModels, LoadModel, RegisterShm


HERE = Path(__file__).resolve().parent


def diag_values(probe, name_part: str) -> dict:
    """Key values of the latest /diagnostics status whose name contains ``name_part``."""
    for array in reversed(probe.received('diag')):
        for st in array.status:
            if name_part in st.name:
                return {kv.key: kv.value for kv in st.values}
    return {}


def start_arbiter(processes, ns, **extra):
    params = dict(autostart=True, max_in_flight=64, tick_s=0.005, executor_timeout_s=0.6)
    params.update(extra)
    processes.start(f'arbiter{ns}', 'arbiter_node', namespace=ns, params=params)


@pytest.mark.skipif(not supported()[0], reason=f'no shared-memory regions on this platform: {supported()[1]}')
def test_shared_memory_and_inline_paths_regions_owned_and_reclaimed(processes, ros_probe, models):  # noqa: F811
    start_executor(processes, models, max_queue_per_cell=64)
    start_arbiter(processes, '/line1/cell1', transport='shm')
    start_arbiter(processes, '/line1/cell2', transport='inline')
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
    shm, inline = CellClient(ros_probe, '/line1/cell1'), CellClient(ros_probe, '/line1/cell2')
    ready(shm)
    ready(inline)
    wait_for(lambda: 'shared memory' in diag_values(ros_probe, '/line1/cell1/arbiter: arbiter').get('transport', ''),
             10, what='cell1 registered its region')
    for client in (shm, inline):
        for k in range(4):
            x = {'x': np.full((1, 4), float(k), np.float32)}
            r = client.result(client.send('affine', x))
            assert r.status == Status.OK, r.reason
            np.testing.assert_allclose(result_outputs(r)['y'], 2 * x['x'] + 1)
        r = client.result(client.send('conv', IMG))
        assert r.status == Status.OK and result_outputs(r)['scores'].shape == (1, 8)
    counts = wait_for(lambda: (lambda v: v if int(v.get('requests in shared memory', 0)) >= 5
                               and int(v.get('requests inline', 0)) >= 5 else None)(
        diag_values(ros_probe, '/gpu0/executor: cells')), 5, what='both paths counted')
    assert int(counts['regions registered']) >= 1
    wait_for(lambda: 'inline' in diag_values(ros_probe, '/line1/cell2/arbiter: arbiter').get('transport', ''),
             10, what='cell2 says it sends inline')     # diagnostics come at 1 Hz

    # a region serves only the cell that registered it: cell1's region named on cell2's topic
    own = ClientRegion('line1/cell1', 2, 4096)
    try:
        resp = ros_probe.call(RegisterShm, '/gpu0/executor/register_shm', RegisterShm.Request(
            line_id='line1', cell_id='cell1', pid=own.pid, fd=own.fd, size=own.size, nonce=list(own.nonce),
            boot_id=boot_id()))
        assert resp.success and resp.handle, resp.message
        refs, out_off, out_size = own.write_inputs(0, {'x': X['x']})
        raw2 = CellClient(ros_probe, '/line1/cell2', 'inference/request', 'inference/result')
        msg = make_request(request_id=77, line_id='line1', cell_id='cell2', task='inspection', model='affine',
                           priority=1, deadline_s=time.time() + 3, inputs={})
        msg.inputs = [Tensor(name='x', dtype='float32', shape=[1, 4], shm_offset=refs[0].offset,
                             shm_size=refs[0].size)]
        msg.shm_region, msg.shm_output_offset, msg.shm_output_size = resp.handle, out_off, out_size
        msg.header.stamp = ros_probe.node.get_clock().now().to_msg()
        r = raw2.result(raw2.send_msg(msg))
        assert r.status == Status.REJECTED and 'another cell' in r.reason and not r.outputs
        # a foreign cell cannot register in another's name from another host, nor a region that is not one
        bad = ros_probe.call(RegisterShm, '/gpu0/executor/register_shm', RegisterShm.Request(
            line_id='line1', cell_id='cell1', pid=own.pid, fd=own.fd, size=own.size, nonce=[0] * 16,
            boot_id=boot_id()))
        assert not bad.success and 'nonce' in bad.message
    finally:
        own.close()

    # SIGKILL cell1's process with requests in flight: the executor notices, drops its region
    keys = [shm.send('slow', IMG, deadline_s=20.0) for _ in range(6)]
    time.sleep(0.3)
    processes.kill('arbiter/line1/cell1')
    wait_for(lambda: int(diag_values(ros_probe, '/gpu0/executor: cells').get('regions reclaimed (owner ended)', 0))
             >= 1, 5, what='the dead cell\'s region reclaimed')
    assert keys
    # regions are memfds: nothing of cellos is left in /dev/shm
    assert not [f for f in os.listdir('/dev/shm') if 'cellos' in f]
    # the other cell keeps being served
    assert inline.result(inline.send('affine', X)).status == Status.OK


def test_unknown_cells_refused_with_the_reason_allowed_patterns_served(processes, ros_probe, models):  # noqa: F811
    start_executor(processes, models, cells=['line1/cell1'], allowed_cells=['line2/cell_*'],
                   discovery_period_s=0.2)
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
    stranger = CellClient(ros_probe, '/line1/cell_99', 'inference/request', 'inference/result')
    allowed = CellClient(ros_probe, '/line2/cell_05', 'inference/request', 'inference/result')

    def answered(client, status):
        def check():
            key = client.send('affine', X, deadline_s=2.0)
            try:
                return client.result(key, 1.0)
            except AssertionError:
                return None
        r = wait_for(check, 20, what=f'{client.ns} answered')
        assert r.status == status, (r.status, r.reason)
        return r
    r = answered(stranger, Status.REJECTED)
    assert 'not served by this executor' in r.reason and 'line2/cell_*' in r.reason
    assert answered(allowed, Status.OK).backend == 'onnxruntime-cpu'
    values = wait_for(lambda: (lambda v: v if 'requests from unknown cells' in v else None)(
        diag_values(ros_probe, '/gpu0/executor: cells')), 5, what='unknown cells counted in diagnostics')
    assert 'line1/cell_99' in values['refused'] and 'line2/cell_05' in values['served']
    assert int(values['requests from unknown cells']) >= 1
    assert values['discover_cells'] == 'False'


def test_oversized_and_malformed_requests_answered_others_keep_their_rate(processes, ros_probe, models,  # noqa: F811
                                                                          tmp_path):
    start_executor(processes, models, max_request_mb=8.0, max_queue_per_cell=64)
    start_arbiter(processes, '/line1/cell1')
    start_arbiter(processes, '/line1/cell2')
    victim, sender = CellClient(ros_probe, '/line1/cell2'), CellClient(ros_probe, '/line1/cell1')
    direct = CellClient(ros_probe, '/line1/cell1', 'inference/request', 'inference/result')
    ready(victim)
    ready(sender)

    def victim_rate(seconds, misses=None):
        """Closed loop, one request at a time: requests answered OK per second.

        Each is answered within its 2 s deadline plus 3 s (a loaded CI machine); a miss (DEADLINE
        from the executor, TIMEOUT from the arbiter) is kept in ``misses``.
        """
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            r = victim.result(victim.send('affine', X), 5.0)
            if r.status == Status.OK:
                n += 1
            else:
                assert misses is not None and r.status in (Status.DEADLINE, Status.TIMEOUT), (r.status, r.reason)
                misses.append(f'{time.monotonic() - t0:.2f} s: {r.reason}')
        return n / seconds
    before = victim_rate(2.0)

    # 50 MB: refused at the sender by make_request, by the arbiter, and by the executor directly
    huge = {'x': np.zeros((1, 4, 3_276_800), np.float32)}          # 52 MB
    with pytest.raises(ValueError, match='inline path carries at most'):
        make_request(request_id=1, line_id='line1', cell_id='cell1', task='t', model='affine', priority=1,
                     deadline_s=time.time() + 5, inputs=huge)
    # a hostile process of its own sends them (in this process, its 52 MB copies would hold up the
    # victim's client, not the line)
    go, out = tmp_path / 'go', tmp_path / 'flood.json'
    processes.start('flood', sys.executable, extra_args=[str(HERE / 'flood_sender.py'), '--cell', 'line1/cell1',
                                                         '--mb', '52', '--count', '4', '--go', str(go),
                                                         '--out', str(out)])
    wait_for(lambda: Path(f'{out}.ready').exists(), 30, what='flood sender matched')
    rate, misses = {}, []
    t = threading.Thread(target=lambda: rate.setdefault('during', victim_rate(4.0, misses)))
    t.start()
    go.touch()
    flood = wait_for(lambda: out.exists() and json.loads(out.read_text()), 45, what='flood sender done')
    t.join()
    after = victim_rate(2.0)
    print(f'\n50 MB answered after {", ".join(f"{w:.2f}" if w else "-" for _, w, _, _ in flood)} s; victim '
          f'rate before {before:.0f}/s, during {rate["during"]:.0f}/s, after {after:.0f}/s; deadline misses: {misses}')
    for topic, wait, status, reason in flood:
        assert status == Status.BAD_SIZE and 'at most' in reason, (topic, status, reason)
        assert wait < 3.0                         # within a second on a quiet machine; generous here
    # every victim request was answered (above) and it is served during and after the flood. How much
    # of its rate it keeps is not asserted: 25-98 % in 10 runs, and in most runs one victim request
    # waits past its 2 s deadline (answered TIMEOUT): stamped, it spent 2.3 s between its arbiter's
    # publish and the executor's take, inside DDS, while the executor's participant took in the
    # 52 MB messages (README, Known limits)
    assert rate['during'] > 0 and after > 0

    # malformed: each gets its explicit status, nothing vanishes
    def req(rid, **kw):
        m = make_request(request_id=rid, line_id='line1', cell_id='cell1', task='inspection', model='affine',
                         priority=1, deadline_s=time.time() + 3, inputs=X)
        m.header.stamp = ros_probe.node.get_clock().now().to_msg()
        for k, v in kw.items():
            setattr(m, k, v)
        return m
    cases = {
        Status.REJECTED: [req(601, priority=7), req(602, task='t' * 300), req(603, inputs=[X_T] * 17),
                          req(604, inputs=[Tensor(name='x', dtype='float32', shape=[1, 4], data=b'\0' * 16,
                                                  shm_size=16)]),
                          req(605, shm_region=12345)],
        Status.BAD_SHAPE: [req(606, inputs=[Tensor(name='x', dtype='float32', shape=[1] * 9, data=b'\0' * 4)])],
        Status.BAD_SIZE: [req(607, inputs=[Tensor(name='x', dtype='float32', shape=[2**31, 4], data=b'')])],
        Status.DEADLINE: [req(608, deadline=ros_probe.node.get_clock().now().to_msg())],
    }
    for status, msgs in cases.items():
        for m in msgs:
            direct.send_msg(m)
            r = direct.result((m.task[:64], m.request_id), 5.0)     # the answer carries the task cut to 64
            assert r.status == status and r.reason, (m.request_id, status, r.status, r.reason)
    assert direct.result(direct.send('affine', X)).status == Status.OK


X_T = Tensor(name='x', dtype='float32', shape=[1, 4], data=np.zeros((1, 4), np.float32).tobytes())


def test_forged_results_and_gate_states_do_not_reach_the_task(processes, ros_probe, models):  # noqa: F811
    start_executor(processes, models)
    start_arbiter(processes, '/line1/cell1', use_energy_gate=True)
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
    client = CellClient(ros_probe, '/line1/cell1')
    ready(client)
    forger = ros_probe.node.create_publisher(InferenceResult, '/line1/cell1/inference/result', qos.inference())
    key = client.send('slow', IMG, deadline_s=10.0)
    for fid in range(1, 40):     # every forward id the arbiter may have used: OK with made-up outputs
        forger.publish(InferenceResult(request_id=fid, line_id='line1', cell_id='cell1', task='inspection',
                                       status=0, outputs=[X_T]))
    forger.publish(InferenceResult(request_id=1, status=200))          # and an unknown status
    r = client.result(key, 10.0)
    assert r.status == Status.OK and r.backend == 'onnxruntime-cpu' and r.compute_ms > 0
    assert result_outputs(r)['scores'].shape == (1, 8)
    values = wait_for(lambda: (lambda v: v if int(v.get('result refused (not from the executor)', 0)) >= 1
                               else None)(diag_values(ros_probe, '/line1/cell1/arbiter: arbiter')), 5,
                      what='forged results counted')
    assert values['executor'] == 'reachable'

    gate = ros_probe.node.create_publisher(GateState, '/line1/cell1/energy/gate', qos.latched_state())
    gate.publish(GateState(line_id='line1', cell_id='cell1', level=4, reason='forged'))   # latched, bad level
    wait_for(lambda: int(diag_values(ros_probe, '/line1/cell1/arbiter: arbiter').get('gate states refused', 0)) >= 1, 5,
             what='bad gate level refused')
    assert client.result(client.send('affine', X)).status == Status.OK       # the arbiter lives on


def test_a_model_load_holds_up_neither_list_models_nor_the_lifecycle(processes, ros_probe, models):  # noqa: F811
    """A model load takes seconds (minutes for a TensorRT build): it holds one thread of the
    executor's pool and its own callback group, never the services the cells and the lifecycle
    manager call meanwhile.
    """
    testmodels.conv_net(models / 'big.onnx', size=64, channels=192, layers=20)
    start_executor(processes, models)
    lc = LifecycleClient(ros_probe.node)
    assert lc.state('/gpu0/executor', 30.0) is not None
    loaded = {}

    def load():
        t0 = time.monotonic()
        loaded['response'] = ros_probe.call(LoadModel, '/gpu0/executor/load_model', LoadModel.Request(
            name='big', path=str(models / 'big.onnx'), max_batch=4), timeout=120.0)
        loaded['s'] = time.monotonic() - t0
    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.3)
    answers = []
    while loader.is_alive() and len(answers) < 5:
        t0 = time.monotonic()
        models_now = ros_probe.call(ListModels, '/gpu0/executor/list_models', ListModels.Request(), timeout=10.0)
        state = lc.state('/gpu0/executor', 10.0)
        answers.append((time.monotonic() - t0, loader.is_alive(), sorted(m.name for m in models_now.models), state))
    loader.join()
    assert loaded['response'].success, loaded['response'].message
    during = [a for a in answers if a[1]]
    assert during, f'the load ({loaded["s"]:.1f} s) ended before a first list_models was answered: {answers}'
    assert all('big' not in names and state is not None for _, _, names, state in during), answers
    print(f'\nload {loaded["s"]:.1f} s; list_models + get_state during it: '
          + ', '.join(f'{s:.2f} s' for s, *_ in during))
