#!/usr/bin/env bash
# Run a command with the colcon install space sourced on top of the venv underlay
# (what `source install/setup.bash` does on a ROS machine).
set -eo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export COLCON_CURRENT_PREFIX=
# shellcheck disable=SC1091
source install/setup.bash
exec "$@"
