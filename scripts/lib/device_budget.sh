# Sourced by the device-machine step scripts (scripts/gpu_*.sh): one time budget for the steps of one `run` call.
# Before sourcing: OUT (where results go). Optional: BUDGET_S (default 540), RUN_LOG_DIR (default $OUT),
# RUN_MIN_S (a step with less time left than this is skipped; default 20).
# Gives: T0, left (seconds of the budget left), run TAG LIMIT_S CMD... (CMD under timeout, its output appended to
# $RUN_LOG_DIR/TAG.txt, the exit code and the time printed), device_header (device and commit in $OUT/device.txt).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-540}
RUN_LOG_DIR=${RUN_LOG_DIR:-$OUT}
RUN_MIN_S=${RUN_MIN_S:-20}
mkdir -p "$OUT" "$RUN_LOG_DIR"
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
run() {  # run TAG LIMIT_S CMD...
  local tag=$1 limit=$2
  shift 2
  [ "$(left)" -lt "$limit" ] && limit=$(left)
  [ "$limit" -gt "$RUN_MIN_S" ] || { echo "$tag: skipped, no time left"; return; }
  echo "== $tag: $*" | tee -a "$RUN_LOG_DIR/$tag.txt"
  timeout "$limit" "$@" >> "$RUN_LOG_DIR/$tag.txt" 2>&1
  echo "$tag: rc $? at $(($(date +%s) - T0)) s" | tee -a "$RUN_LOG_DIR/$tag.txt"
}
device_header() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.txt" 2>&1
  git rev-parse HEAD >> "$OUT/device.txt" 2>/dev/null
}
