#!/usr/bin/env bash
# Session 8's device calls: the GPU tests never run before (detectors and segmenters, sm_limit, engine release,
# green, str, mps), the ROS set-up beside them (CPU only), then the measurements of issues 16 (vehicle perception set
# through the node), 15 item 8 (sm_limit=16) and 14 (the node end to end, engine load), by the existing step scripts.
# Every step's log lands in $OUT; each measurement folder is packed into $OUT/<step>.tgz (the device tool brings back
# files at most two folders down).
# Usage on the device machine, repo root: DARIS_COMMIT=<sha> scripts/gpu_session8.sh STEP... (BUDGET_S, default 560)
#   tests     the GPU tests (ROS is set up beside them, in the background)
#   vehicle   issue 16: the vehicle perception set through the scheduler node over DDS (E2E_SWEEP, default 6,12,24)
#   sm_limit  issue 15 item 8: the 12-camera set on the node's engine, whole GPU and sm_limit=16
#   node      issue 14: the node end to end over DDS (E2E_SWEEP_NODE, default 24,48)
#   el_device issue 14: daris-engine-load, 700 ResNet18 cameras (EL_TASKS=680,700: each count), frames on the device
#   percam    issue 14: per-camera nodes end to end over DDS (E2E_SWEEP_NODE, default 24,48), to compare with node
#   bench     issue 14: daris-bench on the engine, the acceptance's ResNet18, UNet and InceptionV3 runs
#   decode    JPEG decoding beside a loaded loop (bench.decode_interference, every variant; docs/benchmarks/decode/)
#   probe     the 12-camera vehicle set through the node with the stall probe on ($OUT/stalls_vehicle12.json)
# Times seen on an H100 (session 8): ROS set-up 57-61 s on a fresh machine; one vehicle e2e run about 90 s (53 s of
# it the node's start-up: models, CUDA graphs, profiling); the six GPU test files over 300 s, test_gpu_detection.py
# alone about 120 s.
set -u
OUT=${OUT:-/tmp/out}
BUDGET_S=${BUDGET_S:-560}
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
device_header
ros_pid=""
ros_ready() {  # wait for the background ROS set-up, or run it now
  if [ -n "$ros_pid" ]; then wait "$ros_pid"; ros_pid=""; fi
  [ -f /tmp/daris_ros/env.sh ] || scripts/device_ros.sh true >> "$OUT/ros_setup.txt" 2>&1
}
pack() {  # pack() DIR: $OUT/DIR -> $OUT/DIR.tgz
  [ -d "$OUT/$1" ] && tar czf "$OUT/$1.tgz" -C "$OUT" "$1" && rm -rf "${OUT:?}/$1"
}
for step in "$@"; do
  case $step in
    tests)
      scripts/device_ros.sh true > "$OUT/ros_setup.txt" 2>&1 &
      ros_pid=$!
      # (GPU_TESTS: a subset; a test stuck for 100 s dumps every thread's stack)
      # shellcheck disable=SC2086
      run gpu_tests "${TESTS_LIMIT:-300}" python3 -m pytest -m gpu -q -rs -p no:cacheprovider --durations=15 \
        -o faulthandler_timeout=100 ${GPU_TESTS:-test/gpu/test_gpu_detection.py test/gpu/test_gpu_sm_limit.py \
        test/gpu/test_gpu_engine_release.py test/gpu/test_gpu_green.py test/gpu/test_gpu_backends.py \
        test/gpu/test_gpu_mps.py} ;;
    vehicle)
      ros_ready
      OUT=$OUT BUDGET_S=$(left) E2E_SWEEP=${E2E_SWEEP:-6,12,24} scripts/gpu_perception.sh e2e_vehicle
      pack e2e_vehicle ;;
    sm_limit)
      OUT=$OUT BUDGET_S=$(left) scripts/gpu_sm_limit.sh bench
      pack sm_limit ;;
    node)
      ros_ready
      OUT=$OUT BUDGET_S=$(left) E2E_SWEEP=${E2E_SWEEP_NODE:-24,48} scripts/gpu_engine_session6.sh e2e_node
      pack e2e_node ;;
    percam)
      ros_ready
      OUT=$OUT BUDGET_S=$(left) E2E_SWEEP=${E2E_SWEEP_NODE:-24,48} scripts/gpu_engine_session6.sh e2e_percam
      pack e2e_percam ;;
    bench)
      OUT=$OUT BUDGET_S=$(left) scripts/gpu_bench_engine.sh resnet18 unet inception ;;
    decode)
      run decode 120 python3 -m daris_ros.bench.decode_interference --seconds 5 --warmup 1 --rate 270 --load 0.8 \
        --commit "${DARIS_COMMIT:-}" --out "$OUT/decode" ;;
    probe)
      ros_ready
      DARIS_STALL_PROBE=$OUT/stalls_vehicle12.json OUT=$OUT BUDGET_S=$(left) E2E_SWEEP=12 \
        scripts/gpu_perception.sh e2e_vehicle
      pack e2e_vehicle ;;
    el_device)
      OUT=$OUT BUDGET_S=$(left) scripts/gpu_engine_session6.sh el_device
      pack el_device ;;
    *) echo "unknown step $step" ;;
  esac
done
[ -n "$ros_pid" ] && wait "$ros_pid"
echo "done at $(($(date +%s) - T0)) s"
