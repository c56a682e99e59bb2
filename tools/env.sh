# Source this (bash/sh) from the repo root: the build/run environment of cellos.
# With a ROS 2 distro sourced, the distro provides ROS; otherwise .venv is the ament prefix.
_cellos_root="${CELLOS_ROOT:-$(pwd)}"
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/${ROS_DISTRO}/setup.sh" ]; then
  . "/opt/ros/${ROS_DISTRO}/setup.sh"
fi
. "$_cellos_root/.venv/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ -f "$_cellos_root/install/setup.sh" ]; then
  COLCON_CURRENT_PREFIX="$_cellos_root/install" . "$_cellos_root/install/setup.sh"
  # install/setup.sh rewrites AMENT_PREFIX_PATH; the venv must stay on it (core packages live there)
  case ":$AMENT_PREFIX_PATH:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$AMENT_PREFIX_PATH:$VIRTUAL_ENV";; esac
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONUNBUFFERED=1
# ROS 2 log files of anything started from this shell stay in the checkout (the default is ~/.ros/log);
# line_runner and the tests keep each process's output themselves and write none there
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_cellos_root/log/ros}"
unset _cellos_root
