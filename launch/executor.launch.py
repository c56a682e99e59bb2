"""The shared inference executor of one GPU host: `ros2 launch cellos_bringup executor.launch.py`.

Starts the executor in /<namespace> (default /gpu0) and a lifecycle_manager there that
brings it up. It serves the cells listed (``cells``, or the params file's ``cells`` and
``allowed_cells`` patterns); any other cell is answered REJECTED (``discover_cells`` opens it
to every process on the domain: an explicit choice).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from cellos_bringup import launch_plan as plan

BOOL = ['true', 'false']


def _arguments():
    return [
        DeclareLaunchArgument('namespace', default_value=plan.EXECUTOR_NS.strip('/'),
                              description='GPU host namespace (arbiters default to /gpu0/executor/status)'),
        DeclareLaunchArgument('cells', default_value='',
                              description="cells served by namespace, comma separated ('line1/cell_01,...'); "
                                          'empty: from the params file'),
        DeclareLaunchArgument('backend', default_value='', choices=['', 'auto', 'tensorrt', 'onnxruntime'],
                              description='inference backend; empty: from the params file'),
        DeclareLaunchArgument('model_list', default_value='',
                              description='YAML model list loaded at start; empty: from the params file'),
        DeclareLaunchArgument('trt_plan_cache', default_value='',
                              description='folder that keeps built TensorRT plans between starts; '
                                          'empty: from the params file (there: none, plans built at each start)'),
        DeclareLaunchArgument('autostart', default_value='true', choices=BOOL,
                              description='bring the executor up at once'),
    ] + plan.params_file_arguments({'executor': 'executor parameters'})


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {k: arg(k) for k in ('backend', 'model_list', 'trt_plan_cache') if arg(k)}
    cells = [c.strip() for c in arg('cells').split(',') if c.strip()]
    executor = plan.executor_node(cells, namespace=arg('namespace'), **overrides)
    manager = plan.manager_node(arg('namespace'), [executor], plan.parse_bool(arg('autostart'), 'autostart'))
    return plan.launch_actions([executor, manager], plan.params_files(arg, ['executor']))


def generate_launch_description():
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_nodes)])
