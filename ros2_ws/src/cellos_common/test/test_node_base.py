"""CellosNode's parameter and lifecycle order, in-process (rclpy, no other process).

rclpy runs a node's on-set-parameters callbacks for every declaration, also for a parameter
another component declares on the node: diagnostic_updater's Updater declares
'diagnostic_updater.period' while the node configures. That must neither reach
on_params_changed before configure completed nor break configure, and configure -> cleanup ->
configure must work (the Updater must not be constructed twice on one node).
"""
import sys

import pytest
import rclpy
from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

import updater_standin
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import diagnostics
from cellos_common.nodes.base import CellosNode
from cellos_common.nodes.diagnostics import OK, DiagReport

NS = '/line1/cell_01'
FQN = f'{NS}/probe'


class ProbeNode(CellosNode):
    PARAMS = [ParamSpec('gain', 1.0, 'a gain', min=0.0, max=10.0)]

    def __init__(self, **kwargs):
        super().__init__('probe', namespace=NS, **kwargs)
        self.changes = []
        self.fail_change = False

    def configure(self):
        self.line = {'gain': self.params.gain}   # set here only, as the coordinator's line is
        self.diagnostics.add('probe', lambda: DiagReport(OK, 'fine', {'gain': self.line['gain']}))

    def on_params_changed(self, p):
        if self.fail_change:
            raise RuntimeError('cannot apply')
        self.line['gain'] = p.gain           # AttributeError if called before configure
        self.changes.append(p.gain)

    def cleanup(self):
        del self.line


@pytest.fixture(params=['builtin', 'diagnostic_updater'])
def backend(request, monkeypatch):
    if request.param == 'diagnostic_updater':
        monkeypatch.setattr(diagnostics, '_du', updater_standin)
    else:
        monkeypatch.setattr(diagnostics, '_du', None)
    return request.param


@pytest.fixture
def node(backend):
    context = rclpy.Context()
    rclpy.init(context=context)
    n = ProbeNode(context=context)
    yield n
    n.destroy_node()
    rclpy.shutdown(context=context)


def state(node) -> int:
    return node._state_machine.current_state[0]


def diagnostics_entities(node) -> tuple[int, int]:
    pubs = [p for p in node.publishers if p.topic_name == '/diagnostics']
    return len(pubs), len(list(node.timers))


def test_third_party_parameter_before_configure(node):
    node.declare_parameter('camera_driver.rate_hz', 30.0)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert state(node) == State.PRIMARY_STATE_INACTIVE
    assert node.changes == []
    assert node.has_parameter('camera_driver.rate_hz')


def test_configure_cleanup_configure(node, backend):
    assert diagnostics_entities(node) == (0, 0)
    for _ in range(2):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert state(node) == State.PRIMARY_STATE_ACTIVE
        assert diagnostics_entities(node) == (1, 1)
        assert node.diagnostics.backend == backend
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert state(node) == State.PRIMARY_STATE_UNCONFIGURED
        # the Updater's (or the built-in) timer and publisher do not outlive cleanup
        assert diagnostics_entities(node) == (0, 0)
    assert node.changes == []
    if backend == 'diagnostic_updater':
        assert node.has_parameter('diagnostic_updater.period')


def test_status_names_are_fully_qualified(node, backend):
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    if backend == 'builtin':
        names = [s.name for s in node.diagnostics.status()]
    else:
        updater = node.diagnostics._updater
        updater.update()
        names = [s.name for s in updater.published[-1].status]
    assert names == [f'{FQN}: boundary', f'{FQN}: probe']


def test_runtime_changes_reach_the_node_after_configure_only(node):
    assert node.set_parameters([Parameter('gain', value=2.0)])[0].successful
    assert node.changes == []               # unconfigured: stored, applied at configure
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.line['gain'] == 2.0
    assert node.set_parameters([Parameter('gain', value=3.0)])[0].successful
    assert node.changes == [3.0] and node.params.gain == 3.0
    node.declare_parameter('camera_driver.rate_hz', 30.0)
    assert node.set_parameters([Parameter('camera_driver.rate_hz', value=15.0)])[0].successful
    assert node.changes == [3.0]
    bad = node.set_parameters([Parameter('gain', value=11.0)])[0]
    assert not bad.successful and 'gain' in bad.reason
    assert node.get_parameter('gain').value == 3.0
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.set_parameters([Parameter('gain', value=4.0)])[0].successful
    assert node.changes == [3.0]


def test_a_change_the_node_cannot_apply_is_refused(node):
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    node.fail_change = True
    res = node.set_parameters([Parameter('gain', value=5.0)])[0]
    assert not res.successful and 'cannot apply' in res.reason
    assert node.get_parameter('gain').value == 1.0 and node.params.gain == 1.0


@pytest.fixture
def default_context():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_events_executor_falls_back_where_rclpy_lacks_it(default_context, monkeypatch, capfd):
    from rclpy.executors import SingleThreadedExecutor
    from cellos_common.nodes.base import make_executor
    monkeypatch.setitem(sys.modules, 'rclpy.experimental', None)   # import fails as on Jazzy < rclpy 7.1.4
    monkeypatch.delenv('CELLOS_EXECUTOR', raising=False)
    ex = make_executor('events')
    assert type(ex) is SingleThreadedExecutor
    ex.shutdown()
    assert 'EventsExecutor not available' in capfd.readouterr().err


def test_events_executor_where_rclpy_has_it(default_context, monkeypatch):
    pytest.importorskip('rclpy.experimental', reason='this rclpy has no EventsExecutor')
    from cellos_common.nodes.base import make_executor
    monkeypatch.setenv('CELLOS_EXECUTOR', 'events')
    ex = make_executor('multi')
    assert type(ex).__name__ == 'EventsExecutor'   # a factory function in Kilted's rclpy, so no isinstance
    ex.shutdown()


class MapNode(CellosNode):
    PARAMS = [ParamSpec('cells', [], 'cells', read_only=True, item=str),
              ParamSpec('weights', 1.0, 'weight', keys='cells', min=0.001, max=10.0)]

    def __init__(self, **kwargs):
        super().__init__('map_probe', **kwargs)


def make_map_node(context, *overrides):
    return MapNode(context=context, parameter_overrides=[Parameter(n, value=v) for n, v in overrides])


@pytest.fixture
def context():
    c = rclpy.Context()
    rclpy.init(context=c)
    yield c
    rclpy.shutdown(context=c)


def test_map_entries_are_declared_described_and_validated(context):
    n = make_map_node(context, ('cells', ['line1/cell_01', 'line1/cell_02']), ('weights.line1.cell_02', 2.0))
    try:
        assert n.has_parameter('weights.line1.cell_01') and n.has_parameter('weights.line1.cell_02')
        d = n.describe_parameter('weights.line1.cell_01')
        assert "entry 'line1/cell_01' of cells" in d.description and d.floating_point_range[0].to_value == 10.0
        assert n.describe_parameter('cells').read_only
        assert n.read_params().weights == {'line1/cell_01': 1.0, 'line1/cell_02': 2.0}
        bad = n.set_parameters([Parameter('weights.line1.cell_01', value=0.0)])[0]
        assert not bad.successful and 'weights.line1.cell_01' in bad.reason
        assert n.set_parameters([Parameter('weights.line1.cell_01', value=3.0)])[0].successful
        assert n.read_params().weights['line1/cell_01'] == 3.0
    finally:
        n.destroy_node()


def test_an_empty_string_array_is_declared_as_one(context):
    n = make_map_node(context)
    try:
        assert n.describe_parameter('cells').type == Parameter.Type.STRING_ARRAY.value   # not a byte array
        assert n.read_params().cells == [] and n.read_params().weights == {}
    finally:
        n.destroy_node()


def test_a_start_up_value_for_a_key_not_listed_is_refused(context):
    with pytest.raises(ParameterError, match=r"weights.cell_09: the entries of 'weights' are those of 'cells' "
                                             r"\(cell_01\)"):
        make_map_node(context, ('cells', ['cell_01']), ('weights.cell_09', 2.0))
