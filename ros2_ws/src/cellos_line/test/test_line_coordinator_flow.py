"""The coordinator's side of line flow: plant data checked, backpressure and drift holds on
the existing hold mechanism, counted and released.
"""
from cellos_line.core.cycle_clock import Command
from cellos_line.core.line_coordinator import DRIFT, CycleReport, LineConfig, LineCoordinator
from cellos_line.core.line_flow import FlowSnapshot, StationView

CELLS = ('cell_01', 'cell_02', 'cell_03')


def coordinator():
    line = LineCoordinator(LineConfig(period_ns=20_000_000, expected_cells=CELLS,
                                      backpressure_latency_cycles=1), 0)
    for c in CELLS:
        line.on_report(CycleReport(c, 1, 1, 10, 10, 20_000_000, 2, 10, (0, 0, 0, 0)), 10)
    return line


def plant(levels, busy=(False, False, False)):
    st = tuple(StationView(c, lvl, 0 if i == 0 else 2, b) for i, (c, lvl, b) in enumerate(zip(CELLS, levels, busy)))
    return FlowSnapshot(1, sum(levels) + sum(busy), 0, 0, 0, st)


def test_backpressure_holds_and_releases_through_the_hold_mechanism():
    line = coordinator()
    ok, _, events, changed = line.on_plant(plant((0, 0, 2)), 100)
    assert ok and changed == ['cell_02'] and 'backpressure: cell_03 buffer full' in events[0]
    assert line.cells['cell_02'].held and line.holds_applied == 1
    c = line.correction_now('cell_02', 200)
    assert c.command == Command.HOLD and c.reason == 'backpressure: cell_03 buffer full'
    ok, _, events, changed = line.on_plant(plant((0, 0, 1)), 300)
    assert changed == ['cell_02'] and events == ["cell 'cell_02' released"] and line.holds_released == 1
    assert line.correction_now('cell_02', 400).command == Command.RELEASE


def test_drift_hold_is_kept_with_backpressure_and_propagates_upstream():
    line = coordinator()
    assert line.set_hold('cell_03', DRIFT, 'revalidating: ks 0.4') == "cell 'cell_03' held: revalidating: ks 0.4"
    line.on_plant(plant((0, 2, 2), (True, False, False)), 100)
    assert line.cells['cell_02'].hold_reason == 'backpressure: cell_03 buffer full [cell_03: revalidating: ks 0.4]'
    assert line.cells['cell_01'].hold_reason.startswith('backpressure: cell_02 buffer full [cell_03')
    assert line.cells['cell_03'].hold_reason == 'revalidating: ks 0.4'
    assert line.set_hold('cell_03', DRIFT, None) == "cell 'cell_03' released"
    assert line.hold('cell_02', True, 'maintenance')[0]
    line.on_plant(plant((0, 0, 0)), 200)
    assert line.cells['cell_02'].hold_reason == 'maintenance' and not line.cells['cell_01'].held


def test_bad_plant_data_is_rejected_with_its_reason_and_the_last_good_kept():
    line = coordinator()
    assert line.on_plant(plant((0, 1, 0)), 100)[0]
    bad = FlowSnapshot(2, 0, 0, 0, 0, (StationView('cell_09', 0, 0),))
    ok, why, events, _ = line.on_plant(bad, 200)
    assert not ok and "unknown cell 'cell_09'" in why and line.plant_rejected == 1
    neg = FlowSnapshot(3, 0, 0, 0, 0, (StationView('cell_01', 0, 0), StationView('cell_02', -1, 2)))
    assert 'negative buffer level' in line.on_plant(neg, 300)[1]
    assert line.flow.seq == 1 and line.plant_status.startswith('negative')
