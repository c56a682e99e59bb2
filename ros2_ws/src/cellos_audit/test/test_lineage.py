"""Lineage over a recording written with real messages: the chain of a part, windows, models,
energy sums, and the CLI's text / JSON / CSV; then the report figures of the same recording.
"""
import csv
import io
import json
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
import pytest
from rclpy.serialization import serialize_message

from cellos_audit import lineage_cli, report_cli
from cellos_audit.core import lineage, timelines
from cellos_audit.core.bag_writer import BagWriter
from cellos_audit.core.message_definitions import full_text
from cellos_interfaces.msg import (CellPhase, EnergySignal, ExecutorStatus, CellShare, GateState, InferenceResult,
                                   Inspection, LineState, ModelInfo, ModelRegistryChange, OperatorAction,
                                   PhaseCorrection)

T0 = 1_714_564_800_000_000_000      # 2024-05-01T12:00:00Z
MODEL = 'ab' * 32
SHA = '5e' * 32


def installed(package, name):
    return (Path(get_package_share_directory(package)) / 'msg' / f'{name}.msg').read_text()


def write(w, topic, msg, t_s, latched=False):
    type_name = f'cellos_interfaces/msg/{type(msg).__name__}'
    if not w.has_topic(topic):
        w.add_topic(topic, type_name, full_text(type_name, installed), latched=latched)
    w.write(topic, serialize_message(msg), T0 + int(t_s * 1e9))


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp('audit') / 'line1_test'
    w = BagWriter(folder, folder.name, split_max_bytes=10**9, split_max_s=1e6, fsync=False)
    write(w, '/gpu0/executor/registry', ModelRegistryChange(
        executor_id='gpu0', change=ModelRegistryChange.CHANGE_LOADED, model=ModelInfo(id=MODEL, name='insp'),
        path='/models/insp.onnx', cause='model_list'), 0.0)
    write(w, '/site/energy_feed', EnergySignal(price_per_mwh=40.0, carbon_g_per_kwh=200.0), 0.1, True)
    write(w, '/line1/cell_01/energy/gate', GateState(level=GateState.LEVEL_ECO, reason='price 95',
                                                     price_per_mwh=95.0, carbon_g_per_kwh=250.0), 0.2, True)
    for i in range(3):
        write(w, '/line1/line_state', LineState(line_id='line1', parts_in=i, parts_out=i, cells=[
            CellPhase(cell_id='cell_01', phase_error_ms=0.1 * i, buffer_level=i, held=i == 1,
                      hold_reason='operator: jam')]), 0.3 + i)
        write(w, '/gpu0/executor/status', ExecutorStatus(cells=[CellShare(cell_id='line1/cell_01',
                                                                          compute_share=0.5)]), 0.35 + i)
    write(w, '/line1/cell_01/timing/correction', PhaseCorrection(command=PhaseCorrection.COMMAND_HOLD,
                                                                 reason='operator: jam'), 1.3)
    write(w, '/line1/cell_01/arbiter/result', InferenceResult(
        request_id=5, cell_id='line1/cell_01', task='inspection', model_id=MODEL, status=0, queue_ms=0.5,
        compute_ms=2.0, batch_size=2, backend='onnxruntime-cpu', energy_wh=3.6e-4, energy_source='model'), 1.0)
    write(w, '/line1/cell_01/vision/inspection', Inspection(
        cell_id='line1/cell_01', part_id=17, verdict=Inspection.VERDICT_FAIL, defect_class='scratch',
        confidence=0.93, model_id='insp', capture_ms=1.0, preprocess_ms=0.5, inference_ms=3.0,
        frame_sha256=SHA, request_id=5, has_ground_truth=True, ground_truth_class='scratch'), 1.01)
    write(w, '/line1/cell_01/vision/inspection', Inspection(
        cell_id='line1/cell_01', part_id=18, verdict=Inspection.VERDICT_UNDECIDED, model_id='insp',
        reason='busy: 4 requests in flight', frame_sha256=SHA), 3700.0)     # next hour, no request
    write(w, '/line1/cell_02/arbiter/result', InferenceResult(request_id=9, model_id=MODEL), 3700.5)  # no inspection
    # the recorder took this inspection a few microseconds before its result
    write(w, '/line1/cell_02/vision/inspection', Inspection(part_id=30, request_id=11, verdict=0), 3701.0)
    write(w, '/line1/cell_02/arbiter/result', InferenceResult(request_id=11, model_id=MODEL, compute_ms=1.0,
                                                              energy_wh=1e-4, energy_source='rapl'), 3701.00001)
    # published late (UNDECIDED), its result came half a second after: not the cause of that verdict
    write(w, '/line1/cell_02/vision/inspection', Inspection(part_id=31, request_id=12, verdict=2,
                                                            reason='late: no result'), 3702.0)
    write(w, '/line1/cell_02/arbiter/result', InferenceResult(request_id=12, model_id=MODEL), 3702.5)
    write(w, '/audit/operator_action', OperatorAction(
        node='/line1/review', service='/line1/review/decide', action='review', target='line1/cell_01',
        reason='scratch confirmed', success=True, operator_name='anna', part_id=17), 3800.0)
    w.close()
    return folder


def test_a_load_recorded_after_the_decisions_it_explains(tmp_path):
    """A recorder that matched the latched registry topic late records the load after the first
    decisions: each decision still names the load of its model (by the event's own stamp).
    """
    folder = tmp_path / 'line1_late'
    w = BagWriter(folder, folder.name, split_max_bytes=10**9, split_max_s=1e6, fsync=False)
    write(w, '/line1/cell_01/arbiter/result', InferenceResult(request_id=5, model_id=MODEL, status=0), 1.0)
    write(w, '/line1/cell_01/vision/inspection', Inspection(part_id=17, request_id=5, verdict=0), 1.01)
    change = ModelRegistryChange(executor_id='gpu0', change=ModelRegistryChange.CHANGE_LOADED,
                                 model=ModelInfo(id=MODEL, name='insp'), path='/models/insp.onnx', cause='model_list')
    change.header.stamp.sec = T0 // 1_000_000_000         # loaded at the start, recorded 2 s later
    write(w, '/gpu0/executor/registry', change, 3.0)
    w.close()
    [d] = lineage.by_part(lineage.load([folder]), 17)
    assert d.model_loaded['cause'] == 'model_list' and d.model_loaded['path'] == '/models/insp.onnx'


def test_the_chain_of_a_part(recording):
    audit = lineage.load([recording])
    [d] = lineage.by_part(audit, 17)
    assert (d.line, d.cell, d.cell_id, d.part_id, d.request_id) == ('line1', 'cell_01', 'line1/cell_01', 17, 5)
    assert d.frame_sha256 == SHA and d.model == 'insp' and d.model_id == MODEL
    assert (d.verdict, d.defect_class, d.status) == ('FAIL', 'scratch', 'OK')
    assert d.latency_ms == pytest.approx(4.5) and d.compute_ms == 2.0 and d.batch_size == 2
    assert (d.gate_level, d.gate_reason, d.price_per_mwh) == ('eco', 'price 95', 95.0)
    assert d.carbon_g_per_kwh == 200.0, "the site feed's intensity, not the gate's copy"
    assert d.energy_wh == pytest.approx(3.6e-4) and d.energy_source == 'model' and not d.measured
    assert d.carbon_g == pytest.approx(3.6e-4 / 1000 * 200.0)
    assert d.model_loaded['cause'] == 'model_list' and d.model_loaded['path'] == '/models/insp.onnx'
    assert [r['operator_name'] for r in d.reviews] == ['anna']
    assert lineage.by_part(audit, 17, 'cell_02') == []
    [early] = lineage.by_part(audit, 30)
    assert early.model_id == MODEL and early.energy_source == 'rapl' and early.measured
    [late] = lineage.by_part(audit, 31)
    assert late.model_id == '' and late.status == '' and late.verdict == 'UNDECIDED'
    assert audit.unmatched_results == 2
    text = lineage_cli.chain_text(d)
    for piece in (SHA, MODEL, 'FAIL scratch', 'eco', 'modelled', 'review   ', 'anna', 'scratch confirmed'):
        assert piece in text


def test_window_model_and_energy(recording):
    audit = lineage.load([recording])
    assert [d.part_id for d in lineage.by_window(audit, 'cell_01', T0, T0 + int(60e9))] == [17]
    assert [d.part_id for d in lineage.by_window(audit, None, lineage.parse_time('+3000', T0), None)] == [18, 30, 31]
    models = {m['model_id']: m for m in lineage.by_model(audit)}
    assert models[MODEL]['decisions'] == 2 and models[MODEL]['shares'] == {'FAIL': 0.5, 'PASS': 0.5}
    assert models['(no result) insp']['verdicts'] == {'UNDECIDED': 1}
    hours = lineage.energy(audit, 'hour')
    assert [h['hour'] for h in hours] == ['2024-05-01T12:00Z', '2024-05-01T13:00Z']
    assert hours[0]['energy_wh'] == pytest.approx(3.6e-4) and hours[0]['modelled'] == 1
    assert hours[1]['not_run'] == 2 and hours[1]['measured'] == 1
    parts = {p['part']: p for p in lineage.energy(audit, 'part')}
    assert parts['line1 part 17']['carbon_g'] == pytest.approx(7.2e-5)
    with pytest.raises(ValueError, match='one of'):
        lineage.energy(audit, 'shift')
    assert lineage.parse_time('2024-05-01T12:00:01Z', 0) == T0 + 10**9
    assert lineage.parse_time('1714564801', 0) == T0 + 10**9
    with pytest.raises(ValueError, match='ISO 8601'):
        lineage.parse_time('noon', 0)


def run_cli(capsys, *argv):
    code = lineage_cli.main(list(argv))
    return code, capsys.readouterr().out


def test_cli_formats_and_exit_codes(recording, capsys, tmp_path):
    code, out = run_cli(capsys, 'part', '17', str(recording))
    assert code == 0 and SHA in out
    code, out = run_cli(capsys, '--format', 'json', 'part', '17', str(recording))
    assert code == 0 and json.loads(out)[0]['model_id'] == MODEL
    code, out = run_cli(capsys, 'part', '99', str(recording))
    assert code == 1 and 'not in the recording' in out
    code, out = run_cli(capsys, '--format', 'csv', 'export', str(recording))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r['part_id'] for r in rows] == ['17', '18', '30', '31'] and rows[0]['frame_sha256'] == SHA
    code, out = run_cli(capsys, 'energy', '--by', 'model', str(recording))
    assert code == 0 and MODEL in out
    code, out = run_cli(capsys, 'actions', str(recording))
    assert 'review' in out and 'model_list' in out
    code, _ = run_cli(capsys, '-o', str(tmp_path / 'm.json'), '--format', 'json', 'model', str(recording))
    assert code == 0 and json.loads((tmp_path / 'm.json').read_text())[0]['decisions'] >= 1
    assert lineage_cli.main(['model', str(tmp_path / 'missing')]) == 2


def test_timelines_and_report_figures(recording, tmp_path):
    tl = timelines.load([recording])
    assert tl.cells == ['cell_01']
    assert tl.phase_error_ms['cell_01'].v == pytest.approx([0.0, 0.1, 0.2])
    assert timelines.hold_intervals(tl.held['cell_01'], tl.end_s) == [(pytest.approx(1.2, abs=0.01),
                                                                       pytest.approx(1.0, abs=0.01), 'operator')]
    assert timelines.hold_kind('backpressure: cell_03 buffer full; operator: jam (2 s)') == 'backpressure+operator'
    assert tl.actions == [(pytest.approx(3800.0 - 0.0, abs=1.0), 'review', 'line1/cell_01', 'scratch confirmed')]
    assert tl.gate_level['cell_01'].v == [1] and tl.carbon_g_per_kwh.v == [200.0]
    assert tl.commands[0][1:] == ('cell_01', 'HOLD', 'operator: jam')
    paths = report_cli.draw_report([recording], tmp_path / 'report')
    assert {p.name for p in paths} == {'phase_error.png', 'flow.png', 'holds.png', 'energy_gate.png',
                                       'compute_share.png', 'verdict_mix.png', 'overview.png'}
    for p in paths:
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and p.stat().st_size > 5000
