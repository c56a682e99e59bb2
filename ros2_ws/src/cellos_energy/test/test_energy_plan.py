import math
import statistics
from datetime import datetime, timezone

import pytest

from cellos_energy.core.deferral import DeferralQueue, DeferrableJob, ScoreCurve
from cellos_energy.core.energy_gate_policy import Action, GateLevel, GateMachine, GatePolicy, TaskClass, task_decision
from cellos_energy.core.energy_plan import HeldWork, plan_normal
from cellos_energy.core.energy_signal import EnergySignal, Forecast, check_signal
from cellos_energy.core.energy_trace import DayAhead, EnergyTrace, TraceReplay

START = datetime(2023, 4, 3, tzinfo=timezone.utc).timestamp()


def test_held_work_is_served_oldest_first_at_the_level_capacity():
    h = HeldWork()
    h.advance(0.0, 10.0, 0.0)          # CRITICAL_ONLY: all 10 s held
    assert h.total_s == pytest.approx(10.0) and h.oldest_s() == 0.0
    h.advance(10.0, 14.0, 0.5)         # ECO: half the rate served, oldest first
    assert h.total_s == pytest.approx(12.0) and h.oldest_s() == pytest.approx(2.0)
    h.advance(14.0, 20.0, 2.0)         # FULL with catch-up 1: 12 s served, 6 arrived
    assert h.total_s == pytest.approx(6.0) and h.oldest_s() == pytest.approx(14.0)
    h.advance(20.0, 30.0, 2.0)
    assert h.total_s == pytest.approx(0.0) and h.oldest_s() is None


def test_slack_is_the_time_left_before_full_must_start():
    h = HeldWork()
    h.advance(0.0, 4.0, 0.0)
    # 4 s held since 0, deadline 10 s, catch-up 1: the newest held second (arrived at 4) is served
    # after 4 s at FULL, due at 14; the oldest (arrived at 0) first, due at 10: slack 6 s at t=4
    assert h.slack_s(4.0, 10.0, 1.0) == pytest.approx(6.0)
    assert HeldWork().slack_s(4.0, 10.0, 1.0) == math.inf


def curve(scores, t0=0.0, step=1.0):
    return ScoreCurve(t0, step, tuple(scores))


def test_plan_waits_for_the_cheap_slots_only_as_far_as_the_deadline_allows():
    cheap_later = curve([100.0, 100.0, 100.0, 10.0, 10.0, 10.0])
    assert plan_normal(0.0, cheap_later, HeldWork(), deadline_s=4.0, catch_up=1.0).rate == pytest.approx(0.0, abs=1e-6)
    # a 1 s deadline: the work arriving now cannot wait for slot 3
    assert plan_normal(0.0, cheap_later, HeldWork(), deadline_s=1.0, catch_up=1.0).rate >= 1.0 - 1e-9
    # negative prices are the cheapest of all: serve everything that has arrived, at full rate
    h = HeldWork()
    h.advance(-2.0, 0.0, 0.0)
    neg = plan_normal(0.0, curve([-20.0, 50.0, 50.0]), h, deadline_s=10.0, catch_up=1.0)
    assert neg.rate == pytest.approx(2.0)


def test_plan_never_reaches_beyond_the_forecast():
    plan = plan_normal(0.5, curve([50.0, 60.0, 70.0]), HeldWork(), deadline_s=100.0, catch_up=1.0)
    assert plan.ends_s[-1] == pytest.approx(3.0) and plan.slot_end_s == pytest.approx(1.0)
    assert plan_normal(3.5, curve([50.0, 60.0, 70.0]), HeldWork(), 100.0, 1.0) is None


def test_overdue_held_work_is_planned_at_full_rate_with_the_reason():
    h = HeldWork()
    h.advance(0.0, 20.0, 0.0)
    plan = plan_normal(20.0, curve([500.0] * 5, t0=20.0), h, deadline_s=5.0, catch_up=1.0)
    assert plan.rate == pytest.approx(2.0) and 'cannot be planned' in plan.reason


def odd_trace(days=6):
    """Hourly prices: evening peak 80, day 50, night 30; on days 0, 1 and 3 the sunny middle of the
    day goes negative (-15); on day 2 a spike of 10x the median lasts 18 h, longer than the deadline.
    """
    price = []
    for d in range(days):
        for h in range(24):
            p = 80.0 if h < 6 else 50.0 if h < 16 else 30.0
            if d in (0, 1, 3) and 18 <= h <= 22:
                p = -15.0
            price.append(p)
    median = statistics.median(price)
    for h in range(2 * 24 + 6, 3 * 24):
        price[h] = 10.0 * median
    carbon = tuple(max(0.0, 120.0 + p / 5.0) for p in price)
    return EnergyTrace('odd', START, 3600.0, tuple(price), carbon), 10.0 * median


def run_odd(mode, arrive_h=96):
    """The gate's policy on the odd trace at one trace hour per second; normal work checked by an
    account independent of the gate's, oldest first; a 1 h deferrable job every 5 h, due in 8 h.
    """
    trace, spike = odd_trace()
    policy = GatePolicy(min_dwell_s=0.5, normal_deadline_s=12.0, normal_guard_s=1 / 12, gate_mode=mode)
    replay, rule = TraceReplay(trace, 3600.0, loop=False), DayAhead()
    machine, queue = GateMachine(policy, 0.0), DeferralQueue(policy)
    dt, held, log = 1 / 12, [], []
    late = account_error = 0.0
    finished, jobs = {}, 0
    k = 0
    while k * dt < arrive_h + 24 and (k * dt < arrive_h or held or queue.pending):
        now = k * dt
        p = replay.at(now)
        fc = replay.forecast(p, 48, rule)
        sig = EnergySignal('site', 'odd', now, p.data_time_s, trace.price_per_mwh[p.index],
                           trace.carbon_g_per_kwh[p.index], 5000.0, forecast=fc)
        assert check_signal(sig) is None       # negative prices and spikes are prices, not faults
        machine.update(sig, now)
        level = machine.status.level
        assert task_decision(level, TaskClass.CRITICAL, policy).action is Action.RUN
        if now < arrive_h:
            account_error = max(account_error, abs(machine.held.total_s - sum(x[1] for x in held)))
            held.append([now, dt])
        serve = policy.normal_capacity(level) * dt
        while held and serve > 1e-12:
            take = min(held[0][1], serve)
            late += take if now + dt > held[0][0] + 12.0 + 1e-9 else 0.0
            serve -= take
            held[0][1] -= take
            if held[0][1] <= 1e-12:
                held.pop(0)
        c = ScoreCurve.from_forecast(now, fc, policy.carbon_price_per_t)
        if k % 60 == 0 and now < arrive_h:
            jobs += 1
            assert queue.submit(DeferrableJob(f'j{k}', 1.0, now + 8.0, now), now, c)[0]
        for r in queue.tick(now, level, c, obligation=machine.status.obligation):
            finished[r.job.job_id] = (now + r.job.duration_s, r.job.latest_finish_s)
        log.append((now, trace.price_per_mwh[p.index], level))
        k += 1
    return {'late': late + sum(x[1] for x in held), 'missed': queue.missed_count + len(queue.pending),
            'finished': finished, 'jobs': jobs, 'log': log, 'account_error': account_error, 'spike': spike,
            'changes': machine.changes}


@pytest.mark.parametrize('mode', ['plan', 'thresholds'])
def test_negative_prices_and_spikes_meet_every_deadline(mode):
    r = run_odd(mode)
    assert r['late'] == pytest.approx(0.0, abs=1e-9)
    assert r['missed'] == 0 and len(r['finished']) == r['jobs']
    assert all(end <= due + 1e-9 for end, due in r['finished'].values())
    assert r['account_error'] < 1e-9        # the gate's own account is the independent one
    log = r['log']
    # negative prices are the best time: FULL once a dwell into a negative stretch
    negative = [lv for i, (t, p, lv) in enumerate(log) if p < 0 and all(q < 0 for _, q, _ in log[max(0, i - 6):i])]
    assert negative and all(lv is GateLevel.FULL for lv in negative)
    # the 18 h spike outlasts the 12 h deadline: normal work runs through part of it
    in_spike = [lv for t, p, lv in log if p >= r['spike']]
    assert GateLevel.FULL in in_spike and len(in_spike) == 18 * 12


def test_plan_serves_held_work_in_the_negative_hours_and_holds_it_through_the_peaks():
    log = run_odd('plan')['log']
    peak = [lv for t, p, lv in log if p == 80.0 and t < 48]
    assert sum(lv >= GateLevel.CRITICAL_ONLY for lv in peak) > len(peak) / 2


def test_forecast_signal_without_slots_falls_back_to_thresholds():
    m = GateMachine(GatePolicy(min_dwell_s=0.0), 0.0)
    m.update(EnergySignal('s', 't', 0.0, 0.0, 170.0, 100.0, 5000.0), 0.0)
    assert m.status.level is GateLevel.CRITICAL_ONLY and 'price' in m.status.reason and m.plan is None
    fc = Forecast(3600.0, 0.0, (170.0, 20.0, 20.0), ())
    m.update(EnergySignal('s', 't', 1.0, 1.0, 170.0, 100.0, 5000.0, forecast=fc), 1.0)
    assert m.plan is not None and 'plan on' in m.status.reason


def test_budget_and_demand_response_are_obligations_the_deadline_guard_does_not_override():
    policy = GatePolicy(min_dwell_s=0.0, normal_deadline_s=10.0, normal_guard_s=1.0, gate_mode='thresholds')
    m = GateMachine(policy, 0.0)
    hot = EnergySignal('s', 't', 0.0, 0.0, 200.0, 100.0, 5000.0)
    for t in range(12):
        m.update(hot, float(t))
    assert m.status.level is GateLevel.FULL and 'held normal work due' in m.status.reason
    m.update(EnergySignal('s', 't', 0.0, 0.0, 200.0, 100.0, 5000.0, dr_level=2), 12.0)
    assert m.status.level is GateLevel.CRITICAL_ONLY and m.status.obligation is GateLevel.CRITICAL_ONLY
