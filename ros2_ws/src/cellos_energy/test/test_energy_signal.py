import math
import signal
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.energy_signal import (DR_HIGH, EnergySignal, Forecast, Override, ScoreCurve, SignalTracker,
                                              apply_override, check_signal, make_override, override_from_record,
                                              override_record)


def sig(**kw):
    base = dict(site_id='site', source='test', stamp_s=1000.0, data_time_s=1000.0, price_per_mwh=50.0,
                carbon_g_per_kwh=150.0, power_budget_w=5000.0)
    base.update(kw)
    return EnergySignal(**base)


def test_good_signal_passes():
    assert check_signal(sig()) is None


@pytest.mark.parametrize('kw, words', [
    (dict(price_per_mwh=math.nan), 'price_per_mwh is not a finite'),
    (dict(price_per_mwh=1e9), 'price_per_mwh'),
    (dict(carbon_g_per_kwh=-1.0), 'carbon_g_per_kwh'),
    (dict(power_budget_w=-5.0), 'power_budget_w'),
    (dict(dr_level=7), 'dr_level 7'),
    (dict(age_s=-1.0), 'age_s'),
    (dict(site_id=''), 'site_id'),
    (dict(dr_start_s=20.0, dr_end_s=10.0), 'DR window'),
    (dict(forecast=Forecast(0.0, 0.0, (1.0,), ())), 'forecast step'),
    (dict(forecast=Forecast(10.0, 0.0, (1.0, 2.0), (1.0,))), 'differ in length'),
    (dict(forecast=Forecast(10.0, 0.0, (math.inf,), ())), 'forecast price'),
])
def test_bad_signal_rejected_with_reason(kw, words):
    reason = check_signal(sig(**kw))
    assert reason is not None and words in reason


def test_tracker_keeps_last_good_on_rejection():
    t = SignalTracker(stale_after_s=5.0)
    assert t.offer(sig(price_per_mwh=42.0), now_s=0.0) is None
    reason = t.offer(sig(price_per_mwh=math.inf), now_s=1.0)
    assert reason and 'price' in reason
    assert t.last_good.price_per_mwh == 42.0 and t.rejected == 1 and t.last_rejection == reason
    assert t.received_at_s == 0.0


def test_staleness_counts_receive_time_and_carried_age():
    t = SignalTracker(stale_after_s=5.0)
    assert t.is_stale(0.0) and t.age_s(0.0) == math.inf
    t.offer(sig(age_s=2.0), now_s=10.0)
    assert t.age_s(11.0) == pytest.approx(3.0)
    assert not t.is_stale(12.9) and t.is_stale(13.1)


def test_override_raises_dr_and_expires():
    ov = Override(DR_HIGH, 800.0, until_s=100.0, reason='grid', since_s=0.0)
    out = apply_override(sig(), ov, now_s=50.0)
    assert out.dr_level == DR_HIGH and out.power_budget_w == 800.0 and out.dr_end_s == 100.0
    assert 'manual' in out.source and out.dr_event_id == 'manual:grid'
    assert apply_override(sig(), ov, now_s=100.0) == sig()
    assert apply_override(sig(), None, now_s=0.0) == sig()


# -- sizes, clocks, overrides kept across restarts ---------------------------------------------

@pytest.mark.parametrize('kw, words', [
    (dict(forecast=Forecast(60.0, 0.0, (50.0,) * 2001, ())), 'forecast of 2001 slots'),
    (dict(forecast=Forecast(1e9, 0.0, (50.0,), ())), 'forecast step'),
    (dict(site_id='s' * 257), 'site_id is 257 characters'),
    (dict(dr_event_id='e' * 10_000), 'dr_event_id'),
    (dict(line_ids=tuple(f'l{i}' for i in range(65)), line_budget_w=(1.0,) * 65), '65 line budgets'),
    (dict(dr_end_s=math.inf), 'dr_end_s is not a finite'),
    (dict(forecast=Forecast(math.nan, 0.0, (), ())), 'forecast_step_s is not a finite'),
    # so fine a step that (t - t0) / step is infinite: int() of it raised OverflowError in the gate
    (dict(forecast=Forecast(5e-324, 0.0, (50.0,), ())), 'forecast step 5e-324 s must be in [0.001, 86400]'),
    (dict(forecast=Forecast(1e-300, 0.0, (50.0,), ())), 'forecast step 1e-300 s'),
    (dict(forecast=Forecast(1e-4, 0.0, (50.0,), ())), 'forecast step 0.0001 s'),
])
def test_oversized_or_non_finite_signals_are_refused(kw, words):
    reason = check_signal(sig(**kw))
    assert reason is not None and words in reason


def test_a_stamp_far_from_the_receivers_clock_is_refused():
    assert check_signal(sig(stamp_s=1000.0), now_s=1500.0) is None
    assert 'stamp -3600 s from this host' in check_signal(sig(stamp_s=1000.0), now_s=4600.0)


def test_freshness_is_on_the_receivers_monotonic_clock():
    """A dead feed stays stale whatever the wall clock does: the tracker only sees monotonic time."""
    t = SignalTracker(stale_after_s=5.0)
    assert t.offer(sig(stamp_s=10_000.0), now_s=100.0, wall_s=10_000.0) is None
    assert not t.is_stale(104.0)
    # the receiving host's wall clock steps back an hour: the next signal's stamp is refused,
    # and the last good one still ages by monotonic time
    assert 'stamp +3600 s' in t.offer(sig(stamp_s=10_001.0), now_s=101.0, wall_s=6_401.0)
    assert t.is_stale(105.5)


def test_overrides_are_checked_and_round_trip_through_their_record():
    ov = make_override(DR_HIGH, 1500.0, 600.0, 'chiller trip', now_s=1000.0)
    assert ov.until_s == 1600.0 and override_from_record(override_record(ov)) == ov
    forever = make_override(DR_HIGH, 0.0, 0.0, '', now_s=1000.0)
    assert forever.until_s == math.inf and forever.reason == 'manual'
    assert override_record(forever)['until_s'] is None and override_from_record(override_record(forever)) == forever
    for args, words in [((4, 0.0, 0.0, ''), 'dr_level 4'), ((1, math.nan, 0.0, ''), 'finite'),
                        ((1, 0.0, math.inf, ''), 'finite'), ((1, 1e12, 0.0, ''), 'above'),
                        ((1, 0.0, 1e9, ''), 'longer than'), ((1, 0.0, 0.0, 'r' * 300), 'reason is 300')]:
        with pytest.raises(ValueError, match=words):
            make_override(*args, now_s=0.0)
    for bad in ({}, {**override_record(ov), 'dr_level': 9}, {**override_record(ov), 'until_s': 'soon'}):
        with pytest.raises(ValueError):
            override_from_record(bad)


# -- the score curve over a forecast -----------------------------------------------------------

@contextmanager
def at_most(seconds: float):
    """TimeoutError when the block runs longer (a loop that would never end fails the test)."""
    def expired(*_):
        raise TimeoutError(f'still running after {seconds} s')
    before = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_the_mean_over_slots_ends_when_a_slot_edge_rounds_down():
    """A step that is not a binary fraction (a trace hour at time compression 7): t0 + 2*step
    rounds to just below the edge of slot 2, which looked like slot 1 again, for ever.
    """
    step, t0 = 3600.0 / 7, 1796200237.964627
    assert (t0 + 2 * step - t0) // step == 1.0            # the rounding that held the loop in place
    curve = ScoreCurve(t0, step, tuple(float(i) for i in range(48)))
    with at_most(2.0):
        assert curve.mean(t0 + 1.5 * step, t0 + 3.5 * step) == pytest.approx(2.0)


@settings(max_examples=300, deadline=None)
@given(step=st.floats(1e-3, 86400.0), t0=st.floats(1.6e9, 2.1e9), start=st.floats(-50.0, 60.0),
       length=st.floats(1e-3, 60.0), n=st.integers(1, 48))
def test_the_mean_ends_and_stays_within_the_slot_scores(step, t0, start, length, n):
    scores = tuple(float((i * 7919) % 101) for i in range(n))
    curve = ScoreCurve(t0, step, scores)
    a = t0 + start * step
    with at_most(2.0):
        m = curve.mean(a, a + length * step)
    assert min(scores) - 1e-6 <= m <= max(scores) + 1e-6
