#!/usr/bin/env bash
# Where the scheduler node's host time goes at 48 JPEG cameras (issue 14): daris-node-e2e runs of the node, each
# with py-spy attached over the measured window (GIL holders only: --gil), one run per variant of node parameters.
# Usage on the device machine, repo root (carry .device/wheels312 and .device/tools):
#   DARIS_COMMIT=<sha> scripts/gpu_node_profile.sh [VARIANT ...]     VARIANT: name=--param k=v,--param k=v
# (default: base= decode1=--param,decode_threads=1 decode0=--param,decode_threads=0). CAMERAS (default 48),
# SECONDS_WINDOW (default 12), BUDGET_S (default 570), PROFILE (gil: the GIL holders, default; wall: every thread's
# stack, idle ones included, py-spy --idle; none: no profiler), DARIS_ROS_ROOT (the ROS install to run, default /tmp/daris_ros).
# nvidia-smi samples the GPU's utilization every 200 ms of each run (smi.csv). Each run's folder is packed into
# $OUT/<name>.tgz.
set -u
OUT=${OUT:-/tmp/out}
BUDGET_S=${BUDGET_S:-570}
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
device_header
{ echo "ptrace_scope $(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null)"; command -v nsys; nproc; } >> "$OUT/device.txt"
python3 -m pip install -q --no-index --target /tmp/pyspy .device/tools/py_spy-*.whl > "$OUT/pyspy_install.txt" 2>&1
PYSPY=/tmp/pyspy/bin/py-spy
[ -n "${ROS_READY:-}" ] || run ros 200 scripts/device_ros.sh true  # (ROS_READY=1: set up by an earlier call)
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("base=" "decode1=--param,decode_threads=1" "decode0=--param,decode_threads=0")
case "${PROFILE:-gil}" in
  gil) profile=(--profile-cmd "$PYSPY record --gil --nonblocking -r 250 -p {pid} -d {seconds} -f raw -o {out}/gil.txt") ;;
  wall) profile=(--profile-cmd "$PYSPY record --idle --nonblocking -r 250 -p {pid} -d {seconds} -f raw -o {out}/wall.txt") ;;
  none) profile=() ;;
  *) echo "PROFILE must be gil, wall or none, not ${PROFILE}" >&2; exit 2 ;;
esac
for v in "${variants[@]}"; do
  name=${v%%=*}
  IFS=',' read -r -a extra <<< "${v#*=}"
  mkdir -p "$OUT/$name"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used --format=csv -lms 200 \
    > "$OUT/$name.smi.csv" 2>&1 &
  smi=$!
  run "$name" 200 scripts/device_ros.sh "${DARIS_ROS_ROOT:-/tmp/daris_ros}/install/lib/daris_ros/daris-node-e2e" \
    --systems node --sweep "${CAMERAS:-48}" --seconds "${SECONDS_WINDOW:-12}" --warmup 3 --noise 8 --backend str \
    --policy STR --contexts 1 --os 1 --streams 3 --batching --precision fp16 --channels-last --launch-ahead 1 \
    --param afet_cache=/tmp/daris_afet.json --param feasibility=warn "${extra[@]}" \
    "${profile[@]}" \
    --commit "${DARIS_COMMIT:-unknown}" --out "$OUT/$name"
  kill "$smi" 2>/dev/null
  mv "$OUT/$name.smi.csv" "$OUT/$name/smi.csv"
  tar czf "$OUT/$name.tgz" -C "$OUT" "$name" && rm -rf "${OUT:?}/$name"
done
echo "done at $(($(date +%s) - T0)) s"
