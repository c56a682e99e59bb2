from pathlib import Path

import pytest

from cellos_energy.core.energy_trace import EnergyTrace, TraceError, TraceReplay

SHIPPED = Path(__file__).resolve().parents[4] / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv'


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
