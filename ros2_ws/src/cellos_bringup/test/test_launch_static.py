"""Static checks of the ROS-distro face of cellos: launch files, parameter YAML, the RViz
config and package.xml, against the code. `launch`, `launch_ros` and `rviz2` are not
installable from PyPI: everything here runs without them, except the last test, which
calls each generate_launch_description() where they are importable and says why not where not.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import re
from pathlib import Path
from typing import List

import pytest
import yaml

from cellos_bringup import launch_plan as plan
from cellos_common.nodes.lifecycle_client import resolve_names

PKG = Path(__file__).resolve().parents[1]
SRC = PKG.parent
REPO = SRC.parents[1]
LAUNCH = REPO / 'launch'
CONFIG = REPO / 'config'
LAUNCH_FILES = sorted(LAUNCH.glob('*.launch.py'))
EXPECTED_LAUNCH = {'line.launch.py', 'cell.launch.py', 'executor.launch.py', 'site_energy.launch.py'}


# -- what the packages declare -------------------------------------------------------------------
def entry_points(package: str) -> dict[str, str]:
    """console_scripts of a package's setup.py, read with ast (setup.py is not imported)."""
    tree = ast.parse((SRC / package / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == 'console_scripts':
                    out = {}
                    for e in v.elts:
                        name, _, target = e.value.partition('=')
                        out[name.strip()] = target.strip()
                    return out
    return {}


PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / 'package.xml').is_file())
ENTRY_POINTS = {exe: (pkg, target) for pkg in PACKAGES for exe, target in entry_points(pkg).items()}


def module_of(executable: str) -> str:
    return ENTRY_POINTS[executable][1].partition(':')[0]


def source_of(module: str) -> str:
    return (SRC / module.split('.')[0] / (module.replace('.', '/') + '.py')).read_text()


def node_name_of(executable: str) -> str:
    """The node name the executable's class passes to Node.__init__."""
    m = re.search(r"super\(\).__init__\('([A-Za-z0-9_]+)'", source_of(module_of(executable)))
    assert m, f'no node name found in {module_of(executable)}'
    return m.group(1)


def param_specs_of(executable: str) -> dict:
    mod = importlib.import_module(module_of(executable))
    cls = next(v for v in vars(mod).values()
               if isinstance(v, type) and v.__module__ == mod.__name__ and hasattr(v, 'PARAMS'))
    specs = {s.name: s for s in cls.PARAMS}
    if executable != 'lifecycle_manager':
        from cellos_common.nodes.base import _AUTOSTART
        specs['autostart'] = _AUTOSTART  # declared by CellosNode for every managed node
    return specs


def params_of(executable: str) -> set[str]:
    return set(param_specs_of(executable))


def node_executables() -> dict[str, str]:
    """node name -> executable, for every node executable (not the runner line_runner, nor the audit CLIs)."""
    return {node_name_of(e): e for e in ENTRY_POINTS if '.nodes.' in module_of(e)}


ALL_PLANS = [
    plan.line_nodes('line1', 3, period_ms=20.0, offset_mode='staggered', with_executor=x, with_vision=v,
                    with_energy=en)
    for x, v, en in itertools.product((False, True), repeat=3)
] + [plan.line_nodes('line1', 2, with_executor=True, with_vision=True, with_energy=True, with_flow=True,
                     with_audit=True, audit_dir='/tmp/audit', audit_name='line1_test'),
     plan.cell_nodes('line1', 'cell_09', with_arbiter=True, with_vision=True, with_energy=True),
     [plan.executor_node(['line1/cell_01'], backend='onnxruntime')], [plan.energy_feed_node()]]


# -- launch files --------------------------------------------------------------------------------
def test_the_launch_files_exist_and_parse():
    assert EXPECTED_LAUNCH <= {p.name for p in LAUNCH_FILES}
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert 'generate_launch_description' in funcs, path.name


def test_launch_files_import_only_what_exists_in_cellos():
    for path in LAUNCH_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('cellos'):
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(mod, alias.name) or importlib.util.find_spec(
                        f'{node.module}.{alias.name}'), f'{path.name}: {node.module}.{alias.name}'
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'plan':
                assert hasattr(plan, node.attr), f'{path.name}: plan.{node.attr} does not exist'


def test_every_executable_is_an_entry_point():
    literal = []
    for path in [*LAUNCH_FILES, PKG / 'cellos_bringup' / 'launch_plan.py']:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == 'executable' and isinstance(node.value, ast.Constant):
                literal.append(node.value.value)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'NodeSpec' and node.args:
                literal.append(node.args[0].value)
    assert literal, 'no executable found'
    planned = {s.executable for nodes in ALL_PLANS for s in nodes} | {'lifecycle_manager'}
    for exe in [*literal, *planned]:
        assert exe in ENTRY_POINTS, f"executable '{exe}' is not a console_scripts entry point of any package"
    for exe in planned:
        assert ENTRY_POINTS[exe][0] == plan.PACKAGES[exe], f'{exe} is in {ENTRY_POINTS[exe][0]}, the plan says ' \
            f'{plan.PACKAGES[exe]}'
    for exe in {e for e in literal if e != 'line_runner'} | planned:
        importlib.import_module(module_of(exe))


def test_planned_node_names_are_the_names_the_nodes_give_themselves():
    for nodes in ALL_PLANS:
        for s in [*nodes, plan.manager_node('line1', nodes)]:
            assert s.name == node_name_of(s.executable), s
            assert s.namespace.startswith('/') and not s.namespace.endswith('/'), s


def test_the_runner_starts_the_plan_each_node_once_and_timing_apart():
    from cellos_bringup.runner import line_plan, node_names, parse_args, processes
    args, _ = parse_args(['--cells', '3', '--line', 'line7', '--timing-only'])
    assert node_names(args) == [s.fqn for s in plan.line_nodes('line7', 3)]
    args, _ = parse_args(['--cells', '2', '--line', 'line7'])
    specs = line_plan(args)
    assert [s.fqn for s in specs] == [s.fqn for s in plan.line_nodes(
        'line7', 2, with_executor=True, with_vision=True, with_energy=True, with_flow=True, with_audit=True)]
    assert specs[0].executable == 'audit_recorder_node', 'the recorder comes up first: it hears every decision'
    args, _ = parse_args(['--cells', '2', '--line', 'line7', '--without', 'audit'])
    assert 'audit_recorder_node' not in {s.executable for s in line_plan(args)}
    groups = processes(specs)
    assert sorted(s.fqn for g in groups.values() for s in g) == sorted(s.fqn for s in specs)
    for g in groups.values():
        assert len({s.namespace for s in g}) == 1
        if any(s.executable == 'timing_node' for s in g):
            assert len(g) == 1, 'a timing node shares its process'


def test_the_line_plan_layout():
    cell_ids = plan.cell_ids
    full = plan.line_nodes('line7', 2, with_executor=True, with_vision=True, with_energy=True)
    fqns = [s.fqn for s in full]
    assert fqns[:3] == ['/site/energy_feed', '/gpu0/executor', '/line7/coordinator']
    for c in cell_ids(2):
        assert [f for f in fqns if f.startswith(f'/line7/{c}/')] == [
            f'/line7/{c}/{n}' for n in ('energy_gate', 'arbiter', 'timing', 'vision')]
    assert len(set(fqns)) == len(fqns)
    executor = next(s for s in full if s.name == 'executor')
    assert executor.overrides['cells'] == ['line7/cell_01', 'line7/cell_02']
    assert all(s.overrides['autostart'] is False for s in full)
    manager = plan.manager_node('line7', full)
    assert resolve_names(manager.overrides['node_names'], '/line7') == fqns


def test_plan_refuses_bad_arguments_with_the_argument_named():
    with pytest.raises(ValueError, match='cells must be >= 1'):
        plan.line_nodes('line1', 0)
    with pytest.raises(ValueError, match='period_ms must be > 0'):
        plan.line_nodes('line1', 2, period_ms=-1.0)
    with pytest.raises(ValueError, match="'with_vision': expected true or false"):
        plan.parse_bool('maybe', 'with_vision')
    with pytest.raises(ValueError, match="'period_ms': expected a number"):
        plan.parse_optional_float('fast', 'period_ms')
    assert plan.parse_optional_float('', 'period_ms') is None
    assert plan.parse_optional_float('25', 'period_ms') == 25.0


def test_every_override_reaches_its_node_with_the_declared_type():
    """launch_ros reads a bare override value with YAML rules ('123' -> int, 'on' -> bool): the plan
    gives each one its type, and each type is the one its node declares.
    """
    assert plan.typed_overrides({'line_id': '123', 'flag': 'on'}) == {'line_id': ('123', str), 'flag': ('on', str)}
    assert plan.typed_overrides({'names': ('a', 'b')}) == {'names': (['a', 'b'], List[str])}
    for bad in ({'x': []}, {'x': [1, 'a']}, {'x': None}):
        with pytest.raises(ValueError, match="override 'x'"):
            plan.typed_overrides(bad)
    checked = 0
    for nodes in ALL_PLANS:
        for s in [*nodes, plan.manager_node('line1', nodes)]:
            specs = param_specs_of(s.executable)
            for name, (value, value_type) in plan.typed_overrides(s.overrides).items():
                want = specs[name].type
                assert value_type == (List[str] if want is list else want), f'{s.fqn} {name}: {value_type}'
                checked += 1
    assert checked > 20


def _function(path: Path, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef) and n.name == name)


def _calls(tree) -> dict[str, list[ast.Call]]:
    out: dict[str, list] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            out.setdefault(f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', ''), []).append(n)
    return out


def test_launch_actions_give_types_and_end_the_launch_when_the_manager_fails():
    calls = _calls(_function(PKG / 'cellos_bringup' / 'launch_plan.py', 'launch_actions'))
    assert [k.arg for c in calls['ParameterValue'] for k in c.keywords] == ['value_type']
    handler = calls['OnProcessExit']
    assert handler and {k.arg for k in handler[0].keywords} == {'target_action', 'on_exit'}
    assert calls['RegisterEventHandler']
    exited = _calls(_function(PKG / 'cellos_bringup' / 'launch_plan.py', 'manager_exited'))
    assert exited['Shutdown'] and exited['LogInfo']
    reason = plan.manager_exit_reason('/line1/lifecycle_manager', 1)
    assert '/line1/lifecycle_manager exited with code 1' in reason and 'could not be brought up' in reason
    assert 'parameters are wrong' in plan.manager_exit_reason('/line1/lifecycle_manager', 2)
    assert plan.manager_exit_reason('/line1/lifecycle_manager', 0) is None
    # killed (SIGKILL -9, SIGSEGV -11) or crashed otherwise: respawned, the launch goes on
    for code in (-9, -11, -6, 137):
        assert plan.manager_exit_reason('/line1/lifecycle_manager', code) is None


def test_every_process_of_a_launch_is_respawned_with_a_delay():
    """launch_ros ExecuteLocal respawns a process on any exit while the launch is not shutting
    down (after respawn_delay); the manager brings the respawned node back to active.
    """
    (node,) = _calls(_function(PKG / 'cellos_bringup' / 'launch_plan.py', 'launch_actions'))['Node']
    keywords = {k.arg: k.value for k in node.keywords}
    assert isinstance(keywords['respawn'], ast.Constant) and keywords['respawn'].value is True
    assert ast.unparse(keywords['respawn_delay']) == 'RESPAWN_DELAY_S' and plan.RESPAWN_DELAY_S > 0


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_file_starts_a_manager_through_the_plan(path):
    """The handler that ends the launch is added by plan.launch_actions to a lifecycle_manager."""
    calls = _calls(ast.parse(path.read_text()))
    assert calls.get('manager_node') and calls.get('launch_actions'), path.name
    assert 'Node' not in calls, f'{path.name} builds a Node itself: use plan.launch_actions'


def test_line_and_cell_ids_are_ros_names():
    with pytest.raises(ValueError, match="launch argument 'line': '123' is not a ROS name"):
        plan.line_nodes('123', 2)
    with pytest.raises(ValueError, match="launch argument 'cell'"):
        plan.cell_nodes('line1', 'cell-1')


def test_resolve_names():
    assert resolve_names(['coordinator', 'cell_01/timing', '/gpu0/executor', ' '], '/line1') == [
        '/line1/coordinator', '/line1/cell_01/timing', '/gpu0/executor']
    assert resolve_names(['timing'], '/') == ['/timing']
    with pytest.raises(ValueError, match='listed twice'):
        resolve_names(['timing', '/line1/timing'], '/line1')


# -- parameter files -----------------------------------------------------------------------------
def param_files() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(CONFIG.glob('*.yaml'))
            if 'ros__parameters' in p.read_text()}


def test_every_referenced_config_file_exists_and_is_a_parameter_file():
    referenced = set(plan.PARAMS_FILES.values())
    for path in LAUNCH_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.fullmatch(r'[\w.-]+\.(yaml|rviz|csv)', node.value):
                referenced.add(node.value)
    for name in sorted(referenced):
        path = CONFIG / name
        assert path.is_file(), f'config/{name} is referenced but missing'
        if name.endswith('.yaml'):
            data = yaml.safe_load(path.read_text())
            assert isinstance(data, dict) and data, name
            for key, body in data.items():
                assert isinstance(body, dict) and set(body) == {'ros__parameters'}, f'{name}: {key}'


def test_every_yaml_parameter_is_declared_by_the_node_it_targets():
    nodes = node_executables()
    checked = 0
    for fname, data in param_files().items():
        for key, body in data.items():
            m = re.fullmatch(r'/\*\*(?:/([A-Za-z0-9_]+))?', key) or re.fullmatch(r'(?:/[\w]+)*/(\w+)', key)
            assert m, f'{fname}: unexpected key {key!r}'
            targets = [nodes[m.group(1)]] if m.group(1) else list(nodes.values())
            assert m.group(1) is None or m.group(1) in nodes, f'{fname}: no node named {m.group(1)!r}'
            for exe in targets if m.group(1) else []:
                unknown = set(body['ros__parameters']) - params_of(exe)
                assert not unknown, f'{fname} [{key}]: {sorted(unknown)} not declared by {exe}'
                checked += 1
    assert checked >= 6


def test_every_launch_override_is_a_declared_parameter():
    for nodes in ALL_PLANS:
        for s in [*nodes, plan.manager_node('line1', nodes)]:
            unknown = set(s.overrides) - params_of(s.executable)
            assert not unknown, f'{s.fqn}: {sorted(unknown)} not declared by {s.executable}'
            for key in s.params:
                data = yaml.safe_load((CONFIG / plan.PARAMS_FILES[key]).read_text())
                assert any(k.endswith(f'/{s.name}') for k in data), \
                    f'{plan.PARAMS_FILES[key]} has no section for {s.name}'


# -- RViz ----------------------------------------------------------------------------------------
def published_topics(executable: str) -> set[str]:
    src = source_of(module_of(executable))
    return set(re.findall(r"create_publisher\(\s*\w+\s*,\s*'([^']+)'", src))


def test_rviz_config_parses_and_shows_topics_the_line_publishes():
    rviz = yaml.safe_load((CONFIG / 'cellos.rviz').read_text())
    vm = rviz['Visualization Manager']
    assert vm['Global Options']['Fixed Frame'] == 'map'
    assert {'Panels', 'Visualization Manager', 'Window Geometry'} <= set(rviz)
    nodes = plan.line_nodes('line1', 4, with_executor=True, with_vision=True, with_energy=True)
    offered = {}
    for s in nodes:
        for t in published_topics(s.executable):
            full = t if t.startswith('/') else (f'{s.fqn}/{t[2:]}' if t.startswith('~/') else f'{s.namespace}/{t}')
            offered[full] = s.executable
    displays = {d['Name']: d for d in vm['Displays']}
    topics = {d['Class']: [] for d in vm['Displays']}
    for d in vm['Displays']:
        assert d['Class'].startswith('rviz_default_plugins/'), d['Class']
        if 'Topic' in d:
            topics[d['Class']].append(d['Topic']['Value'])
            assert d['Topic']['Value'] in offered, f"{d['Name']}: nobody publishes {d['Topic']['Value']}"
            assert set(d['Topic']) == {'Depth', 'Durability Policy', 'History Policy',
                                       'Reliability Policy', 'Value'}
    assert topics['rviz_default_plugins/MarkerArray'] == ['/line1/line_markers']
    assert sorted(topics['rviz_default_plugins/Image']) == [
        f'/line1/cell_0{i}/vision/annotated' for i in range(1, 5)]
    assert 'Line' in displays
    # marker frame: the coordinator's frame_id parameter, as line.yaml sets it
    assert yaml.safe_load((CONFIG / 'line.yaml').read_text())['/**/coordinator']['ros__parameters'][
        'frame_id'] == vm['Global Options']['Fixed Frame']


# -- the launch files under a real launch install --------------------------------------------------
def _launch_missing() -> str | None:
    for name in ('launch', 'launch_ros', 'ament_index_python'):
        spec = importlib.util.find_spec(name)
        # an empty launch/ folder in the working directory imports as a namespace package
        if spec is None or spec.origin in (None, 'namespace'):
            return (f"'{name}' is not importable (ROS 2 launch is not on PyPI; it comes with a ROS 2 "
                    'distro): generate_launch_description() cannot be called here')
    return None


@pytest.mark.skipif(_launch_missing() is not None, reason=str(_launch_missing()))
@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_generate_launch_description_builds_the_nodes(path):
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    context = LaunchContext()
    actions = []
    for entity in ld.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.visit(context)  # sets the default (needs share/cellos_bringup installed)
        elif isinstance(entity, OpaqueFunction):
            actions += entity.visit(context) or []
    nodes = [a for a in actions if isinstance(a, Node)]
    assert nodes and nodes[-1].node_executable == 'lifecycle_manager'
    assert isinstance(actions[-1], RegisterEventHandler)   # the manager's exit ends the launch
    assert all(n.node_package == plan.PACKAGES[n.node_executable] for n in nodes)
