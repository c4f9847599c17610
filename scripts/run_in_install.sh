#!/usr/bin/env bash
# Run a command with the colcon install space sourced on top of the venv underlay
# (what `source install/setup.bash` does on a ROS machine), and the package's executables
# (install/daris_ros/lib/daris_ros: daris-replay, daris-demo, scheduler_node, ...) on PATH, so
# `scripts/run_in_install.sh daris-replay ...` runs what `ros2 run daris_ros daris-replay ...` runs.
set -eo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export COLCON_CURRENT_PREFIX=
# shellcheck disable=SC1091
source install/setup.bash
export PATH="$PWD/install/daris_ros/lib/daris_ros:$PATH"
exec "$@"
