"""What the line's core refuses or survives from outside: forged cycle reports and clock
exchanges, absurd periods, plant data out of range or too large, state that could only grow.
"""
import time

from cellos_line.core.line_coordinator import (
    OPERATOR, CycleReport, LineConfig, LineCoordinator, check_report)
from cellos_line.core.line_flow import MAX_STATIONS, FlowSnapshot, StationView, check_snapshot
from cellos_line.core.schedule import check_period

P = 20_000_000
T0 = 1_800_000_000_000_000_000    # a clock reading of today's order
INT64_MAX = 2**63 - 1


def report(send, cell='c', session=1, sync=(0, 0, 0, 0), period=P, state=1):
    return CycleReport(cell, session, 0, send, send, period, state, send, sync)


def test_forged_stamps_and_absurd_periods_are_refused():
    assert check_report(report(T0)) == ''
    forged = report(T0, sync=(INT64_MAX, 1, 1, INT64_MAX))
    assert 'not clock readings' in check_report(forged)
    assert 'not a clock reading' in check_report(report(INT64_MAX))
    assert 'not a sample' in check_report(report(T0, sync=(T0, T0 + 5, T0 + 6, T0 - 1)))    # t4 < t1
    assert 'not a sample' in check_report(report(T0, sync=(T0, 0, T0 + 6, T0 + 9)))        # incomplete
    assert 'outside' in check_report(report(T0, period=10**15))
    assert 'outside' in check_report(report(T0, period=0))
    assert 'unknown cycle state' in check_report(report(T0, state=9))
    assert 'cell id' in check_report(report(T0, cell='x' * 65))
    assert check_period(10**15) and check_period(-1) and not check_period(P)


def answer(line, r, recv):
    c, _ = line.on_report(r, recv)
    return c


def test_a_forged_exchange_is_no_sample_and_no_anchor_overflows():
    line = LineCoordinator(LineConfig(P, sync_interval_ns=0), T0)
    # a real exchange: answered first, so its (t1, t2) is one the coordinator made
    c = answer(line, report(T0 + 1_000), T0 + 2_000)
    real = (c.echo_t1_ns, c.recv_t2_ns, c.recv_t2_ns + 100, T0 + P)
    c = answer(line, report(T0 + P + 10, sync=real), T0 + P + 1_000)
    assert line.cells['c'].offset.ready and c.period_ns == P
    offset = line.cells['c'].offset.offset_ns
    # a forged one, plausible stamps but not an exchange this coordinator answered
    far = T0 + 10**18
    c = answer(line, report(T0 + 2 * P, sync=(far, T0, T0, far + 10)), T0 + 2 * P + 1_000)
    assert line.cells['c'].offset.offset_ns == offset
    assert 0 < c.anchor_ns < 2**63


def test_a_report_from_the_far_future_does_not_silence_the_cell():
    line = LineCoordinator(LineConfig(P, sync_interval_ns=0), T0)
    assert answer(line, report(T0), T0 + 1_000) is not None
    # forged with the cell's public session: a send stamp 10 years ahead
    line.on_report(report(T0 + 10 * 365 * 86400 * 10**9), T0 + 2_000)
    for k in range(1, 5):   # the real cell goes on: every report is answered again
        assert answer(line, report(T0 + k * P), T0 + k * P + 1_000) is not None
    assert line.cells['c'].clock_steps >= 1
    # a duplicate or a reordered report within a period is still dropped
    assert answer(line, report(T0 + 4 * P - 5), T0 + 5 * P) is None and line.out_of_order == 1


def test_a_cell_clock_step_back_is_followed_at_once():
    line = LineCoordinator(LineConfig(P, sync_interval_ns=0), T0)
    for k in range(3):
        assert answer(line, report(T0 + k * P), T0 + k * P + 1_000) is not None
    c, event = line.on_report(report(T0 - 5 * 10**9), T0 + 3 * P + 1_000)   # stepped back 5 s
    assert c is not None and 'clock went back' in event


def test_lost_cells_are_forgotten_but_an_operator_hold_stays():
    line = LineCoordinator(LineConfig(P, forget_after_ns=10 * P), 0)
    for cell in ('a', 'b'):
        line.on_report(report(1, cell=cell), 1_000)
    line.hold('a', True, 'maintenance')
    line.set_hold('a', 'drift', 'revalidating')
    line.set_hold('b', 'drift', 'revalidating')
    assert line.check_lost(5 * P)
    assert line.forget_lost(10 * P) == []
    assert sorted(line.forget_lost(20 * P)) == ['a', 'b']
    assert line.cells == {} and line.holds == {'a': {OPERATOR: 'maintenance'}}
    line.on_report(report(30 * P, cell='a'), 30 * P)   # back: still held by the operator
    assert line.cells['a'].held and line.cells['a'].hold_reason == 'maintenance'


def snap(n, **kw):
    stations = tuple(StationView(f'cell_{i:05d}', 0, 4 if i else 0) for i in range(n))
    fields = dict(seq=1, parts_in=0, parts_out=0, dropped=0, overflows=0, stations=stations)
    fields.update(kw)
    return FlowSnapshot(**fields)


def test_plant_data_out_of_range_or_too_large_is_refused_quickly():
    assert check_snapshot(snap(3)) == ''
    assert 'above' in check_snapshot(snap(3, parts_in=2**32, parts_out=2**32))
    done = snap(3)
    done.stations[1].parts_done = -1
    assert 'negative parts_done' in check_snapshot(done)
    t = time.monotonic()
    dup = snap(50_000)
    dup = FlowSnapshot(1, 0, 0, 0, 0, dup.stations[:MAX_STATIONS - 1] + dup.stations[:1])
    assert 'twice' in check_snapshot(dup)
    assert 'at most' in check_snapshot(snap(50_000))
    assert time.monotonic() - t < 5.0   # linear: far below a second here, generous for a busy machine


def test_plant_data_cannot_grow_holds_past_the_line():
    line = LineCoordinator(LineConfig(P), 0)   # discovery: any station id passes the check
    line.on_report(report(1, cell='cell_00000'), 1_000)
    s = snap(200)
    for st in s.stations:
        st.level = st.capacity   # every buffer full: backpressure wants every cell held
    s = FlowSnapshot(1, sum(st.level for st in s.stations), 0, 0, 0, s.stations)
    ok, problem, _, _ = line.on_plant(s, 2_000)
    assert ok, problem
    assert set(line.holds) <= {'cell_00000'}
