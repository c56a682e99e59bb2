"""The phase-locked line over real DDS, one process per cell.

Bounds are for a busy 2-core machine: they tell the behaviour apart (a corrected 30 ms clock
offset from an uncorrected one, a loss seen on the reports' deadline from one seen on the 1 s
liveliness lease) without racing the machine; the tight figures are bench_phase's.
"""
from __future__ import annotations

import re
import time

import pytest
from cellos_interfaces.msg import CellCycle, CellPhase, LineState
from cellos_interfaces.srv import SetLinePeriod
from lifecycle_msgs.msg import State
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from cellos_common.nodes import qos
from cellos_common.nodes.lifecycle_client import LifecycleClient
from conftest import wait_for

LINE = '/tline'
PERIOD_MS = 20.0
LOCK_S = 30.0          # cells lock within a few seconds; the bound covers a loaded machine
OFFSET_TOLERANCE_MS = 3.0   # 10 % of the 30 ms offset under test: corrected, not exact
LOST_WITHIN_S = 0.5    # the reports' deadline is 1.25 periods; the liveliness lease (1 s) would be later


def start_cell(processes, cell, **params):
    return processes.start(cell, 'timing_node', namespace=f'{LINE}/{cell}',
                           params={'period_ms': PERIOD_MS, **params})


def start_coordinator(processes, **params):
    return processes.start('coordinator', 'coordinator_node', namespace=LINE,
                           params={'period_ms': PERIOD_MS, **params})


def bring_up(probe, *nodes):
    failed = LifecycleClient(probe.node).bring_up([f'{LINE}/{n}' for n in nodes], timeout=30.0)
    assert not failed, f'bring-up failed for {failed}'


def latest_state(probe) -> LineState | None:
    states = probe.received('line_state')
    return states[-1] if states else None


def cell(state: LineState, cell_id: str) -> CellPhase | None:
    return next((c for c in state.cells if c.cell_id == cell_id), None)


def all_locked(probe, cells):
    s = latest_state(probe)
    return s is not None and all((c := cell(s, x)) is not None and c.locked for x in cells)


def log_time(processes, key, pattern, after: float = 0.0) -> float | None:
    """Wall time (s) of the first ROS log line of a process that matches, at or after ``after``."""
    for line in processes.log(key).splitlines():
        m = re.search(r'\[(\d+\.\d+)\]', line)
        if m and float(m.group(1)) >= after and re.search(pattern, line):
            return float(m.group(1))
    return None


@pytest.fixture
def line_probe(ros_probe):
    ros_probe.subscribe(LineState, f'{LINE}/line_state', qos.latched_state(), key='line_state')
    return ros_probe


def test_line_locks_loses_and_relocks_cells(processes, line_probe):
    cells = ['cell_01', 'cell_02', 'cell_03']
    start_coordinator(processes)
    start_cell(processes, 'cell_01')
    start_cell(processes, 'cell_02')
    start_cell(processes, 'cell_03', clock_offset_ms=30.0)   # a cell whose clock is 30 ms off
    for c in ('cell_01', 'cell_03'):
        line_probe.subscribe(CellCycle, f'{LINE}/{c}/timing/cycle', qos.cycle_report(), key=c)
    bring_up(line_probe, 'coordinator', *[f'{c}/timing' for c in cells])
    wait_for(lambda: all_locked(line_probe, cells), LOCK_S, what='all cells locked')

    # the 30 ms clock offset is estimated, and the cell locks all the same
    s = latest_state(line_probe)
    assert abs(cell(s, 'cell_03').clock_offset_ms - 30.0) < OFFSET_TOLERANCE_MS, cell(s, 'cell_03')
    assert abs(cell(s, 'cell_01').clock_offset_ms) < OFFSET_TOLERANCE_MS
    # raw stamps: cell_03's cycle starts, taken back to the shared clock, line up with the others

    def common_locked():
        starts = {c: {m.cycle_index: m.cycle_start_ns for m in line_probe.received(c)
                      if m.state == CellCycle.STATE_LOCKED} for c in ('cell_01', 'cell_03')}
        common = sorted(set(starts['cell_01']) & set(starts['cell_03']))[-40:]
        return (starts, common) if len(common) >= 30 else None
    starts, common = wait_for(common_locked, 10.0, what='30 locked cycles of cell_01 and cell_03')
    diffs_ms = sorted(abs(starts['cell_03'][k] - 30_000_000 - starts['cell_01'][k]) / 1e6 for k in common)
    print(f'cell_03 (30 ms clock offset) vs cell_01: median start difference {diffs_ms[len(diffs_ms) // 2]:.3f} ms, '
          f'estimated offsets {cell(s, "cell_03").clock_offset_ms:.3f} / {cell(s, "cell_01").clock_offset_ms:.3f} ms')
    assert diffs_ms[len(diffs_ms) // 2] < OFFSET_TOLERANCE_MS, diffs_ms

    # SIGKILL one cell: reported lost within 2 periods of its last cycle, the others keep their lock
    lost_before = {c: cell(latest_state(line_probe), c).lost_count for c in ('cell_01', 'cell_03')}
    line_probe.subscribe(CellCycle, f'{LINE}/cell_02/timing/cycle', qos.cycle_report(),
                         key='cell_02')
    time.sleep(0.5)
    kill_at = time.time()
    processes.kill('cell_02')
    wait_for(lambda: (c := cell(latest_state(line_probe), 'cell_02')) and c.state == CellPhase.STATE_LOST,
             10.0, what='cell_02 reported lost')
    last_cycle = line_probe.received('cell_02')[-1].send_ns / 1e9
    # the state that says LOST may be published (another executor thread) before the warning is written
    lost_at = wait_for(lambda: log_time(processes, 'coordinator', r"cell 'cell_02' lost", after=last_cycle), 5.0,
                       what=f"the coordinator's log line for cell_02 lost after its last cycle at {last_cycle:.3f}")
    print(f'cell_02 lost {(lost_at - last_cycle) * 1e3:.1f} ms after its last cycle, '
          f'{(lost_at - kill_at) * 1e3:.1f} ms after SIGKILL')
    # DDS raises the deadline event 1.25 periods after the last report; the coordinator's Python
    # executor takes it up a few ms later on a quiet machine, tens of ms on 2 busy shared cores
    # (the probe may also have missed the last best-effort reports): the bound only tells the
    # deadline apart from the liveliness lease; the detection latency is a benchmark figure
    assert lost_at - last_cycle <= LOST_WITHIN_S, f'lost {(lost_at - last_cycle) * 1e3:.1f} ms after its last cycle'
    # the others keep (or, after a stall of the loaded machine, regain) their lock
    wait_for(lambda: all_locked(line_probe, ('cell_01', 'cell_03')), LOCK_S, what='cell_01 and cell_03 locked')
    s = latest_state(line_probe)
    print('lost counts of the others before / after the kill:', lost_before,
          {c: cell(s, c).lost_count for c in ('cell_01', 'cell_03')})

    # the restarted cell (a new session) re-locks
    start_cell(processes, 'cell_02')
    bring_up(line_probe, 'cell_02/timing')
    wait_for(lambda: (c := cell(latest_state(line_probe), 'cell_02')) and c.locked and c.relock_count >= 1,
             LOCK_S, what='cell_02 re-locked')
    wait_for(lambda: all_locked(line_probe, cells), LOCK_S, what='all cells locked after the restart')


def test_cells_free_run_without_the_coordinator_and_relock_when_it_returns(processes, line_probe):
    cells = ['cell_01', 'cell_02']
    start_coordinator(processes)
    for c in cells:
        start_cell(processes, c)
        line_probe.subscribe(CellCycle, f'{LINE}/{c}/timing/cycle', qos.cycle_report(), key=c)
    bring_up(line_probe, 'coordinator', *[f'{c}/timing' for c in cells])
    wait_for(lambda: all_locked(line_probe, cells), LOCK_S, what='all cells locked')

    processes.kill('coordinator')
    for c in cells:
        line_probe.clear(c)

    def free_running(c):
        return [m for m in line_probe.received(c) if m.state == CellCycle.STATE_FREE_RUNNING]
    # 5 missed corrections (coordinator_timeout_cycles) make a cell free-run
    wait_for(lambda: all(free_running(c) for c in cells), 10.0, what='cells free-running')
    # free-running keeps the last period and phase: cycles keep coming at the line period
    wait_for(lambda: all(len(free_running(c)) >= 30 for c in cells), 10.0, what='30 free-running cycles per cell')
    # the last corrected period: the line period times the cell's estimated clock rate, which
    # the coordinator keeps within +-100 ppm (two cells on one host: near 0, noisy on a busy one)
    for c in cells:
        periods = {m.period_ns for m in free_running(c)}
        assert len(periods) == 1 and abs(periods.pop() - PERIOD_MS * 1e6) <= PERIOD_MS * 1e6 * 100e-6, periods

    line_probe.clear('line_state')
    start_coordinator(processes)
    bring_up(line_probe, 'coordinator')
    wait_for(lambda: all_locked(line_probe, cells), LOCK_S, what='cells re-locked to the new coordinator')
    wait_for(lambda: all(line_probe.received(c)[-1].state == CellCycle.STATE_LOCKED for c in cells), 10.0,
             what='the cells report LOCKED')


def test_bad_parameters_are_refused_with_a_clear_message(processes, ros_probe):
    # out of the declared range at start-up: the node refuses to start, naming the parameter
    bad_cell = processes.start('bad_cell', 'timing_node', namespace=f'{LINE}/bad', params={'period_ms': -5.0})
    assert bad_cell.wait(timeout=30) == 2
    assert 'period_ms' in processes.log('bad_cell') and 'out of range' in processes.log('bad_cell')

    # a value only the node's own validation can judge: configure fails, the node stays up
    processes.start('bad_coord', 'coordinator_node', namespace=f'{LINE}bad', params={'offset_mode': 'diagonal'})
    lc = LifecycleClient(ros_probe.node)
    fqn = f'{LINE}bad/coordinator'
    assert lc.state(fqn, 30.0) == State.PRIMARY_STATE_UNCONFIGURED
    assert not lc.transition(fqn, 1, 20.0)  # configure
    assert lc.state(fqn, 10.0) == State.PRIMARY_STATE_UNCONFIGURED
    wait_for(lambda: "'offset_mode': 'diagonal' is not one of" in processes.log('bad_coord'), 10.0,
             what='the reason in the log')

    # at run time: `ros2 param set` of a zero period is refused with the reason, the old value stays
    processes.start('coord', 'coordinator_node', namespace=LINE, params={'period_ms': PERIOD_MS})
    bring_up(ros_probe, 'coordinator')
    req = SetParameters.Request(parameters=[Parameter(
        name='period_ms', value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0))])
    res = ros_probe.call(SetParameters, f'{LINE}/coordinator/set_parameters', req)
    assert not res.results[0].successful
    assert "'period_ms': 0.0ms must be > 0.0ms" in res.results[0].reason
    res = ros_probe.call(SetLinePeriod, f'{LINE}/set_line_period', SetLinePeriod.Request(period_ms=-1.0))
    assert not res.success and 'must be > 0' in res.message and res.period_ms == PERIOD_MS
