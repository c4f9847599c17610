#!/usr/bin/env bash
# Download the ROS 2 wheels (requirements/device.txt and their dependencies) for a machine with no network
# and no ROS, e.g. the 2-GPU test machine (Python 3.12). They travel to it as files (a `carry` path, 64 MiB
# at most together with the working tree) and scripts/device_ros.sh installs them there offline.
#
#   scripts/fetch_device_wheels.sh [PYTHON_VERSION [DEST]]
#       PYTHON_VERSION  3.12 (default) or 3.11
#       DEST            default .device/wheels<ver without dot>, e.g. .device/wheels312 (git-ignored)
#
# Runs here, with .venv's pip (PyPI reachable); downloads manylinux x86_64 wheels for CPython PYTHON_VERSION
# whatever the local Python is. Left out on purpose (the device's Python has them; see requirements/device.txt):
# numpy (16 MB, a torchvision dependency). empy has no wheel on PyPI: it is pure Python, so a wheel is built
# here from its sdist. Prints the total size and fails above BUDGET_MIB (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
case "$PYVER" in
  3.11|3.12) ;;
  *) echo "error: PYTHON_VERSION must be 3.11 or 3.12 (the ROS 2 wheels exist for cp311/cp312 only), got '$PYVER'" >&2
     exit 2 ;;
esac
TAG=cp${PYVER/./}
DEST=${2:-.device/wheels${PYVER/./}}
BUDGET_MIB=${BUDGET_MIB:-60}
PIP=(".venv/bin/python" -m pip --disable-pip-version-check)
# Provided by the device's Python; removed after the download (pip pulls numpy in for rosidl_generator_py).
DEVICE_PROVIDED=(numpy)

if [ ! -x .venv/bin/python ]; then
  echo "error: .venv is missing: run scripts/setup_venv.sh (or make venv) first" >&2
  exit 1
fi
mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST"/MANIFEST.txt

# The index of this machine lists some local mirrors that do not exist; their warnings are noise.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

empy=$(grep -i '^empy==' requirements/constraints.txt)
echo "== building a wheel of $empy (sdist only on PyPI, pure Python)"
if ! "${PIP[@]}" wheel -q --no-deps -w "$DEST" "$empy" 2>&1 | quiet; then
  echo "error: building the $empy wheel failed" >&2; exit 1
fi

echo "== downloading $TAG manylinux x86_64 wheels of requirements/device.txt into $DEST"
if ! "${PIP[@]}" download -q -d "$DEST" --find-links "$DEST" \
  --only-binary=:all: --implementation cp --python-version "$PYVER" \
  --abi "$TAG" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 \
  -c requirements/constraints.txt -r requirements/device.txt 2>&1 | quiet; then
  echo "error: pip download failed (see above)" >&2; exit 1
fi

for name in "${DEVICE_PROVIDED[@]}"; do
  rm -f "$DEST/$name"-*.whl
done

n=$(find "$DEST" -name '*.whl' | wc -l)
bytes=$(find "$DEST" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
{
  echo "# $n wheels for CPython $PYVER, $mib MiB, from requirements/device.txt (+ dependencies; left out: ${DEVICE_PROVIDED[*]})"
  find "$DEST" -name '*.whl' -printf '%s %f\n' | sort -rn
} > "$DEST/MANIFEST.txt"
head -12 "$DEST/MANIFEST.txt"
echo "== $n wheels, $mib MiB in $DEST (budget $BUDGET_MIB MiB)"
if awk -v b="$bytes" -v m="$BUDGET_MIB" 'BEGIN {exit !(b > m * 1048576)}'; then
  echo "error: $DEST is over the budget of $BUDGET_MIB MiB" >&2
  exit 1
fi
