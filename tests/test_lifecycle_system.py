"""The lifecycle_manager node over real DDS: it brings separate node processes up as a whole
(configure all, then activate all), takes them down and up again on its services, reports a
node it cannot reach, and exits cleanly on Ctrl-C.
"""
from __future__ import annotations

import time

from lifecycle_msgs.msg import State
from std_srvs.srv import Trigger

from cellos_common.nodes.lifecycle_client import LifecycleClient
from conftest import wait_for

LINE = '/tlm'
CELLS = ('cell_a', 'cell_b')


def start_cells(processes):
    for c in CELLS:
        processes.start(c, 'timing_node', namespace=f'{LINE}/{c}', params={'period_ms': 50.0})


def states(probe):
    lc = LifecycleClient(probe.node)
    return [lc.state(f'{LINE}/{c}/timing', 5.0) for c in CELLS]


def test_manager_brings_the_cells_up_and_down(processes, ros_probe):
    start_cells(processes)
    t0 = time.monotonic()
    processes.start('manager', 'lifecycle_manager', namespace=LINE, params={
        'autostart': True, 'node_names': [f'{c}/timing' for c in CELLS], 'transition_timeout_s': 15.0})
    wait_for(lambda: states(ros_probe) == [State.PRIMARY_STATE_ACTIVE] * 2, 30.0,
             what='both timing nodes active')
    print(f'both cells active {time.monotonic() - t0:.2f} s after the manager started')
    log = processes.log('manager')
    assert f'managing 2 nodes: {LINE}/cell_a/timing, {LINE}/cell_b/timing' in log
    wait_for(lambda: 'startup: all 2 nodes active' in processes.log('manager'), 10.0, what='startup log line')
    res = ros_probe.call(Trigger, f'{LINE}/lifecycle_manager/is_active', Trigger.Request())
    assert res.success, res.message

    res = ros_probe.call(Trigger, f'{LINE}/lifecycle_manager/shutdown', Trigger.Request(), timeout=20.0)
    assert res.success, res.message
    assert states(ros_probe) == [State.PRIMARY_STATE_UNCONFIGURED] * 2
    res = ros_probe.call(Trigger, f'{LINE}/lifecycle_manager/is_active', Trigger.Request())
    assert not res.success and 'unconfigured' in res.message

    res = ros_probe.call(Trigger, f'{LINE}/lifecycle_manager/startup', Trigger.Request(), timeout=20.0)
    assert res.success, res.message
    assert states(ros_probe) == [State.PRIMARY_STATE_ACTIVE] * 2

    assert processes.stop('manager', timeout=10.0) == 0
    # the managed nodes outlive their manager, still active
    assert states(ros_probe) == [State.PRIMARY_STATE_ACTIVE] * 2


def test_manager_reports_a_node_it_cannot_reach(processes, ros_probe):
    processes.start('cell_a', 'timing_node', namespace=f'{LINE}x/cell_a', params={'period_ms': 50.0})
    # the timeout is how long the manager waits for each node's services: long enough for it to
    # discover cell_a on a busy machine, and what the missing node costs this test
    processes.start('manager', 'lifecycle_manager', namespace=f'{LINE}x', params={
        'autostart': False, 'node_names': ['cell_a/timing', 'missing/timing'], 'transition_timeout_s': 6.0})
    lc = LifecycleClient(ros_probe.node)
    assert lc.state(f'{LINE}x/cell_a/timing', 30.0) == State.PRIMARY_STATE_UNCONFIGURED
    res = ros_probe.call(Trigger, f'{LINE}x/lifecycle_manager/startup', Trigger.Request(), timeout=40.0)
    assert not res.success
    assert res.message == f'failed: {LINE}x/missing/timing'
    assert 'no lifecycle services' in processes.log('manager')
    # the reachable node is up all the same
    assert lc.state(f'{LINE}x/cell_a/timing', 10.0) == State.PRIMARY_STATE_ACTIVE


def test_manager_refuses_bad_parameters(processes):
    proc = processes.start('bad', 'lifecycle_manager', namespace=f'{LINE}y', params={
        'node_names': ['cell_a/timing', f'{LINE}y/cell_a/timing']})
    assert proc.wait(timeout=30.0) == 2
    assert "parameter 'node_names'" in processes.log('bad') and 'listed twice' in processes.log('bad')


def test_ctrl_c_during_bring_up_exits_promptly(processes):
    processes.start('manager', 'lifecycle_manager', namespace=f'{LINE}z', params={
        'autostart': True, 'node_names': ['nobody/timing'], 'transition_timeout_s': 60.0})
    wait_for(lambda: 'startup: configuring' in processes.log('manager'), 30.0, what='bring-up started')
    t0 = time.monotonic()
    # promptly: not after the 60 s transition timeout it is waiting in (the bound allows for a busy machine)
    assert processes.stop('manager', timeout=15.0) == 0
    assert time.monotonic() - t0 < 10.0
