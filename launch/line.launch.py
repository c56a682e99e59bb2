"""A whole line: `ros2 launch cellos_bringup line.launch.py` (cells:=4 with_vision:=false ...).

Without arguments it starts the same line as `make run`: 4 cells with executor, vision, energy
and flow, at the period_ms of params_file (config/line.yaml). Starts the coordinator and the
plant simulation (with_flow) in /<line>, per cell /<line>/cell_NN the timing node (+ arbiter with
with_executor, + vision with with_vision, + energy gate with with_energy), the executor in
/gpu0 (with_executor), the site energy feed in /site (with_energy), the line's audit recorder
in /<line> (with_audit: a recording under audit_dir), and one lifecycle_manager in /<line> that
brings them all up: configure all, then activate all.
The same parameter files as `make run` (line_runner); cell ids and namespaces as there.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from cellos_bringup import launch_plan as plan

BOOL = ['true', 'false']


def _arguments():
    return [
        DeclareLaunchArgument('cells', default_value='4', description='number of cells (>= 1)'),
        DeclareLaunchArgument('period_ms', default_value='',
                              description='line cycle period [ms]; empty: period_ms of params_file (as make run)'),
        DeclareLaunchArgument('line', default_value='line1', description='line namespace'),
        DeclareLaunchArgument('offset_mode', default_value='', choices=['', 'aligned', 'staggered', 'custom'],
                              description='cell offsets on the schedule; empty: from params_file'),
        DeclareLaunchArgument('with_executor', default_value='true', choices=BOOL,
                              description='start the shared inference executor in /gpu0 and an arbiter per cell'),
        DeclareLaunchArgument('with_vision', default_value='true', choices=BOOL,
                              description='start a vision node (and arbiter) per cell'),
        DeclareLaunchArgument('with_energy', default_value='true', choices=BOOL,
                              description='start the site energy feed in /site and an energy gate per cell'),
        DeclareLaunchArgument('with_flow', default_value='true', choices=BOOL,
                              description='start the plant simulation (buffers, part motion) in /<line>'),
        DeclareLaunchArgument('with_audit', default_value='true', choices=BOOL,
                              description='record the line (cellos_audit) to audit_dir/<line>_<UTC time>/'),
        DeclareLaunchArgument('audit_dir', default_value='log/audit',
                              description='folder of the audit recordings (relative: to the working directory)'),
        DeclareLaunchArgument('autostart', default_value='true', choices=BOOL,
                              description='bring the line up at once (else: call <line>/lifecycle_manager/startup)'),
    ] + plan.params_file_arguments({'line': 'coordinator and timing parameters',
                                    'executor': 'executor and arbiter parameters',
                                    'vision': 'vision parameters', 'energy': 'energy feed and gate parameters'})


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    try:
        cells = int(arg('cells'))
    except ValueError:
        raise ValueError(f"launch argument 'cells': expected an integer, got {arg('cells')!r}") from None
    line = arg('line').strip('/')
    # one rate for every node (vision's and the plant's cycle period too), as make run does
    period_ms = plan.parse_optional_float(arg('period_ms'), 'period_ms')
    if period_ms is None:
        period_ms = plan.line_period_ms(arg(plan.PARAMS_ARGUMENTS['line']))
    nodes = plan.line_nodes(
        line, cells,
        period_ms=period_ms,
        offset_mode=arg('offset_mode') or None,
        with_executor=plan.parse_bool(arg('with_executor'), 'with_executor'),
        with_vision=plan.parse_bool(arg('with_vision'), 'with_vision'),
        with_energy=plan.parse_bool(arg('with_energy'), 'with_energy'),
        with_flow=plan.parse_bool(arg('with_flow'), 'with_flow'),
        with_audit=plan.parse_bool(arg('with_audit'), 'with_audit'), audit_dir=arg('audit_dir'))
    manager = plan.manager_node(line, nodes, plan.parse_bool(arg('autostart'), 'autostart'))
    return plan.launch_actions([*nodes, manager], plan.params_files(arg, plan.PARAMS_ARGUMENTS))


def generate_launch_description():
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_nodes)])
