"""Which node processes a ``ros2 launch`` of a line, a cell, an executor or a site starts:
executable, node name, namespace, parameter files and overrides. Plain Python (no launch,
no rclpy), so the launch files in launch/ stay a thin mapping onto launch_ros ``Node``
actions and the plan itself is tested without a ROS install.

Cell ids and namespaces follow the no-launch runner (cellos_bringup.runner): /<line>/cell_01 ...
Every managed node gets ``autostart: false``; one lifecycle_manager per launch brings them
all up (configure all, then activate all) in the order listed here: the line's audit recorder
first (it must hear the first decision), then producers before their consumers.

Supervision: every process of a launch is respawned when it dies (launch_ros ``respawn`` after
RESPAWN_DELAY_S; a process that ends while the launch shuts down is not), and the
lifecycle_manager brings a respawned node back to active (it watches its nodes' states). Only a
manager that exits with its own error codes (1: the bring-up failed, 2: bad parameters) ends
the launch: respawning it would fail the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List

# the package of each executable (its console_scripts entry point)
PACKAGES = {
    'timing_node': 'cellos_line',
    'coordinator_node': 'cellos_line',
    'plant_node': 'cellos_line',
    'executor_node': 'cellos_inference',
    'arbiter_node': 'cellos_inference',
    'vision_node': 'cellos_vision',
    'energy_feed_node': 'cellos_energy',
    'energy_gate_node': 'cellos_energy',
    'lifecycle_manager': 'cellos_common',
    'audit_recorder_node': 'cellos_audit',
}
BRINGUP = 'cellos_bringup'
# parameter file of each area (installed under share/cellos_bringup/config)
PARAMS_FILES = {
    'line': 'line.yaml',
    'executor': 'executor.yaml',
    'vision': 'vision.yaml',
    'energy': 'energy.yaml',
}
# an override value 'config:<file>' names a file of the config folder (installed share or repo)
CONFIG_PREFIX = 'config:'
TRACE_FILE = 'caiso_np15_2023-04_4weeks_hourly.csv'   # the site feed's price and carbon trace
EXECUTOR_NS = '/gpu0'
SITE_NS = '/site'
MANAGER_TIMEOUT_S = 60.0  # executor and vision load models while configuring
RESPAWN_DELAY_S = 2.0     # a dead process is started again after this (launch_ros respawn_delay)
MANAGER_FAILURE_CODES = (1, 2)   # lifecycle_manager: bring-up failed, bad parameters


@dataclass(frozen=True)
class NodeSpec:
    executable: str       # console_scripts entry point of its package (PACKAGES)
    name: str             # the node's own name (what its class passes to Node.__init__)
    namespace: str        # absolute
    params: tuple = ()    # keys of PARAMS_FILES, in load order
    overrides: dict = field(default_factory=dict)

    @property
    def package(self) -> str:
        return PACKAGES[self.executable]

    @property
    def fqn(self) -> str:
        return f'{self.namespace.rstrip("/")}/{self.name}'


def cell_ids(n: int) -> list[str]:
    return [f'cell_{i + 1:02d}' for i in range(n)]


# launch argument naming each area's parameter file
PARAMS_ARGUMENTS = {'line': 'params_file', 'executor': 'executor_params_file',
                    'vision': 'vision_params_file', 'energy': 'energy_params_file'}


def params_file_arguments(descriptions: dict) -> list:
    """DeclareLaunchArgument of each area's parameter file ({area: description}), defaulting
    to the installed one. launch is imported here only.
    """
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare
    return [DeclareLaunchArgument(PARAMS_ARGUMENTS[area], description=text, default_value=PathJoinSubstitution(
                [FindPackageShare(BRINGUP), 'config', PARAMS_FILES[area]]))
            for area, text in descriptions.items()]


def params_files(arg, areas) -> dict:
    """The launch_actions files mapping from the performed launch arguments of ``areas``."""
    return {**{area: arg(PARAMS_ARGUMENTS[area]) for area in areas}, 'config_dir': share_config_dir()}


def share_config_dir() -> str:
    """The installed config folder (needs ament_index_python, as launch does)."""
    from ament_index_python.packages import get_package_share_directory
    return get_package_share_directory(BRINGUP) + '/config'


def line_period_ms(line_params_file: str) -> float:
    """The coordinator's period_ms in a line parameter file (config/line.yaml): the one rate a
    line runs at when neither make run nor the launch is given one.
    """
    import yaml
    with open(line_params_file) as f:
        doc = yaml.safe_load(f) or {}
    for key, node in doc.items():
        if key.rstrip('/').endswith('coordinator') and 'period_ms' in (node or {}).get('ros__parameters', {}):
            return float(node['ros__parameters']['period_ms'])
    raise ValueError(f'{line_params_file}: no coordinator period_ms')


def resolve_overrides(overrides: dict, config_dir: str) -> dict:
    return {k: (f'{config_dir.rstrip("/")}/{v[len(CONFIG_PREFIX):]}'
                if isinstance(v, str) and v.startswith(CONFIG_PREFIX) else v)
            for k, v in overrides.items()}


def _ns(*parts: str) -> str:
    return '/' + '/'.join(p.strip('/') for p in parts if p.strip('/'))


_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')


def check_name(text: str, what: str) -> str:
    """A line or cell id as used in namespaces and topic names (a ROS name token), or ValueError."""
    if not _NAME.fullmatch(text):
        raise ValueError(f"launch argument '{what}': {text!r} is not a ROS name (a letter, then letters, "
                         'digits or underscores)')
    return text


def _managed(overrides: dict) -> dict:
    return {'autostart': False, **overrides}


def cell_nodes(line: str, cell: str, *, period_ms: float | None = None, with_arbiter: bool = False,
               with_vision: bool = False, with_energy: bool = False) -> list[NodeSpec]:
    ns = _ns(check_name(line.strip('/'), 'line'), check_name(cell.strip('/'), 'cell'))
    timing = {'line_id': line.strip('/')}
    if period_ms is not None:
        timing['period_ms'] = float(period_ms)
    out = []
    if with_energy:
        out.append(NodeSpec('energy_gate_node', 'energy_gate', ns, ('energy',), _managed({})))
    if with_arbiter or with_vision:  # vision submits through the cell's arbiter
        out.append(NodeSpec('arbiter_node', 'arbiter', ns, ('executor',),
                            _managed({'use_energy_gate': bool(with_energy),
                                      'executor_status_topic': f'{EXECUTOR_NS}/executor/status'})))
    out.append(NodeSpec('timing_node', 'timing', ns, ('line',), _managed(timing)))
    if with_vision:
        out.append(NodeSpec('vision_node', 'vision', ns, ('vision',), _managed({})))
    return out


def executor_node(cells_served=(), namespace: str = EXECUTOR_NS, **overrides) -> NodeSpec:
    extra = {'model_list': CONFIG_PREFIX + 'models.yaml'}
    if cells_served:
        extra['cells'] = list(cells_served)
    return NodeSpec('executor_node', 'executor', _ns(namespace), ('executor',),
                    _managed({**extra, **overrides}))


def energy_feed_node(namespace: str = SITE_NS, lines=()) -> NodeSpec:
    """The site feed; ``lines``: the lines sharing its power budget, equally (else config/energy.yaml's)."""
    extra = {'line_ids': list(lines)} if lines else {}
    return NodeSpec('energy_feed_node', 'energy_feed', _ns(namespace), ('energy',),
                    _managed({'trace_file': CONFIG_PREFIX + TRACE_FILE, **extra}))


def audit_node(line: str, cells, *, output_dir: str | None = None, bag_name: str | None = None) -> NodeSpec:
    """The line's audit recorder (cellos_audit): records the line, its executor and site feed."""
    overrides = {'cells': list(cells)}
    if output_dir:
        overrides['output_dir'] = output_dir
    if bag_name:
        overrides['bag_name'] = bag_name
    return NodeSpec('audit_recorder_node', 'audit_recorder', _ns(line), ('line',), _managed(overrides))


def line_nodes(line: str = 'line1', cells: int = 4, *, period_ms: float | None = None,
               offset_mode: str | None = None, with_executor: bool = False, with_vision: bool = False,
               with_energy: bool = False, with_flow: bool = False, with_audit: bool = False,
               audit_dir: str | None = None, audit_name: str | None = None) -> list[NodeSpec]:
    if cells < 1:
        raise ValueError(f'cells must be >= 1, got {cells}')
    if period_ms is not None and not period_ms > 0:
        raise ValueError(f'period_ms must be > 0, got {period_ms}')
    line = check_name(line.strip('/'), 'line')
    ids = cell_ids(cells)
    out = []
    if with_audit:
        out.append(audit_node(line, ids, output_dir=audit_dir, bag_name=audit_name))
    if with_energy:
        out.append(energy_feed_node(lines=(line,)))
    if with_executor:
        out.append(executor_node([f'{line}/{c}' for c in ids]))
    coordinator = {}
    if period_ms is not None:
        coordinator['period_ms'] = float(period_ms)
    if offset_mode is not None:
        coordinator['offset_mode'] = offset_mode
    out.append(NodeSpec('coordinator_node', 'coordinator', _ns(line), ('line',), _managed(coordinator)))
    if with_flow:  # the plant simulation; a real plant's PLC bridge publishes plant/state instead
        plant = {'cells': list(ids)}
        out.append(NodeSpec('plant_node', 'plant', _ns(line), ('line',), _managed(plant)))
    for c in ids:
        out += cell_nodes(line, c, period_ms=period_ms, with_arbiter=with_executor,
                          with_vision=with_vision, with_energy=with_energy)
    return out


def manager_node(namespace: str, managed: list[NodeSpec], autostart: bool = True) -> NodeSpec:
    """The one lifecycle_manager of a launch; it lists absolute names, so it may sit anywhere."""
    return NodeSpec('lifecycle_manager', 'lifecycle_manager', _ns(namespace), (),
                    {'autostart': bool(autostart), 'node_names': [n.fqn for n in managed],
                     'transition_timeout_s': MANAGER_TIMEOUT_S})


def parse_bool(text: str, what: str) -> bool:
    """A launch argument's text as a bool, or ValueError naming the argument."""
    t = str(text).strip().lower()
    if t in ('true', '1', 'yes', 'on'):
        return True
    if t in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f"launch argument '{what}': expected true or false, got {text!r}")


def parse_optional_float(text: str, what: str) -> float | None:
    t = str(text).strip()
    if not t:
        return None
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"launch argument '{what}': expected a number, got {text!r}") from None


def typed_overrides(overrides: dict) -> dict[str, tuple]:
    """{name: (value, value_type)} for launch_ros ``ParameterValue(value, value_type=...)``.

    A bare override value goes through launch_ros' YAML rules, under which a string such as
    '123' or 'true' can become an int or a bool; with its type given it reaches the node as
    declared (str, bool, int, float or a uniform list of one of them).
    """
    out = {}
    for name, value in overrides.items():
        if isinstance(value, (list, tuple)):
            kinds = {type(v) for v in value}
            if len(kinds) != 1 or not kinds <= {str, bool, int, float}:
                raise ValueError(f"override '{name}': a list must be non-empty and of one type "
                                 f'(str, bool, int or float), got {value!r}')
            out[name] = (list(value), List[kinds.pop()])
        elif type(value) in (str, bool, int, float):
            out[name] = (value, type(value))
        else:
            raise ValueError(f"override '{name}': unsupported value {value!r}")
    return out


def launch_actions(specs: list[NodeSpec], params_files: dict[str, str]) -> list:
    """launch_ros Node actions for the specs; ``params_files`` maps PARAMS_FILES keys to
    paths. Every process is respawned when it dies (RESPAWN_DELAY_S later); a lifecycle_manager
    that exits with one of its failure codes (its autostart bring-up failed, bad parameters)
    shuts the whole launch down with the reason. launch and launch_ros are imported here only:
    the rest of this module needs no ROS install.
    """
    from launch.actions import RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue
    actions = []
    config_dir = params_files.get('config_dir', '')
    for s in specs:
        parameters = [params_files[k] for k in s.params]
        if s.overrides:  # after the files: overrides win
            typed = typed_overrides(resolve_overrides(s.overrides, config_dir))
            parameters.append({k: ParameterValue(v, value_type=t) for k, (v, t) in typed.items()})
        node = Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace,
                    parameters=parameters, output='screen', emulate_tty=True,
                    respawn=True, respawn_delay=RESPAWN_DELAY_S)
        actions.append(node)
        if s.executable == 'lifecycle_manager':
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=lambda event, context, fqn=s.fqn: manager_exited(fqn, event.returncode))))
    return actions


def manager_exit_reason(fqn: str, returncode: int) -> str | None:
    """Why the launch must end when the lifecycle manager exited with ``returncode`` (None: it need
    not; a manager killed by a signal or a crash is respawned and brings its nodes up again).
    """
    if returncode not in MANAGER_FAILURE_CODES:
        return None
    what = 'the line could not be brought up' if returncode == 1 else 'its parameters are wrong'
    return f'{fqn} exited with code {returncode}: {what} (see its log above); shutting the launch down'


def manager_exited(fqn: str, returncode: int) -> list:
    """OnProcessExit actions for the lifecycle manager: a clear log line and Shutdown on failure."""
    from launch.actions import LogInfo, Shutdown
    reason = manager_exit_reason(fqn, returncode)
    return [LogInfo(msg=reason), Shutdown(reason=reason)] if reason else []
