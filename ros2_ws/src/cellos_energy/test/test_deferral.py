import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.deferral import MAX_MISSED, DeferralQueue, DeferrableJob, ScoreCurve, check_job, plan_release
from cellos_energy.core.energy_gate_policy import Action, GateLevel, GateMachine, GatePolicy, TaskClass, task_decision
from cellos_energy.core.energy_signal import EnergySignal
from cellos_energy.core.energy_trace import EnergyTrace, TraceReplay

SHIPPED = Path(__file__).resolve().parents[4] / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv'


def test_mean_and_cheapest_window():
    c = ScoreCurve(0.0, 10.0, (50.0, 10.0, 80.0, 5.0))
    assert c.mean(0, 20) == 30.0 and c.mean(5, 15) == 30.0
    job = DeferrableJob('a', 10.0, latest_finish_s=40.0, submitted_s=0.0)
    plan = plan_release(0.0, job, c)
    assert plan.start_s == 30.0 and plan.mean_score == 5.0
    tight = DeferrableJob('b', 10.0, latest_finish_s=25.0, submitted_s=0.0)
    assert plan_release(0.0, tight, c).start_s == 10.0       # 5.0 slot is past the deadline
    assert plan_release(0.0, job, None).start_s == 30.0      # no forecast: its latest start


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-50, 500), min_size=1, max_size=48), st.floats(0.1, 50), st.floats(0, 400),
       st.floats(0, 100), st.floats(0, 20))
def test_plan_never_past_latest_start(scores, duration, slack, now, margin):
    c = ScoreCurve(0.0, 10.0, tuple(scores))
    job = DeferrableJob('j', duration, now + duration + margin + slack, now)
    plan = plan_release(now, job, c, margin)
    assert now <= plan.start_s <= job.latest_start(margin) + 1e-9


def test_full_replay_no_deferrable_deadline_missed_and_critical_never_gated():
    """Four weeks of the real trace, one row per simulated second; jobs arrive every 3 rows
    with 1-row runs and 12-row deadlines; the gate level comes from the real policy.
    """
    trace = EnergyTrace.load(SHIPPED)
    replay = TraceReplay(trace, compression=3600.0, loop=False)
    policy = GatePolicy(min_dwell_s=2.0)
    machine = GateMachine(policy, 0.0)
    q = DeferralQueue(policy, margin_s=0.0)
    finished, submitted, dt, levels = {}, 0, 0.25, set()
    steps = int(trace.rows / dt)
    for k in range(steps):
        now = k * dt
        p = replay.at(now)
        fc = replay.forecast(p, 24)
        machine.update(EnergySignal('site', 'trace', now, p.data_time_s, trace.price_per_mwh[p.index],
                                    trace.carbon_g_per_kwh[p.index], 5000.0, forecast=fc), now)
        assert task_decision(machine.status.level, TaskClass.CRITICAL, policy).action is Action.RUN
        levels.add(machine.status.level)
        curve = ScoreCurve.from_forecast(now, fc, policy.carbon_price_per_t)
        if k % 12 == 0 and now + 12.0 <= trace.rows:
            ok, _, why = q.submit(DeferrableJob(f'j{k}', 1.0, now + 12.0, now), now, curve)
            assert ok, why
            submitted += 1
        for r in q.tick(now, machine.status.level, curve):
            finished[r.job.job_id] = (now + r.job.duration_s, r.job.latest_finish_s)
    assert not q.missed and not q.pending
    assert GateLevel.CRITICAL_ONLY in levels   # the replay did gate (price peaks > 160/MWh)
    assert len(finished) == submitted > 200
    assert all(end <= deadline + 1e-9 for end, deadline in finished.values())


def test_queue_refuses_impossible_and_duplicate_jobs_and_reports_missed():
    q = DeferralQueue(GatePolicy())
    c = ScoreCurve(0.0, 10.0, (1.0,))
    assert q.submit(DeferrableJob('a', 10.0, 5.0, 0.0), 0.0, c)[0] is False
    assert q.submit(DeferrableJob('b', 1.0, 50.0, 0.0), 0.0, c)[0] is True
    ok, _, why = q.submit(DeferrableJob('b', 1.0, 50.0, 0.0), 0.0, c)
    assert not ok and 'already' in why
    assert q.tick(49.5, GateLevel.HALT, c) == [] and q.missed and 'HALT' in q.missed[0].reason


@pytest.mark.parametrize('job_id, duration, finish, words', [
    ('a', math.nan, 100.0, 'duration nan'),
    ('a', math.inf, 100.0, 'duration inf'),
    ('a', -5.0, 100.0, 'duration -5.0'),
    ('a', 0.0, 100.0, 'duration 0.0'),
    ('a', 1e12, 1e13, 'duration 1000000000000.0'),
    ('a', 10.0, 1e12, 'past 2592000 s'),
    ('', 10.0, 100.0, 'empty job_id'),
    ('j' * 129, 10.0, 100.0, '129 characters'),
    ('a\x00b', 10.0, 100.0, 'control characters'),
])
def test_jobs_that_cannot_be_planned_are_refused_with_a_reason(job_id, duration, finish, words):
    assert words in check_job(job_id, duration, finish, now_s=0.0)
    q = DeferralQueue(GatePolicy())
    ok, plan, reason = q.submit(DeferrableJob(job_id, duration, finish, 0.0), 0.0, None)
    assert not ok and plan is None and words in reason and not q.pending


def test_missed_jobs_are_counted_and_the_list_is_bounded():
    q = DeferralQueue(GatePolicy())
    for i in range(MAX_MISSED + 20):
        assert q.submit(DeferrableJob(f'j{i}', 10.0, 20.0, 0.0), 0.0, None)[0]
    q.tick(15.0, GateLevel.HALT, None)
    assert q.missed_count == MAX_MISSED + 20 and len(q.missed) == MAX_MISSED
    assert len(q.take_missed()) == MAX_MISSED + 20 and q.take_missed() == []
