from datetime import datetime, timezone
from pathlib import Path

import pytest

from cellos_energy.core.energy_trace import DayAhead, EnergyTrace, TraceError, TraceReplay

SHIPPED = Path(__file__).resolve().parents[4] / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv'
START_0403 = datetime(2023, 4, 3, tzinfo=timezone.utc).timestamp()


def test_shipped_trace_loads_with_source_header():
    assert SHIPPED.read_text().startswith('#') and 'HewlettPackard/green-dcc' in SHIPPED.read_text()
    t = EnergyTrace.load(SHIPPED)
    assert t.rows == 672 and t.step_s == 3600.0 and t.days == 28.0
    assert t.price_per_mwh[0] == pytest.approx(18.05566) and t.carbon_g_per_kwh[0] == pytest.approx(91.48)
    assert min(t.price_per_mwh) < 0   # spring negative prices are kept, not clipped


def write(tmp_path, text):
    p = tmp_path / 't.csv'
    p.write_text(text)
    return p


def test_gap_and_bad_value_and_header_rejected(tmp_path):
    hdr = 'timestamp_utc,price_per_mwh,carbon_g_per_kwh\n'
    with pytest.raises(TraceError, match='breaks the 3600 s step'):
        EnergyTrace.load(write(tmp_path, hdr + '2023-01-01T00:00:00Z,1,1\n2023-01-01T01:00:00Z,1,1\n'
                               '2023-01-01T03:00:00Z,1,1\n'))
    with pytest.raises(TraceError, match='row 2'):
        EnergyTrace.load(write(tmp_path, hdr + '2023-01-01T00:00:00Z,1,1\n2023-01-01T01:00:00Z,x,1\n'))
    with pytest.raises(TraceError, match='header'):
        EnergyTrace.load(write(tmp_path, 'a,b\n1,2\n'))
    with pytest.raises(TraceError, match='cannot read'):
        EnergyTrace.load(tmp_path / 'missing.csv')


def test_replay_time_compression_and_wrap():
    t = EnergyTrace.load(SHIPPED)
    r = TraceReplay(t, compression=3600.0)          # one row per real second
    p = r.at(2.5)
    assert p.index == 2 and p.offset_real_s == pytest.approx(0.5)
    assert p.data_time_s == pytest.approx(t.start_s + 2.5 * 3600)
    assert r.at(672.0 + 1.2).index == 1 and r.at(673.2).lap == 1
    assert TraceReplay(t, 3600.0, loop=False).at(673.0) is None
    fc = r.forecast(p, 24)
    assert fc.slots == 24 and fc.step_s == 1.0 and fc.price_per_mwh[0] == t.price_per_mwh[2]
    with pytest.raises(TraceError):
        TraceReplay(t, compression=0.0)


def test_day_ahead_publication_rule():
    """CAISO: trade day from 07:00 UTC, published at 20:00 UTC the day before: 11..35 h known."""
    rule = DayAhead()
    t = START_0403
    assert rule.known_until(t) == t + 31 * 3600          # 00:00: through 07:00 tomorrow
    assert rule.known_until(t + 19.5 * 3600) == t + 31 * 3600   # 19:30: still 11.5 h
    assert rule.known_until(t + 20 * 3600) == t + 55 * 3600     # 20:00: the next day is out
    with pytest.raises(TraceError):
        DayAhead(24.0, 20.0)


def test_day_ahead_forecast_never_shows_an_unpublished_row():
    trace = EnergyTrace.load(SHIPPED)
    replay, rule = TraceReplay(trace, compression=3600.0, loop=False), DayAhead()
    for k in range(0, 24 * 12):
        p = replay.at(k / 12.0)
        fc = replay.forecast(p, 1000, rule)
        last_row_start = trace.start_s + (p.index + len(fc.price_per_mwh) - 1) * trace.step_s
        assert last_row_start < rule.known_until(p.data_time_s)
        assert 11 <= len(fc.price_per_mwh) <= 35
        assert fc.price_per_mwh == trace.price_per_mwh[p.index:p.index + len(fc.price_per_mwh)]
