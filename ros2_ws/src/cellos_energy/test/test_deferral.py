from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.deferral import DeferralQueue, DeferrableJob, ScoreCurve, plan_release
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
