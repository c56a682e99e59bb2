"""One cell joining a running line (coordinator elsewhere):
`ros2 launch cellos_bringup cell.launch.py line:=line1 cell:=cell_03`.

Starts in /<line>/<cell> the timing node (+ arbiter, vision, energy gate when enabled) and a
lifecycle_manager there that brings them up: configure all, then activate all.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from cellos_bringup import launch_plan as plan

BOOL = ['true', 'false']


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
    ] + plan.params_file_arguments({'line': 'timing parameters', 'executor': 'arbiter parameters',
                                    'vision': 'vision parameters', 'energy': 'energy gate parameters'})


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
    return plan.launch_actions([*nodes, manager], plan.params_files(arg, plan.PARAMS_ARGUMENTS))


def generate_launch_description():
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_nodes)])
