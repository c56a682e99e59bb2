"""Cell cycle clock + line coordinator closed together, without rclpy: a deterministic
simulation of cells on clocks with offsets, message delays and a coordinator.
"""
import random

import pytest
from hypothesis import given, settings, strategies as st

from cellos_line.core.clock_sync import OffsetEstimator, sample
from cellos_line.core.cycle_clock import Command, CycleClock, CycleConfig, CycleState
from cellos_line.core.line_coordinator import CycleReport, LineConfig, LineCoordinator
from cellos_line.core.schedule import Schedule, stagger_offsets, wrap

P = 20_000_000  # 20 ms


class SimCell:
    def __init__(self, cell_id, clock_offset_ns, start_ns, rng, jitter_ns=50_000, skew=0.0, t0=0):
        self.id, self.off, self.rng, self.jitter = cell_id, clock_offset_ns, rng, jitter_ns
        self.skew, self.t0 = skew, t0
        self.cycle = CycleClock(CycleConfig(P), self.clock(start_ns))
        self.session = rng.getrandbits(32)
        self.intended, self.wake = self.cycle.advance(self.clock(start_ns))
        self.starts = {}   # index -> true start (coordinator/true clock)

    def clock(self, true_ns):
        """This cell's clock at a true (coordinator) time: offset plus a rate error."""
        return int(true_ns + self.off + (true_ns - self.t0) * self.skew)

    def true_time(self, cell_ns):
        return int(self.t0 + (cell_ns - self.off - self.t0) / (1.0 + self.skew))

    def true_wake(self):
        return self.true_time(self.wake)


def run_line(n_cells=4, seconds=4.0, offsets_ns=None, seed=1, delay_ns=300_000, mode='aligned',
             coordinator_down=None, kill=None, skews=None, stall=None, **config):
    """``stall``: (cell id, true time, seconds) the cell's thread sleeps through."""
    rng = random.Random(seed)
    t0 = 1_000_000_000_000
    line = LineCoordinator(LineConfig(P, offset_mode=mode, **config), t0)
    offsets_ns = offsets_ns or [0] * n_cells
    skews = skews or [0.0] * n_cells
    cells = [SimCell(f'cell_{i}', offsets_ns[i], t0 + rng.randrange(P), rng, skew=skews[i], t0=t0)
             for i in range(n_cells)]
    pending = []  # (deliver_at_true, cell, correction, t3)
    events = []
    answers = 0
    t = t0
    end = t0 + int(seconds * 1e9)
    stalled = set()
    while t < end:
        # next event: earliest cell wake or pending delivery
        alive = [c for c in cells if not (kill and c.id == kill[0] and c.true_wake() >= kill[1])]
        nxt = min(c.true_wake() for c in alive)
        if pending:
            nxt = min(nxt, min(p[0] for p in pending))
        t = nxt
        for p in [p for p in pending if p[0] <= t]:
            pending.remove(p)
            _, cell, corr, t3 = p
            t4 = cell.clock(t)
            cell.cycle.exchange.on_echo(corr.echo_t1_ns, corr.recv_t2_ns, t3, t4)
            if corr.period_ns:
                cell.cycle.on_correction(corr.anchor_ns, corr.anchor_index, corr.period_ns, corr.command, t4)
        for cell in alive:
            if cell.true_wake() > t:
                continue
            if stall and cell.id == stall[0] and t >= stall[1] and cell.id not in stalled:
                stalled.add(cell.id)
                t_resume = t + int(stall[2] * 1e9)
                cell.wake = cell.clock(t_resume)   # the thread sleeps through
                continue
            actual_true = t + cell.rng.randrange(cell.jitter)
            actual = cell.clock(actual_true)
            if cell.cycle.stalled(actual):
                cell.wake = cell.cycle.skip_to(actual)
                continue
            cell.cycle.on_started(actual, cell.wake)
            cell.starts[cell.cycle.index] = (actual_true, cell.cycle.state)
            report = CycleReport(cell.id, cell.session, cell.cycle.index, actual, cell.cycle.intended_ns,
                                 cell.cycle.period_ns, int(cell.cycle.state), actual + 10_000,
                                 cell.cycle.exchange.stamps, locked=cell.cycle.locked,
                                 missed_cycles=cell.cycle.missed_cycles)
            recv = actual_true + 10_000 + delay_ns
            down = coordinator_down and coordinator_down[0] <= recv < coordinator_down[1]
            if not down:
                corr, ev = line.on_report(report, recv)
                if ev:
                    events.append((recv, ev))
                if corr is not None:
                    answers += 1
                    pending.append((recv + 50_000 + delay_ns, cell, corr, recv + 50_000))
            events += [(t, e) for e in line.check_lost(t)]
            cell.intended, cell.wake = cell.cycle.advance(cell.clock(actual_true + 100_000))
    line.answers = answers
    return line, cells, events


def line_errors(cells, line, from_index):
    errs = []
    for c in cells:
        off = line.offsets.get(c.id, 0)
        for k, (t, state) in c.starts.items():
            if k >= from_index:
                errs.append(line.schedule.phase_error(t, off))
    return errs


def test_cells_lock_to_the_schedule():
    line, cells, _ = run_line()
    assert all(t.locked for t in line.cells.values())
    last = max(cells[0].starts)
    errs = line_errors(cells, line, last - 50)
    assert max(abs(e) for e in errs) < 300_000  # within jitter + delay asymmetry


def test_clock_offsets_are_estimated_and_locked_through():
    offs = [0, 30_000_000, -7_500_000, 123_456_789]
    line, cells, _ = run_line(offsets_ns=offs)
    for c, off in zip(cells, offs):
        est = line.cells[c.id].offset.offset_at(line.cells[c.id].last_recv_ns)
        assert abs(est - off) < 100_000, (c.id, est, off)
        assert line.cells[c.id].locked
    last = max(cells[0].starts)
    assert max(abs(e) for e in line_errors(cells, line, last - 50)) < 300_000


def test_staggered_offsets_spread_the_cells_over_one_period():
    line, cells, _ = run_line(mode='staggered')
    assert sorted(line.offsets.values()) == [0, P // 4, P // 2, 3 * P // 4]
    assert all(t.locked for t in line.cells.values())


def test_no_cycle_is_skipped_or_repeated_while_slewing():
    line, cells, _ = run_line(offsets_ns=[0, 9_000_000, -9_000_000, 0])
    for c in cells:
        # from the first cycle on the schedule (before it, the cell counts its own cycles)
        ks = sorted(k for k, (t, s) in c.starts.items() if s != CycleState.STARTING)[1:]
        gaps = {b - a for a, b in zip(ks, ks[1:])}
        assert gaps == {1}, (c.id, gaps)
        times = [c.starts[k][0] for k in ks]
        intervals = [b - a for a, b in zip(times, times[1:])]
        # bounded slew: every interval within period +- 10 % (+ jitter)
        assert min(intervals) > 0.88 * P and max(intervals) < 1.12 * P


def test_killed_cell_is_lost_within_lost_after_periods_and_others_stay_locked():
    t0 = 1_000_000_000_000
    kill_at = t0 + 2_000_000_000
    line, cells, events = run_line(kill=('cell_2', kill_at))
    lost = [t for t, e in events if "'cell_2' lost" in e]
    # the timer in the sim is the cells' wake-ups (the node has DDS's deadline timer)
    assert lost and lost[0] - kill_at <= 2.5 * P + P
    assert [t.cell_id for t in line.cells.values() if not t.locked] == ['cell_2']


def test_coordinator_loss_free_runs_then_relocks():
    t0 = 1_000_000_000_000
    line, cells, _ = run_line(seconds=5.0, coordinator_down=(t0 + 2_000_000_000, t0 + 3_000_000_000))
    for c in cells:
        states = [s for k, (t, s) in sorted(c.starts.items())]
        assert CycleState.FREE_RUNNING in states
        assert states[-1] == CycleState.LOCKED


def test_resync_jumps_to_the_nearest_tick():
    clock = CycleClock(CycleConfig(P), 0)
    clock.advance(0)
    clock.on_correction(anchor_ns=7_000_000, anchor_index=0, period_ns=P, command=Command.RESYNC, now_ns=0)
    intended, _ = clock.advance(0)
    assert (intended - 7_000_000) % P == 0
    assert clock.error_ns == 0


def test_hold_and_release_are_reported():
    clock = CycleClock(CycleConfig(P), 0)
    clock.on_correction(0, 0, P, Command.HOLD, 0, 'backpressure')
    assert clock.state == CycleState.HELD and clock.hold_reason == 'backpressure'
    clock.on_correction(0, 0, P, Command.RELEASE, 0)
    assert clock.state != CycleState.HELD


@given(st.integers(-10 * P, 10 * P), st.integers(1, 10**9))
def test_wrap_stays_within_half_a_period(e, p):
    w = wrap(e, p)
    assert -p // 2 - 1 <= w < p - p // 2 and (e - w) % p == 0


@given(st.integers(0, 10**15), st.integers(1, 10**8), st.integers(0, 10**12))
def test_schedule_nearest_tick_is_nearest(epoch, period, t):
    s = Schedule(epoch, period)
    k = s.nearest_index(t)
    assert abs(t - s.tick(k)) <= period // 2 + 1


@settings(max_examples=50)
@given(st.integers(-10**9, 10**9), st.integers(1_000, 5_000_000), st.integers(0, 2_000_000))
def test_offset_estimate_error_is_bounded_by_half_the_delay_asymmetry(offset, base_delay, asym):
    est = OffsetEstimator()
    t = 10**12
    for i in range(20):
        up, down = base_delay + asym, base_delay
        t1 = t + offset
        t2 = t + up
        t3 = t2 + 1000
        t4 = t3 + down + offset
        est.add(sample(t1, t2, t3, t4))
        t += P
    assert abs(est.offset_ns - offset) <= asym / 2 + 1


def test_clock_step_is_followed_after_two_samples():
    est = OffsetEstimator()
    for i, off in enumerate([0] * 10 + [8_000_000] * 3):
        t = i * P
        est.add(sample(t + off, t + 100_000, t + 150_000, t + 250_000 + off))
    assert abs(est.offset_ns - 8_000_000) < 1_000


def test_duplicate_cell_id_is_ignored_and_restart_is_accepted():
    line = LineCoordinator(LineConfig(P), 0)
    r = CycleReport('c', 1, 0, 0, 0, P, 0, 1)
    assert line.on_report(r, 1_000)[0] is not None
    corr, ev = line.on_report(CycleReport('c', 2, 0, 0, 0, P, 0, 2), 2_000)
    assert corr is None and 'duplicate' in ev
    assert line.check_lost(10 * P)
    corr, ev = line.on_report(CycleReport('c', 2, 0, 0, 0, P, 0, 3), 10 * P + 1)
    assert corr is not None and 'restarted' in ev


def test_stale_and_out_of_order_reports_are_dropped():
    line = LineCoordinator(LineConfig(P), 0)
    line.on_report(CycleReport('c', 1, 5, 0, 0, P, 0, 100), 1_000)
    corr, _ = line.on_report(CycleReport('c', 1, 4, 0, 0, P, 0, 50), 2_000)
    assert corr is None and line.out_of_order == 1


def test_unknown_cells_can_be_refused():
    line = LineCoordinator(LineConfig(P, expected_cells=('a',), accept_unknown_cells=False), 0)
    corr, ev = line.on_report(CycleReport('b', 1, 0, 0, 0, P, 0, 1), 1)
    assert corr is None and 'unknown' in ev and 'b' not in line.cells


def test_bad_offset_mode_and_period_are_refused():
    with pytest.raises(ValueError, match='unknown offset mode'):
        stagger_offsets(['a'], P, 'diagonal')
    with pytest.raises(ValueError, match='period'):
        LineCoordinator(LineConfig(0), 0)
    with pytest.raises(ValueError, match='max_slew_fraction'):
        CycleConfig(P, max_slew_fraction=0.7)


def test_period_change_keeps_phase():
    line = LineCoordinator(LineConfig(P), 0)
    before = line.schedule.tick(line.schedule.nearest_index(5 * P))
    ok, _ = line.set_period(P // 2, 5 * P)
    assert ok and line.schedule.tick(line.schedule.nearest_index(5 * P)) == before
    assert not line.set_period(0, 0)[0]


def test_rate_is_estimated_within_a_few_ppm_from_ten_seconds_of_noisy_exchanges():
    rng = random.Random(3)
    est = OffsetEstimator()
    skew, offset0, t = 50e-6, 250_000_000, 10**12
    for _ in range(100):    # 10 s at 10 Hz, one-way delays 0.2-1.2 ms
        up, down = rng.randint(200_000, 1_200_000), rng.randint(200_000, 1_200_000)
        cell = lambda true: int(true + offset0 + (true - 10**12) * skew)  # noqa: E731
        t1 = cell(t)
        t2 = t + up
        t3 = t2 + 50_000
        t4 = cell(t3 + down)
        est.add(sample(t1, t2, t3, t4))
        t += 100_000_000
    assert abs(est.skew_ppm - 50.0) < 10.0, est.skew_ppm
    assert abs(est.offset_at(t) - (offset0 + (t - 10**12) * skew)) < 300_000
