#!/usr/bin/env bash
# colcon build of this repository against the venv underlay (ROS 2 from PyPI wheels).
# On a machine with a ROS 2 install, plain `colcon build` in a workspace does the same.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
exec colcon --log-base log build --paths . --build-base build --install-base install \
  --event-handlers console_cohesion+ summary+ \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF "$@"
