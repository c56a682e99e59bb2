"""Stalls, the lock judgement, the clock exchange's own rate, clock rates and the coordinator's
counters, on the pure core (the closed-loop simulation of test_cycle_sync).
"""
import pytest

from cellos_line.core.cycle_clock import Command, CycleClock, CycleConfig, CycleState
from cellos_line.core.line_coordinator import CycleReport, LineConfig, LineCoordinator
from test_cycle_sync import P, run_line


def locked_clock(now=0):
    clock = CycleClock(CycleConfig(P), now)
    clock.on_correction(anchor_ns=0, anchor_index=0, period_ns=P, command=Command.RELEASE, now_ns=now)
    intended, wake = clock.advance(now)
    for _ in range(10):
        clock.on_started(intended, wake)
        intended, wake = clock.advance(intended + 1000)
    return clock


def test_a_stall_skips_the_missed_ticks_and_starts_the_next_cycle_on_the_schedule():
    clock = locked_clock()
    assert clock.state == CycleState.LOCKED
    index, intended = clock.index, clock.intended_ns
    woke = intended + 2_000_000_000 + 3_000_000       # slept 2 s past the start
    assert clock.stalled(woke)
    wake = clock.skip_to(woke)
    # the next tick after the wake-up, on the schedule: no catch-up, no cycle now
    assert clock.intended_ns > woke and clock.intended_ns - woke <= P
    assert clock.intended_ns % P == 0 and wake <= clock.intended_ns
    assert clock.index == clock.intended_ns // P
    assert clock.missed_cycles == clock.index - index == 101
    # no correction came during the stall: free-running until the next one, never LOCKED
    assert clock.state == CycleState.FREE_RUNNING and not clock.locked
    clock.on_correction(anchor_ns=0, anchor_index=0, period_ns=P, command=Command.RELEASE, now_ns=woke)
    assert clock.state == CycleState.LOCKING
    # back within bounds for lock_cycles cycles: locked again
    intended = clock.intended_ns
    for k in range(3):
        clock.on_started(intended + 20_000, wake)
        intended, wake = clock.advance(intended + 100_000)
    assert clock.state == CycleState.LOCKED and clock.missed_cycles == 101


def test_a_late_wake_up_within_one_period_is_a_late_cycle_not_a_stall():
    clock = locked_clock()
    assert not clock.stalled(clock.intended_ns + P // 2)
    assert clock.stalled(clock.intended_ns + P + 1)


def test_a_stall_before_any_schedule_keeps_the_cells_own_grid():
    clock = CycleClock(CycleConfig(P), 5)
    clock.advance(5)
    start = clock.intended_ns
    clock.skip_to(start + 10 * P + 1)
    assert clock.intended_ns == start + 11 * P and clock.missed_cycles == 11


def test_one_late_wake_up_does_not_unlock_a_locked_cell_but_a_run_of_them_does():
    clock = locked_clock()
    intended, wake = clock.intended_ns, clock.intended_ns
    clock.on_started(intended + 5_000_000, wake)            # one 5 ms late start
    assert clock.locked
    for _ in range(3):
        intended, wake = clock.advance(intended + 100_000)
        clock.on_started(intended + 5_000_000, wake)
    assert not clock.locked and clock.state == CycleState.LOCKING


def test_no_burst_of_cycles_after_a_stall_in_the_closed_loop():
    t0 = 1_000_000_000_000
    line, cells, events = run_line(seconds=6.0, stall=('cell_1', t0 + 2_000_000_000, 2.0))
    c = cells[1]
    times = sorted(t for t, s in c.starts.values())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) > 0.8 * P, 'cycles ran back to back after the stall'
    assert max(gaps) > 1.9e9                       # the stall itself
    assert c.cycle.missed_cycles >= 99
    track = line.cells['cell_1']
    assert track.lost_count == 1 and track.relock_count == 1 and track.locked
    assert any("'cell_1' lost" in e for _, e in events)
    # re-locked within 10 cycles of the first cycle after the stall
    after = sorted(k for k, (t, s) in c.starts.items() if t > t0 + 4_000_000_000)
    first_locked = next(k for k in after if c.starts[k][1] == CycleState.LOCKED)
    assert first_locked - after[0] <= 10
    # the others never noticed
    assert all(line.cells[f'cell_{i}'].lost_count == 0 and line.cells[f'cell_{i}'].relock_count == 0
               for i in (0, 2, 3))


def test_locked_cells_are_answered_at_the_sync_rate_not_every_cycle():
    every, _, _ = run_line(seconds=4.0, sync_interval_ns=0)
    decimated, cells, _ = run_line(seconds=4.0, sync_interval_ns=100_000_000)
    assert all(t.locked for t in decimated.cells.values())
    assert decimated.answers < every.answers / 3
    assert all(t.lost_count == 0 for t in decimated.cells.values())


def test_clock_rate_is_estimated_and_the_cells_stay_locked():
    skews = [0.0, 50e-6, -50e-6, 20e-6]
    line, cells, _ = run_line(seconds=12.0, offsets_ns=[0, 250_000_000, -250_000_000, 1_000_000],
                              skews=skews, sync_interval_ns=100_000_000)
    for c, skew in zip(cells, skews):
        t = line.cells[c.id]
        assert t.locked
        assert abs(t.offset.skew_ppm - skew * 1e6) < 5.0, (c.id, t.offset.skew_ppm)
        true_offset = c.clock(t.last_recv_ns) - t.last_recv_ns
        assert abs(t.offset.offset_at(t.last_recv_ns) - true_offset) < 100_000


def test_system_clock_mode_trusts_the_clocks_and_reports_the_residual():
    line, cells, _ = run_line(offsets_ns=[0, 300_000, 0, 0], clock_mode='system')
    t = line.cells['cell_1']
    # the schedule ignores the 0.3 ms residual (taken as 0), the estimate still shows it
    assert abs(t.offset.offset_at(t.last_recv_ns) - 300_000) < 50_000
    assert t.locked
    with pytest.raises(ValueError, match='clock mode'):
        LineConfig(P, clock_mode='ntp')


def test_phase_percentiles_are_over_the_recent_window_only():
    line = LineCoordinator(LineConfig(P, window_ns=1_000_000_000), 0)
    t = line.cells.setdefault('c', None) or None
    line.on_report(CycleReport('c', 1, 1, 0, 0, P, 0, 1), 10)
    t = line.cells['c']
    t.errors_ns.extend([(0, 9_000_000)] * 50 + [(3_000_000_000, 100_000)] * 50)
    p50, p99 = line.error_percentiles_ms(t, 3_500_000_000)
    assert p99 == pytest.approx(0.1)


def test_relock_counts_every_return_to_lock_after_the_first():
    line = LineCoordinator(LineConfig(P), 0)
    for i, locked in enumerate([False, True, True, False, True, False, False, True]):
        line.on_report(CycleReport('c', 1, i + 1, 0, 0, P, 2 if locked else 1, i + 1, locked=locked), i + 1)
    t = line.cells['c']
    assert t.lock_time_s is not None and t.relock_count == 2 and t.lost_count == 0


def test_one_silent_cell_is_lost_at_lost_after_but_a_common_silence_waits_longer():
    line = LineCoordinator(LineConfig(P, lost_after_periods=2.5, common_silence_periods=10.0), 0)
    for c in 'abcd':
        line.on_report(CycleReport(c, 1, 1, 0, 0, P, 2, 1), 1)
    t = 1
    for k in range(1, 12):           # everyone reports every period but d
        t = 1 + k * P
        for c in 'abc':
            line.on_report(CycleReport(c, 1, k + 1, 0, 0, P, 2, k + 1), t)
        lost = line.check_lost(t)
        if lost:
            break
    assert lost == [f"cell 'd' lost: no report for {(t - 1) / 1e6:.1f} ms"] and k == 3
    # now all fall silent at once: not lost at 2.5 periods, lost after 10
    assert line.check_lost(t + 3 * P) == [] and line.common_silences == 1
    assert len(line.check_lost(t + 11 * P)) == 3


def test_a_late_lost_check_judges_nothing():
    line = LineCoordinator(LineConfig(P), 0)
    line.on_report(CycleReport('a', 1, 1, 0, 0, P, 2, 1), 1)
    assert line.check_lost(P, every_ns=P // 4) == []
    assert line.check_lost(10 * P, every_ns=P // 4) == [] and line.late_checks == 1   # this side stalled
    assert line.check_lost(10 * P + P // 4, every_ns=P // 4)
