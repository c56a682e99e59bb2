import pytest

from cellos_inference.core.power_model import (EnergyModel, NvmlPower, PowerMeter, PowerReading, RaplPower,
                                               compute_limit, inference_energy_j)


def test_model_is_labelled_modelled():
    r = EnergyModel(idle_w=50.0, energy_per_inference_j=2.0).read(inferences_per_s=100.0)
    assert r.watts == 250.0 and r.source == 'model' and not r.measured and r.label == 'modelled'


def test_rapl_from_a_powercap_tree_with_wrap(tmp_path):
    z = tmp_path / 'intel-rapl:0'
    z.mkdir()
    (tmp_path / 'intel-rapl:0:0').mkdir()          # sub-zone: not counted twice
    (z / 'max_energy_range_uj').write_text('1000000\n')
    (z / 'energy_uj').write_text('900000\n')
    rapl, note = RaplPower.open(str(tmp_path))
    assert rapl is not None, note
    rapl._last = (0.0, [900000])
    (z / 'energy_uj').write_text('100000\n')         # wrapped: 0.2 J in 0.1 s
    r = rapl.read(now_s=0.1)
    assert r.measured and r.source == 'rapl' and r.watts == pytest.approx(2.0)


def test_meter_falls_back_to_model_when_nothing_is_measurable(tmp_path):
    nvml, note = NvmlPower.open()
    m = PowerMeter(EnergyModel(10.0, 1.0), use_nvml=False, rapl_root=str(tmp_path))
    assert m.source == 'model' and 'RAPL' in m.notes[0]
    assert m.read(5.0).watts == 15.0
    if nvml is None:
        assert note   # says why (no driver / no GPU / not installed)
    else:
        assert nvml.read().measured
        nvml.close()


def test_compute_limit_from_budget():
    lim = compute_limit(budget_w=1000.0, idle_w=100.0, busy_w_per_stream=250.0, max_streams=8)
    assert lim.max_concurrency == 3 and lim.duty_cycle == 1.0
    assert compute_limit(1e6, 100.0, 250.0, 8).max_concurrency == 8
    low = compute_limit(200.0, 100.0, 250.0, 8)
    assert low.max_concurrency == 1 and low.duty_cycle == pytest.approx(0.4)
    assert compute_limit(0.0, 100.0, 250.0, 8).duty_cycle == 0.0
    with pytest.raises(ValueError):
        compute_limit(100.0, 0.0, 0.0, 1)


def test_energy_of_one_inference_measured_shares_the_batch_modelled_per_inference():
    model = EnergyModel(20.0, 0.3)
    assert inference_energy_j(PowerReading(100.0, 'nvml', True), 4.0, 2, model) == (pytest.approx(0.2), 'nvml')
    assert inference_energy_j(PowerReading(60.0, 'rapl', True), 10.0, 0, model) == (pytest.approx(0.6), 'rapl')
    assert inference_energy_j(model.read(50.0), 4.0, 2, model) == (0.3, 'model'), 'a modelled reading: the model'
    assert inference_energy_j(None, 4.0, 1, model) == (0.3, 'model')
    assert inference_energy_j(PowerReading(100.0, 'nvml', True), 0.0, 1, model) == (0.0, ''), 'did not run'
