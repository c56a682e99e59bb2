"""One cell joining a running line (coordinator elsewhere):
`ros2 launch cellos cell.launch.py line:=line1 cell:=cell_03`.

Starts in /<line>/<cell> the timing node (+ arbiter, vision, energy gate when enabled) and a
lifecycle_manager there that brings them up: configure all, then activate all.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from cellos import launch_plan as plan

BOOL = ['true', 'false']


def _config(name):
    return PathJoinSubstitution([FindPackageShare('cellos'), 'config', name])


def _arguments():
    return [
        DeclareLaunchArgument('line', default_value='line1', description='line namespace'),
        DeclareLaunchArgument('cell', default_value='cell_01', description='cell id (its namespace under the line)'),
        DeclareLaunchArgument('period_ms', default_value='',
                              description='nominal cycle period [ms] until the coordinator sends the schedule; '
                                          'empty: from params_file'),
        DeclareLaunchArgument('with_arbiter', default_value='false', choices=BOOL,
                              description="start the cell's inference arbiter (client of /gpu0/executor)"),
        DeclareLaunchArgument('with_vision', default_value='false', choices=BOOL,
                              description='start the vision node (and the arbiter)'),
        DeclareLaunchArgument('with_energy', default_value='false', choices=BOOL,
                              description="start the cell's energy gate (feed: /site/energy_feed)"),
        DeclareLaunchArgument('autostart', default_value='true', choices=BOOL,
                              description='bring the cell up at once'),
        DeclareLaunchArgument('params_file', default_value=_config(plan.PARAMS_FILES['line']),
                              description='timing parameters'),
        DeclareLaunchArgument('executor_params_file', default_value=_config(plan.PARAMS_FILES['executor']),
                              description='arbiter parameters'),
        DeclareLaunchArgument('vision_params_file', default_value=_config(plan.PARAMS_FILES['vision']),
                              description='vision parameters'),
        DeclareLaunchArgument('energy_params_file', default_value=_config(plan.PARAMS_FILES['energy']),
                              description='energy gate parameters'),
    ]


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    line, cell = arg('line').strip('/'), arg('cell').strip('/')
    nodes = plan.cell_nodes(
        line, cell,
        period_ms=plan.parse_optional_float(arg('period_ms'), 'period_ms'),
        with_arbiter=plan.parse_bool(arg('with_arbiter'), 'with_arbiter'),
        with_vision=plan.parse_bool(arg('with_vision'), 'with_vision'),
        with_energy=plan.parse_bool(arg('with_energy'), 'with_energy'))
    manager = plan.manager_node(f'{line}/{cell}', nodes, plan.parse_bool(arg('autostart'), 'autostart'))
    files = {'line': arg('params_file'), 'executor': arg('executor_params_file'),
             'vision': arg('vision_params_file'), 'energy': arg('energy_params_file')}
    files['config_dir'] = plan.share_config_dir()
    return plan.launch_actions([*nodes, manager], files)


def generate_launch_description():
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_nodes)])
