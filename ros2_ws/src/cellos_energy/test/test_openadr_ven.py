from datetime import datetime, timedelta, timezone

from cellos_energy.core.energy_signal import DR_HIGH
from cellos_energy.core.openadr_ven import VenEvents, parse_event

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(event_id, name, payloads, status='active', minutes=10):
    return {'event_descriptor': {'event_id': event_id, 'event_status': status},
            'event_signals': [{'signal_name': name, 'signal_type': 'level',
                               'intervals': [{'dtstart': T0 + timedelta(minutes=minutes * i),
                                              'duration': timedelta(minutes=minutes), 'signal_payload': p}
                                             for i, p in enumerate(payloads)]}]}


def test_simple_level_becomes_dr_level_with_window():
    ev = VenEvents()
    assert ev.on_event(event('e1', 'SIMPLE', [2.0])) == 'optIn'
    snap = ev.snapshot(T0.timestamp() + 60, 60.0, 24)
    assert snap.dr_level == DR_HIGH and snap.dr_event_id == 'e1'
    assert snap.dr_end_s - snap.dr_start_s == 600.0
    assert ev.snapshot(T0.timestamp() + 601, 60.0, 24).dr_level == 0     # window over


def test_price_intervals_become_price_and_forecast():
    ev = VenEvents()
    ev.on_event(event('p', 'ELECTRICITY_PRICE', [40.0, 120.0, 30.0], minutes=1))
    snap = ev.snapshot(T0.timestamp() + 1, 60.0, 10)
    assert snap.price_per_mwh == 40.0
    assert snap.forecast.price_per_mwh == (40.0, 120.0, 30.0) and snap.forecast.step_s == 60.0


def test_cancel_removes_event_and_bad_level_is_refused_with_reason():
    ev = VenEvents()
    ev.on_event(event('e1', 'SIMPLE', [3.0]))
    ev.on_event(event('e1', 'SIMPLE', [3.0], status='cancelled'))
    assert ev.snapshot(T0.timestamp() + 1, 60.0, 1).dr_level == 0
    assert ev.on_event(event('e2', 'SIMPLE', [7.0])) == 'optOut'
    assert 'not one of 0..3' in ev.last_note
    parsed, note = parse_event(event('e3', 'BID_LOAD', [1.0]))
    assert parsed == [] and 'not supported' in note
    parsed, note = parse_event({'event_descriptor': {'event_id': 'x'},
                                'event_signals': [{'signal_name': 'SIMPLE', 'intervals': [{'dtstart': T0}]}]})
    assert parsed == [] and 'malformed' in note


def test_load_dispatch_setpoint_kw_is_budget_w():
    ev = VenEvents()
    ev.on_event(event('l', 'LOAD_DISPATCH', [2.5]))
    assert ev.snapshot(T0.timestamp() + 1, 60.0, 1).power_budget_w == 2500.0
