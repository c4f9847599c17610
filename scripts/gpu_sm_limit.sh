#!/usr/bin/env bash
# Device steps of issue 15 item 8 ("A node that shares its GPU", parameter sm_limit): the GPU tests of the limit
# (green and str kernels on at most 16 SMs of the first granules, mps percentages) with the green/str regressions,
# then the 12-camera vehicle set on the node's engine with and without sm_limit=16 (a Jetson AGX Orin's SM count).
# Each step's output lands in $OUT (the device tool brings it back); the bench writes $OUT/sm_limit/sm_limit.{json,md}
# for docs/benchmarks/sm_limit/.
# Usage on the device machine, repo root: scripts/gpu_sm_limit.sh STEP... (tests, bench; BUDGET_S, default 540)
set -u
OUT=${OUT:-/tmp/out}
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
device_header
for step in "$@"; do
  case $step in
    tests)  # sm_limit on the GPU, and the green/str tests the shared GreenContexts code must still pass
      run tests 240 python3 -m pytest -m gpu -q -rs -s -p no:cacheprovider test/gpu/test_gpu_sm_limit.py \
        test/gpu/test_gpu_green.py test/gpu/test_gpu_backends.py ;;
    bench)  # the 12 cameras (4 HP ResNet50 at 30 Hz, 4 LP ResNet18 + 4 LP UNet at 15 Hz) on green and str
      run bench 280 python3 -m daris_ros.bench.sm_limit --limits 0,16 --configs green:MPS:2x1:1,str:STR:1x3:1 \
        --precision fp16 --channels-last --seconds 10 --warmup 2 --commit "${DARIS_COMMIT:-}" --out "$OUT/sm_limit" ;;
    *) echo "unknown step $step" ;;
  esac
done
