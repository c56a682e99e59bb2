"""Schema text as rosbag2 writes it, and decoding real CDR (rclpy-serialized messages) with it."""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from mcap_ros2._dynamic import generate_dynamic
import pytest
from rclpy.serialization import serialize_message

from cellos_audit.core.audit_topics import CELL_TOPICS, LINE_TOPICS, SHARED_TOPICS
from cellos_audit.core.message_definitions import DELIMITER, DefinitionError, constants, dependencies, full_text
from cellos_interfaces.msg import (CellPhase, EnergySignal, ExecutorStatus, GateState, InferenceResult, Inspection,
                                   LineState, ModelInfo, ModelRegistryChange, OperatorAction, PhaseCorrection,
                                   VisionDrift)

FAKE = {
    ('pkg', 'Outer'): 'std_msgs/Header header\nInner[] inners\nuint8 KIND_A=1\nuint8 kind  # comment\n',
    ('pkg', 'Inner'): 'builtin_interfaces/Time stamp\nstring name\nfloat64[3] xyz\n',
    ('std_msgs', 'Header'): 'builtin_interfaces/Time stamp\nstring frame_id\n',
    ('builtin_interfaces', 'Time'): 'int32 sec\nuint32 nanosec\n',
}


def fake(package, name):
    return FAKE[(package, name)]


def installed(package, name):
    return (Path(get_package_share_directory(package)) / 'msg' / f'{name}.msg').read_text()


def test_dependencies_are_qualified_and_primitives_skipped():
    assert dependencies(FAKE[('pkg', 'Outer')], 'pkg') == {'std_msgs/Header', 'pkg/Inner'}
    assert dependencies(FAKE[('pkg', 'Inner')], 'pkg') == {'builtin_interfaces/Time'}


def test_full_text_is_rosbag2s_layout_each_dependency_once_sorted_depth_first():
    text = full_text('pkg/msg/Outer', fake)
    assert text == (FAKE[('pkg', 'Outer')]
                    + '\n' + DELIMITER + 'MSG: pkg/Inner\n' + FAKE[('pkg', 'Inner')]
                    + '\n' + DELIMITER + 'MSG: builtin_interfaces/Time\n' + FAKE[('builtin_interfaces', 'Time')]
                    + '\n' + DELIMITER + 'MSG: std_msgs/Header\n' + FAKE[('std_msgs', 'Header')])


def test_missing_or_malformed_types_are_clear_errors():
    with pytest.raises(DefinitionError, match='no .msg definition for pkg/msg/Nope'):
        full_text('pkg/msg/Nope', fake)
    with pytest.raises(DefinitionError, match='not .package/msg/Type.'):
        full_text('Outer', fake)


def test_constants_of_the_root_type_only():
    text = full_text('cellos_interfaces/msg/InferenceResult', installed)
    status = constants(text, 'STATUS_')
    assert status[0] == 'OK' and status[13] == 'DEFERRED'
    assert constants(full_text('cellos_interfaces/msg/Inspection', installed), 'VERDICT_') == {
        0: 'PASS', 1: 'FAIL', 2: 'UNDECIDED'}


SAMPLES = [
    Inspection(cell_id='line1/cell_01', part_id=7, verdict=1, confidence=0.9, model_id='m', frame_sha256='ab' * 32,
               request_id=3),
    InferenceResult(request_id=3, model_id='id', status=0, compute_ms=1.5, batch_size=2, energy_wh=1e-4,
                    energy_source='model'),
    GateState(cell_id='c', level=2, reason='price', deferred_job_ids=['a', 'b'], forecast_score_per_mwh=[1.0]),
    EnergySignal(site_id='s', price_per_mwh=50.0, carbon_g_per_kwh=200.0, forecast_price_per_mwh=[1.0, 2.0]),
    LineState(line_id='line1', cells=[CellPhase(cell_id='cell_01', phase_error_ms=0.3, held=True,
                                                hold_reason='operator')]),
    ExecutorStatus(models=[ModelInfo(id='x', input_names=['in'])], power_w=20.0),
    PhaseCorrection(cell_id='c', command=1, reason='backpressure'),
    VisionDrift(cell_id='c', state=2, hold=True, ks=float('nan')),
    OperatorAction(node='/line1/coordinator', action='hold', target='cell_01', reason='jam', part_id=5),
    ModelRegistryChange(executor_id='gpu0', change=0, model=ModelInfo(id='x', name='m'), models=[ModelInfo(id='x')]),
]


@pytest.mark.parametrize('msg', SAMPLES, ids=lambda m: type(m).__name__)
def test_real_cdr_decodes_with_the_generated_schema(msg):
    name = f'cellos_interfaces/msg/{type(msg).__name__}'
    decode = generate_dynamic(name, full_text(name, installed))[name]
    out = decode(serialize_message(msg))
    for field in type(msg).get_fields_and_field_types():
        want, got = getattr(msg, field), getattr(out, field)
        if field == 'header':
            continue
        if isinstance(want, float) and want != want:
            assert got != got
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-6), field
        elif hasattr(want, 'get_fields_and_field_types') or (isinstance(want, list) and want and
                                                             hasattr(want[0], 'get_fields_and_field_types')):
            assert repr(got).count('=') > 0
        else:
            assert list(got) == list(want) if hasattr(want, 'tolist') or isinstance(want, list) else got == want, field


def test_every_recorded_type_has_a_definition():
    for rule in (*CELL_TOPICS, *LINE_TOPICS, *SHARED_TOPICS.values()):
        assert full_text(rule.type, installed).startswith(installed('cellos_interfaces', rule.type.rsplit('/', 1)[1]))
