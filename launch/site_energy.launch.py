"""The site energy feed (one per site): `ros2 launch cellos_bringup site_energy.launch.py`.

Starts the energy feed in /<namespace> (default /site; cells' gates read /site/energy_feed)
and a lifecycle_manager there that brings it up.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from cellos_bringup import launch_plan as plan

BOOL = ['true', 'false']


def _arguments():
    return [
        DeclareLaunchArgument('namespace', default_value=plan.SITE_NS.strip('/'), description='site namespace'),
        DeclareLaunchArgument('autostart', default_value='true', choices=BOOL,
                              description='bring the feed up at once'),
    ] + plan.params_file_arguments({'energy': 'energy feed parameters'})


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    feed = plan.energy_feed_node(arg('namespace'))
    manager = plan.manager_node(arg('namespace'), [feed], plan.parse_bool(arg('autostart'), 'autostart'))
    return plan.launch_actions([feed, manager], plan.params_files(arg, ['energy']))


def generate_launch_description():
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_nodes)])
