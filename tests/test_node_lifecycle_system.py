"""Every cellos node type over real DDS: configure -> activate -> deactivate -> cleanup ->
configure -> activate through its lifecycle services (what a lifecycle manager's shutdown and
startup do). A cleaned-up node keeps no publisher of its own (diagnostics included) and the
diagnostics of every node carry its fully qualified name.

Nodes share processes the way the no-launch runner composes them (one process per namespace):
three processes instead of eight keep this test light on a 2-core machine.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State

from cellos_common.nodes import qos
from cellos_common.nodes.lifecycle_client import LifecycleClient
from conftest import REPO, wait_for

LINE = '/tlc'
CELL = f'{LINE}/cell_01'
SITE = '/tlc_site'
TRACE = REPO / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv'
PROCESSES = {
    # key: (namespace, executables, parameters)
    'line': (LINE, ('coordinator_node', 'plant_node'), {'period_ms': 50.0, 'cells': ['cell_01']}),
    'cell': (CELL, ('timing_node', 'arbiter_node', 'vision_node', 'energy_gate_node'),
             {'period_ms': 50.0, 'cycle_period_ms': 50.0, 'executor_status_topic': f'{SITE}/executor/status',
              'feed_topic': f'{SITE}/energy_feed', 'inspect_every': 10}),
    'site': (SITE, ('executor_node', 'energy_feed_node'),
             {'trace_file': str(TRACE), 'energy_feed_topic': f'{SITE}/energy_feed', 'discover_cells': False}),
}
NODES = [f'{LINE}/coordinator', f'{LINE}/plant', f'{CELL}/timing', f'{CELL}/arbiter', f'{CELL}/vision',
         f'{CELL}/energy_gate', f'{SITE}/executor', f'{SITE}/energy_feed']
# what every (lifecycle) node publishes while unconfigured
BASE_TOPICS = {'/rosout', '/parameter_events'}


def own_publishers(probe, fqn: str) -> set[str]:
    ns, _, name = fqn.rpartition('/')
    topics = {t for t, _ in probe.node.get_publisher_names_and_types_by_node(name, ns)}
    return topics - BASE_TOPICS - {f'{fqn}/transition_event'}


def logs(processes) -> str:
    return ''.join(f'\n--- {key}\n{processes.log(key)[-3000:]}' for key in PROCESSES)


def test_every_node_configures_again_after_cleanup(processes, ros_probe):
    for key, (ns, exes, params) in PROCESSES.items():
        processes.start(key, 'line_runner', namespace=ns, params=params, extra_args=['--process', ','.join(exes)])
    names: dict[str, set] = {}

    def on_diag(msg):
        for s in msg.status:
            node, _, task = s.name.partition(': ')
            names.setdefault(node, set()).add(task)
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), callback=on_diag)
    lc = LifecycleClient(ros_probe.node)
    t0 = time.monotonic()

    def states():
        return lc.states(NODES, timeout=5.0)

    failed = lc.bring_up(NODES, timeout=60.0)
    assert not failed, f'first bring-up failed for {failed}: {logs(processes)}'
    print(f'all {len(NODES)} nodes active {time.monotonic() - t0:.1f} s after start')
    wait_for(lambda: set(NODES) <= set(names), 10.0, what='diagnostics of every node under its full name')
    assert all('/diagnostics' in own_publishers(ros_probe, n) for n in NODES)

    failed = lc.bring_down(NODES, timeout=10.0, cleanup=True)
    assert not failed, f'deactivate + cleanup failed for {failed}'
    # a busy machine may leave a get_state unanswered for a while: ask again, with a bound
    wait_for(lambda: set(states().values()) == {State.PRIMARY_STATE_UNCONFIGURED}, 30.0,
             what='every node unconfigured after cleanup')
    # nothing a configure created outlives the cleanup, the diagnostics' publisher included
    wait_for(lambda: all(not own_publishers(ros_probe, n) for n in NODES), 10.0,
             what='no publisher of a cleaned-up node left in the graph: '
                  + str({n: sorted(own_publishers(ros_probe, n)) for n in NODES}))

    names.clear()
    failed = lc.bring_up(NODES, timeout=60.0)
    assert not failed, f'second bring-up failed for {failed}: {logs(processes)}'
    wait_for(lambda: set(states().values()) == {State.PRIMARY_STATE_ACTIVE}, 30.0,
             what='every node active again')
    wait_for(lambda: set(NODES) <= set(names), 10.0, what='diagnostics again after the second configure')
    unqualified = sorted(n for n in names if not n.startswith('/'))
    assert not unqualified, f'diagnostic status names without the node namespace: {unqualified}'
    for key in PROCESSES:
        log = processes.log(key)
        assert 'failed' not in log and 'Traceback' not in log, f'{key}:\n{log}'
    print(f'configure, activate, deactivate, cleanup, configure, activate: {time.monotonic() - t0:.1f} s')


def test_manager_exits_with_an_error_when_autostart_fails(processes):
    """The launch files end the launch on this exit code (launch_plan.launch_actions)."""
    proc = processes.start('manager', 'lifecycle_manager', namespace='/tlc_fail', params={
        'autostart': True, 'node_names': ['missing/timing'], 'transition_timeout_s': 2.0})
    assert proc.wait(timeout=30.0) == 1, processes.log('manager')
    assert 'autostart failed (/tlc_fail/missing/timing): exiting with code 1' in processes.log('manager')
