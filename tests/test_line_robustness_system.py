"""The line against what a month beside PLC bridges and operators brings, over real DDS: forged
and malformed timing and plant messages are refused and counted while the line stays locked, a
cell outside the line's cells gets no place in it, and what the operator decided (a hold, a
runtime period change) survives a SIGKILL of the coordinator, with no RELEASE on the way.
"""
from __future__ import annotations

import time

from cellos_interfaces.msg import CellCycle, LineState, PhaseCorrection, PlantState, PlantStation
from cellos_interfaces.srv import HoldCell, SetLinePeriod
from diagnostic_msgs.msg import DiagnosticArray

from cellos_common.nodes import qos
from cellos_common.nodes.lifecycle_client import LifecycleClient
from conftest import wait_for

LINE = '/rline'
CELLS = ['cell_01', 'cell_02']
PERIOD_MS = 50.0
LOCK_S = 45.0          # cells lock within seconds; the bound covers a loaded 2-core machine
INT64_MAX = 2**63 - 1


def start_line(processes, probe, store: str, *cells: str) -> None:
    """The coordinator (its decisions kept in ``store``) and the given cells, brought up."""
    processes.start('coordinator', 'coordinator_node', namespace=LINE, params={
        'period_ms': PERIOD_MS, 'cells': CELLS, 'line_store': store, 'state_rate_hz': 10.0})
    for c in cells:
        processes.start(c, 'timing_node', namespace=f'{LINE}/{c}', params={'period_ms': PERIOD_MS})
    nodes = [f'{LINE}/coordinator', *[f'{LINE}/{c}/timing' for c in cells]]
    failed = LifecycleClient(probe.node).bring_up(nodes, timeout=30.0)
    assert not failed, f'bring-up failed for {failed}'


def state(probe) -> LineState | None:
    s = probe.received('line_state')
    return s[-1] if s else None


def phase(s: LineState | None, cell_id: str):
    return next((c for c in s.cells if c.cell_id == cell_id), None) if s is not None else None


def locked(probe, cells=CELLS) -> bool:
    s = state(probe)
    return s is not None and all((c := phase(s, x)) is not None and c.locked for x in cells)


def boundary_rejected(probe, node: str) -> int:
    """The node's 'boundary' diagnostics: inputs refused so far (-1 before any status)."""
    for arr in reversed(probe.received('diagnostics')):
        for st in arr.status:
            if st.name.endswith('boundary') and node in st.name:
                return int(next((kv.value for kv in st.values if kv.key == 'rejected'), '-1'))
    return -1


def forged_report(session: int, cell: str = 'cell_01') -> CellCycle:
    m = CellCycle(line_id='rline', cell_id=cell, session=session, cycle_index=5, period_ns=int(PERIOD_MS * 1e6),
                  state=CellCycle.STATE_LOCKED, locked=True)
    m.cycle_start_ns = m.intended_start_ns = time.time_ns()
    m.sync_t1_ns = m.sync_t4_ns = m.send_ns = INT64_MAX
    m.sync_t2_ns = m.sync_t3_ns = 1
    return m


def test_forged_messages_are_refused_and_a_rogue_cell_gets_no_place(processes, ros_probe, tmp_path):
    p = ros_probe
    p.subscribe(LineState, f'{LINE}/line_state', qos.latched_state(), key='line_state')
    p.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diagnostics')
    p.subscribe(CellCycle, f'{LINE}/cell_01/timing/cycle', qos.cycle_watch(), key='cycle')
    start_line(processes, p, str(tmp_path / 'coordinator.sqlite3'), *CELLS)
    wait_for(lambda: locked(p), LOCK_S, what='cells locked')
    session = p.received('cycle')[-1].session   # public: every report carries it

    reports = p.node.create_publisher(CellCycle, f'{LINE}/cell_01/timing/cycle', qos.cycle_report())
    corrections = p.node.create_publisher(PhaseCorrection, f'{LINE}/cell_01/timing/correction', qos.correction())
    plant = p.node.create_publisher(PlantState, f'{LINE}/plant/state', qos.plant_state())
    rogue = p.node.create_publisher(CellCycle, f'{LINE}/rogue_01/timing/cycle', qos.cycle_report())
    time.sleep(2.0)   # matched (discovery on a busy machine)
    for _ in range(20):
        reports.publish(forged_report(session))
        corrections.publish(PhaseCorrection(cell_id='cell_01', session=session, anchor_ns=time.time_ns(),
                                            anchor_index=1, period_ns=10**15, command=PhaseCorrection.COMMAND_RELEASE))
        plant.publish(PlantState(line_id='rline', parts_in=2**32, parts_out=2**32, stations=[
            PlantStation(cell_id='cell_01', parts_done=-1), PlantStation(cell_id='cell_02', buffer_capacity=4)]))
        rogue.publish(forged_report(7, 'rogue_01'))
        time.sleep(0.05)
    big = PlantState(line_id='rline', stations=[PlantStation(cell_id=f'c{i}') for i in range(50_000)])
    plant.publish(big)
    t_big = time.monotonic()

    # every process alive, the line still locked and answered (its reports keep state LOCKED)
    wait_for(lambda: boundary_rejected(p, 'coordinator') >= 40, 20.0, what='coordinator counts refused inputs')
    wait_for(lambda: boundary_rejected(p, 'cell_01') >= 10, 20.0, what='cell_01 counts refused corrections')
    assert all(proc.poll() is None for proc in processes.procs.values()), 'a process died'
    p.clear('line_state')
    wait_for(lambda: locked(p), LOCK_S, what='cells locked after the forged messages')
    assert time.monotonic() - t_big < LOCK_S
    s = state(p)
    assert [c.cell_id for c in s.cells] == CELLS, 'the rogue cell got a place in the line'
    assert "'rogue_01' discovered" not in processes.log('coordinator')


def test_operator_hold_and_period_survive_a_coordinator_kill(processes, ros_probe, tmp_path):
    p = ros_probe
    store = str(tmp_path / 'coordinator.sqlite3')
    p.subscribe(LineState, f'{LINE}/line_state', qos.latched_state(), key='line_state')
    seen = []
    p.node.create_subscription(PhaseCorrection, f'{LINE}/cell_01/timing/correction',
                               lambda m: seen.append((time.monotonic(), m)), qos.correction())
    start_line(processes, p, store, *CELLS)
    wait_for(lambda: locked(p), LOCK_S, what='cells locked')

    res = p.call(HoldCell, f'{LINE}/hold_cell', HoldCell.Request(cell_id='cell_01', hold=True, reason='maintenance'))
    assert res.success, res.message
    res = p.call(SetLinePeriod, f'{LINE}/set_line_period', SetLinePeriod.Request(period_ms=40.0))
    assert res.success, res.message
    wait_for(lambda: (c := phase(state(p), 'cell_01')) is not None and c.held and abs(c.period_ms - 40.0) < 0.01,
             20.0, what='cell_01 held at the new period')

    processes.kill('coordinator')
    killed = time.monotonic()
    p.clear('line_state')
    start_line(processes, p, store)   # the coordinator alone, with its start-up parameters (50 ms)
    wait_for(lambda: locked(p), LOCK_S, what='cells locked to the restarted coordinator')
    s = state(p)
    assert abs(s.period_ms - 40.0) < 1e-6, f'period {s.period_ms} ms after the restart'
    c1 = phase(s, 'cell_01')
    assert c1.held and c1.hold_reason == 'maintenance', (c1.held, c1.hold_reason)
    assert not phase(s, 'cell_02').held
    after = [m for at, m in seen if at > killed]
    assert after, 'no correction from the restarted coordinator'
    assert all(m.command != PhaseCorrection.COMMAND_RELEASE for m in after), \
        'the restarted coordinator released the held cell'
    assert 'held by the operator before the restart' in processes.log('coordinator')

    # the operator releases it: kept as well
    res = p.call(HoldCell, f'{LINE}/hold_cell', HoldCell.Request(cell_id='cell_01', hold=False))
    assert res.success, res.message
    wait_for(lambda: (c := phase(state(p), 'cell_01')) is not None and not c.held, 20.0, what='cell_01 released')
