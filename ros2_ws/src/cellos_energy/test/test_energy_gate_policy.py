import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.energy_gate_policy import (POLICY_PARAMS, Action, GateLevel, GateMachine, GatePolicy,
                                                   TaskClass, policy_from_values, target_level, task_decision)
from cellos_energy.core.energy_signal import DR_HIGH, DR_SPECIAL, EnergySignal
from cellos_common.core.params import validate

POLICY = GatePolicy(min_dwell_s=30.0)


def sig(price=50.0, carbon=150.0, budget=5000.0, dr=0):
    return EnergySignal('site', 'test', 0.0, 0.0, price, carbon, budget, dr_level=dr)


def test_thresholds_each_dimension():
    assert target_level(POLICY, sig(), GateLevel.FULL)[0] is GateLevel.FULL
    assert target_level(POLICY, sig(price=95), GateLevel.FULL)[0] is GateLevel.ECO
    assert target_level(POLICY, sig(price=170), GateLevel.FULL)[0] is GateLevel.CRITICAL_ONLY
    assert target_level(POLICY, sig(carbon=305), GateLevel.FULL)[0] is GateLevel.CRITICAL_ONLY
    assert target_level(POLICY, sig(budget=1000), GateLevel.FULL)[0] is GateLevel.ECO
    level, why = target_level(POLICY, sig(dr=DR_SPECIAL), GateLevel.FULL)
    assert level is GateLevel.HALT and 'DR level 3' in why


def test_band_holds_a_level_until_value_drops_below_threshold_minus_band():
    assert target_level(POLICY, sig(price=85), GateLevel.ECO)[0] is GateLevel.ECO
    assert target_level(POLICY, sig(price=85), GateLevel.FULL)[0] is GateLevel.FULL
    assert target_level(POLICY, sig(price=79), GateLevel.ECO)[0] is GateLevel.FULL


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-4.99, 4.99), min_size=2, max_size=300), st.floats(0.1, 20.0))
def test_noise_within_band_changes_level_at_most_once(noise, dt):
    m = GateMachine(GatePolicy(min_dwell_s=0.0, price_band_per_mwh=10.0), now_s=0.0)
    m.update(sig(price=90.0 + noise[0]), 0.0)
    first = m.changes
    for i, n in enumerate(noise[1:], start=1):
        m.update(sig(price=90.0 + n), i * dt)
    assert m.changes - first <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(-10.0, 600.0), st.integers(0, 3)),
                min_size=1, max_size=200))
def test_never_relaxes_within_min_dwell(steps):
    m = GateMachine(POLICY, now_s=0.0)
    t = 0.0
    m.update(sig(), t)
    last_change, level = m.status.since_s, m.status.level
    for dt, price, dr in steps:
        t += dt
        m.update(sig(price=price, dr=dr), t)
        if m.status.level != level:
            if m.status.level < level:
                assert t - last_change >= POLICY.min_dwell_s
            last_change, level = t, m.status.level


def test_tightening_is_immediate_and_loss_goes_to_safe_level_at_once():
    m = GateMachine(POLICY, now_s=0.0)
    assert m.update(sig(), 0.0) and m.status.level is GateLevel.FULL and not m.status.safe_fallback
    assert m.update(sig(dr=DR_HIGH), 1.0) and m.status.level is GateLevel.CRITICAL_ONLY
    m.update(sig(), 2.0)
    assert m.status.level is GateLevel.CRITICAL_ONLY and 'dwell' in m.status.reason
    m.update(sig(), 31.0)
    assert m.status.level is GateLevel.FULL
    m.lost('feed silent', 32.0)
    assert m.status.level is POLICY.safe_level and m.status.safe_fallback and 'feed silent' in m.status.reason


def test_first_signal_leaves_the_start_up_safe_level_at_once():
    m = GateMachine(POLICY, now_s=100.0)
    assert m.status.safe_fallback and m.status.level is GateLevel.CRITICAL_ONLY
    m.update(sig(), 100.1)
    assert m.status.level is GateLevel.FULL


@given(st.sampled_from(list(GateLevel)), st.floats(0, 1e6), st.none() | st.floats(0, 1e6))
def test_critical_is_never_gated(level, now, latest):
    d = task_decision(level, TaskClass.CRITICAL, POLICY, now_s=now, latest_start_s=latest)
    assert d.action is Action.RUN


def test_task_decisions_per_level():
    assert task_decision(GateLevel.FULL, TaskClass.NORMAL, POLICY).action is Action.RUN
    d = task_decision(GateLevel.ECO, TaskClass.NORMAL, POLICY)
    assert d.action is Action.THROTTLE and d.share == 0.5
    assert task_decision(GateLevel.CRITICAL_ONLY, TaskClass.NORMAL, POLICY).action is Action.GATED
    d = task_decision(GateLevel.FULL, TaskClass.DEFERRABLE, POLICY, now_s=0, release_at_s=10, latest_start_s=20)
    assert d.action is Action.DEFER and d.defer_until_s == 10
    assert task_decision(GateLevel.CRITICAL_ONLY, TaskClass.DEFERRABLE, POLICY, now_s=20,
                         release_at_s=10, latest_start_s=20).action is Action.RUN
    d = task_decision(GateLevel.HALT, TaskClass.DEFERRABLE, POLICY, now_s=20, release_at_s=10, latest_start_s=20)
    assert d.action is Action.GATED and 'deadline' in d.reason
    d = task_decision(GateLevel.CRITICAL_ONLY, TaskClass.DEFERRABLE, POLICY, now_s=12,
                      release_at_s=10, latest_start_s=20)
    assert d.action is Action.DEFER and d.defer_until_s == 20


def test_policy_from_params_and_inconsistent_policy_refused():
    p = policy_from_values(validate(POLICY_PARAMS, {}).values)
    assert p == GatePolicy()
    with pytest.raises(ValueError, match='non-decreasing'):
        GatePolicy(price_per_mwh=(100.0, 50.0, 500.0))
    with pytest.raises(ValueError, match='dr_levels'):
        GatePolicy(dr_levels=(0, 5, 2, 3))


def test_a_deadline_the_dwell_and_guard_would_eat_is_refused():
    with pytest.raises(ValueError, match='normal_deadline_s'):
        GatePolicy(min_dwell_s=30.0, normal_guard_s=60.0, normal_deadline_s=60.0)
    with pytest.raises(ValueError, match='gate_mode'):
        GatePolicy(gate_mode='oracle')
