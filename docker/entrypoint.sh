#!/bin/bash
# cellos image entrypoint: the ROS distro and the cellos workspace, then the command.
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /cellos/install/setup.bash
exec "$@"
