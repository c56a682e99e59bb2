"""Supervision over real DDS, with real processes killed by SIGKILL:

1. under the lifecycle manager: a managed node's process is killed and started again (what
   launch_ros' respawn does; launch itself is not installed here, the plan's respawn settings are
   checked statically): the manager reports it missing, brings it back to active on its own and
   counts it in its diagnostics;
2. under the runner (`make run`): a killed cell process is restarted with its nodes brought up
   again, the cell locks again, and the summary counts the restart.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, wait_for

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State  # noqa: E402

from cellos_common.nodes import qos  # noqa: E402
from cellos_common.nodes.lifecycle_client import LifecycleClient  # noqa: E402

LINE = '/tsup'


def manager_values(probe) -> dict:
    for arr in reversed(probe.received('diag')):
        for s in arr.status:
            if s.name == f'{LINE}/lifecycle_manager: managed nodes':
                return {kv.key: kv.value for kv in s.values} | {'_message': s.message}
    return {}


def test_the_manager_brings_a_respawned_node_back_to_active(processes, ros_probe):
    def start(cell):
        processes.start(cell, 'timing_node', namespace=f'{LINE}/{cell}', params={'period_ms': 50.0})
    for cell in ('cell_a', 'cell_b'):
        start(cell)
    processes.start('manager', 'lifecycle_manager', namespace=LINE, params={
        'autostart': True, 'node_names': ['cell_a/timing', 'cell_b/timing'], 'transition_timeout_s': 20.0,
        'watch_period_s': 0.5})
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
    lc = LifecycleClient(ros_probe.node)
    wait_for(lambda: [lc.state(f'{LINE}/{c}/timing', 3.0) for c in ('cell_a', 'cell_b')]
             == [State.PRIMARY_STATE_ACTIVE] * 2, 30.0, what='both timing nodes active')

    processes.kill('cell_a')                           # SIGKILL: no cleanup, no goodbye
    wait_for(lambda: 'does not answer' in processes.log('manager'), 20.0, what='the manager noticing the death')
    t0 = time.monotonic()
    start('cell_a')                                    # the respawn
    wait_for(lambda: 'cell_a/timing active again (1 time(s)' in processes.log('manager'), 30.0,
             what='the manager bringing the respawned node up again')
    print(f'respawned node active again {time.monotonic() - t0:.2f} s after its process started')
    assert lc.state(f'{LINE}/cell_a/timing', 3.0) == State.PRIMARY_STATE_ACTIVE
    assert lc.state(f'{LINE}/cell_b/timing', 3.0) == State.PRIMARY_STATE_ACTIVE   # the rest untouched
    values = wait_for(lambda: (v := manager_values(ros_probe)) and v.get('rebrought') == '1' and v, 10.0,
                      what='the restart counted in the manager diagnostics')
    assert values[f'rebrought {LINE}/cell_a/timing'] == '1' and values[f'{LINE}/cell_a/timing'] == 'active'
    assert 'brought back up' in values['_message']
    assert processes.procs['manager'].poll() is None
    assert processes.stop('manager') == 0


def children_of(pid: int) -> dict[int, str]:
    out = {}
    for d in Path('/proc').iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_the_runner_restarts_a_killed_process_and_counts_it(tmp_path):
    summary = tmp_path / 'summary.json'
    env = {**os.environ, 'CELLOS_LOG_DIR': str(tmp_path / 'line')}
    out = open(tmp_path / 'runner.out', 'wb')
    runner = subprocess.Popen([sys.executable, '-m', 'cellos_bringup.runner', '--cells', '2', '--timing-only',
                               '--duration', '40', '--period-ms', '50', '--line', 'tsupr',
                               '--summary-json', str(summary)], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)

    def text():
        return (tmp_path / 'runner.out').read_text(errors='replace')
    try:
        wait_for(lambda: 'all nodes active' in text(), 60.0, what='the runner bringing the line up')
        victim = wait_for(lambda: [p for p, cmd in children_of(runner.pid).items() if '__ns:=/tsupr/cell_02' in cmd],
                          10.0, what="cell_02's process")[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: 'restarted and its nodes are active again' in text(), 40.0,
                 what='the runner restarting the killed process')
        assert 'exited with code -9' in text()
        assert runner.wait(timeout=90) == 0, text()
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    result = json.loads(summary.read_text())
    assert result['process_restarts'] == {'tsupr.cell_02': 1}, result['process_restarts']
    assert 'process restarts: 1 (tsupr.cell_02 x1)' in text()
    assert result['per_cell']['cell_02']['locked'], result['per_cell']['cell_02']
