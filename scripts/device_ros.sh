#!/usr/bin/env bash
# ROS 2 + this package on a machine with NO network and NO ROS (the GPU test machines), from the wheels that
# scripts/fetch_device_wheels.sh downloaded (carried along as .device/wheels312). Run from anywhere:
#
#   scripts/device_ros.sh                 set up (idempotent), then check the environment
#   scripts/device_ros.sh CMD [ARGS...]   set up, then run CMD in the environment (rclpy, daris_ros.msg, ...)
#
# What it makes, under DARIS_ROS_ROOT (default /tmp/daris_ros):
#   venv/     a venv of the base Python's interpreter with the ROS wheels installed offline (pip --no-index).
#             The base Python (DARIS_BASE_PYTHON, default python3: on the GPU machine /opt/torch/.venv, itself
#             a venv) keeps torch: a venv of a venv would only see the *interpreter's* site-packages, so a .pth
#             file here adds the base Python's site directories (site.addsitedir, their .pth files included)
#             after the venv's own. The venv's sys.prefix is what the ros-wheels-bootstrapper .pth needs: it
#             re-executes Python with LD_LIBRARY_PATH=<venv>/lib:<venv>/.../ros_*.libs.
#   build/, install/   this package built with plain CMake (no colcon) against venv/ as the ROS underlay
#             (AMENT_PREFIX_PATH=CMAKE_PREFIX_PATH=venv): messages + Python package + lib/daris_ros/<executables>.
#   env.sh, env.json   the environment that runs it: AMENT_PREFIX_PATH, PYTHONPATH, LD_LIBRARY_PATH, python.
#             scripts/two_gpu_run.py reads env.json and re-executes itself in it.
# Needs: Python 3.11/3.12 with torch, cmake >= 3.21 (on PATH or next to the base Python), a C/C++ compiler,
# the Python headers. Other variables: DARIS_WHEELS (default .device/wheels<ver>, e.g. wheels312).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
T0=$SECONDS

die() { echo "device_ros.sh: error: $*" >&2; exit 1; }
step() { echo "== device_ros.sh [$((SECONDS - T0)) s] $*"; }

PY=$(command -v "${DARIS_BASE_PYTHON:-python3}") || die "no base Python '${DARIS_BASE_PYTHON:-python3}' on PATH"
PYV=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
case "$PYV" in
  3.11|3.12) ;;
  *) die "$PY is Python $PYV; the ROS 2 wheels exist for 3.11 and 3.12 only" ;;
esac
WHEELS=$(cd "${DARIS_WHEELS:-.device/wheels${PYV/./}}" 2>/dev/null && pwd) \
  || die "no wheel directory ${DARIS_WHEELS:-.device/wheels${PYV/./}} (run scripts/fetch_device_wheels.sh $PYV where PyPI is reachable; carry it along)"
ls "$WHEELS"/ros_rclpy-*-cp${PYV/./}-*.whl >/dev/null 2>&1 \
  || die "$WHEELS has no ros_rclpy wheel for cp${PYV/./} (wrong Python version? fetch_device_wheels.sh $PYV)"
ROOT=${DARIS_ROS_ROOT:-/tmp/daris_ros}
VENV=$ROOT/venv BUILD=$ROOT/build INSTALL=$ROOT/install
SITE=$VENV/lib/python$PYV/site-packages
# cmake/ninja may live next to the base Python (pip packages in /opt/torch/.venv/bin) without being on PATH.
BASE_BIN=$(dirname "$PY")
export PATH="$VENV/bin:$PATH:$BASE_BIN"

"$PY" -c 'import torch' 2>/dev/null || die "$PY cannot import torch (set DARIS_BASE_PYTHON to the Python that has it)"
"$PY" -c 'import numpy' 2>/dev/null || die "$PY cannot import numpy (the wheels leave it out: the base Python must have it)"
"$PY" -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || die "no Python.h for $PY (the message build needs the Python headers, e.g. python3-dev)"
CMAKE=$(command -v cmake) || die "no cmake on PATH or in $BASE_BIN"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (c++/g++) on PATH"

# -- 1. the venv with the ROS wheels -------------------------------------------------------------------------
stamp=$(cat <(echo "$PY") requirements/device.txt <(ls "$WHEELS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$VENV/.daris-stamp" ] || [ "$(cat "$VENV/.daris-stamp")" != "$stamp" ]; then
  step "creating $VENV from $PY (Python $PYV)"
  rm -rf "$VENV" "$BUILD" "$INSTALL"
  mkdir -p "$ROOT"
  if ! "$PY" -m venv --without-pip "$VENV" 2>"$ROOT/venv.err"; then
    # (a Python without the venv module: what venv does, by hand)
    echo "   python -m venv failed: $(tail -1 "$ROOT/venv.err"); making the venv by hand"
    base_exe=$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
    rm -rf "$VENV"; mkdir -p "$VENV/bin" "$SITE"
    for n in python python3 "python$PYV"; do ln -s "$base_exe" "$VENV/bin/$n"; done
    printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' "$(dirname "$base_exe")" \
      "$("$PY" -c 'import platform; print(platform.python_version())')" > "$VENV/pyvenv.cfg"
  fi
  rm -f "$ROOT/venv.err"
  # the base Python's site directories (torch, numpy, pip, ...), after the venv's own
  "$PY" - "$SITE/_daris_base_site.pth" <<'EOF'
import os, site, sys
dirs = []
for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    if p.rstrip("/").endswith(("site-packages", "dist-packages")) and os.path.isdir(p) and p not in dirs:
        dirs.append(p)
with open(sys.argv[1], "w") as f:
    f.write("import site; list(map(site.addsitedir, %r))\n" % (dirs,))
print("   base site directories:", ", ".join(dirs))
EOF
  "$VENV/bin/python" -c 'import torch' || die "the venv does not see the base Python's torch (see $SITE/_daris_base_site.pth)"
  step "installing $(ls "$WHEELS"/*.whl | wc -l) wheels offline from $WHEELS"
  if "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
    PIP=("$VENV/bin/python" -m pip)
  else
    PIP=("$PY" -m pip --python "$VENV/bin/python")
  fi
  "${PIP[@]}" install --disable-pip-version-check --no-input --no-index --find-links "$WHEELS" \
    --no-warn-script-location -q -r requirements/device.txt \
    || die "offline pip install failed: a dependency the wheels need is neither in $WHEELS nor in $PY's environment (see above); add it to requirements/device.txt and re-run fetch_device_wheels.sh"
  echo "$stamp" > "$VENV/.daris-stamp"
else
  step "venv $VENV is up to date"
fi
"$VENV/bin/python" -c 'import rclpy, rosidl_generator_py, numpy, torch' \
  || die "the venv cannot import rclpy/rosidl_generator_py/numpy/torch (see above)"

# -- 2. build + install this package with CMake ---------------------------------------------------------------
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD" "$INSTALL"  # configured for another source directory
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
step "configuring $SRC -> $BUILD ($("$CMAKE" --version | head -1), ${gen[*]:-make})"
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
"$CMAKE" -S "$SRC" -B "$BUILD" "${gen[@]}" --log-level=WARNING \
  -DCMAKE_INSTALL_PREFIX="$INSTALL" -DPython3_EXECUTABLE="$VENV/bin/python" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$ROOT/cmake_configure.log" 2>&1 \
  || { tail -40 "$ROOT/cmake_configure.log"; die "cmake configure failed (log: $ROOT/cmake_configure.log)"; }
step "building"
"$CMAKE" --build "$BUILD" --parallel "$(nproc)" > "$ROOT/cmake_build.log" 2>&1 \
  || { tail -40 "$ROOT/cmake_build.log"; die "build failed (log: $ROOT/cmake_build.log)"; }
"$CMAKE" --install "$BUILD" > "$ROOT/cmake_install.log" 2>&1 \
  || { tail -20 "$ROOT/cmake_install.log"; die "install failed (log: $ROOT/cmake_install.log)"; }
[ -x "$INSTALL/lib/daris_ros/scheduler_node" ] || die "$INSTALL/lib/daris_ros/scheduler_node was not installed"

# -- 3. the environment ---------------------------------------------------------------------------------------
PYPATH=$INSTALL/lib/python$PYV/site-packages
cat > "$ROOT/env.sh" <<EOF
# generated by scripts/device_ros.sh: source it to run daris_ros from $INSTALL
export PATH="$INSTALL/bin:$VENV/bin:\$PATH"
export AMENT_PREFIX_PATH="$INSTALL:$VENV"
export PYTHONPATH="$PYPATH\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$INSTALL/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
"$VENV/bin/python" - "$ROOT/env.json" "$VENV" "$INSTALL" "$PYPATH" <<'EOF'
import json, os, sys
out, venv, install, pypath = sys.argv[1:]
json.dump({"python": os.path.join(venv, "bin", "python"), "install": install, "venv": venv,
           "prepend": {"PATH": f"{install}/bin:{venv}/bin", "PYTHONPATH": pypath,
                       "LD_LIBRARY_PATH": f"{install}/lib"},
           "set": {"AMENT_PREFIX_PATH": f"{install}:{venv}"}}, open(out, "w"), indent=1)
EOF
# shellcheck disable=SC1091
source "$ROOT/env.sh"
step "checking the environment"
(cd "$ROOT" && python -) <<'EOF' || die "the built package does not import (see above)"
import rclpy, torch
from rclpy.utilities import get_rmw_implementation_identifier
from ament_index_python.packages import get_package_prefix
from daris_ros.msg import InferenceResult, SchedulerStats  # noqa: F401  (generated, compiled here)
import daris_ros.ros.scheduler_node  # noqa: F401
print(f"   rclpy ok ({get_rmw_implementation_identifier()}), daris_ros at {get_package_prefix('daris_ros')}, "
      f"torch {torch.__version__}, CUDA devices: {torch.cuda.device_count()}")
EOF
step "ready: source $ROOT/env.sh, or run scripts/device_ros.sh CMD"
[ "$#" -gt 0 ] && exec "$@"
exit 0
