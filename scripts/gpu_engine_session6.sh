#!/usr/bin/env bash
# Session 6's device steps (issue 14, "One engine"): the GPU tests of the launch/poll backends and the engine loop,
# then daris-engine-load on the engine. Each step's output lands in $OUT (the device tool brings it back).
# Usage on the device machine, repo root: scripts/gpu_engine_session6.sh STEP... (BUDGET_S, default 540; E2E_PARAMS: more "--param name=value" for the node)
set -u
OUT=${OUT:-/tmp/out}
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
device_header
EL=(python3 -m daris_ros.bench.engine_load --model resnet18 --precision fp16 --channels-last --backend str --streams 3
    --sizes 1,2,4,8,16,32,48,64,96,128,160,192 --seconds 6 --warmup 2)
for step in "$@"; do
  case $step in
    tests)  # launch/poll on str/green, batched stages, the engine loop on the GPU
      run tests 240 python3 -m pytest -m gpu -q -rs -p no:cacheprovider test/gpu/test_gpu_backends.py \
        test/gpu/test_gpu_batching.py test/gpu/test_gpu_engine_batching.py test/gpu/test_gpu_green.py \
        test/gpu/test_gpu_jpeg.py ;;
    el150)  # the node's path at 150 cameras (the session-5 figure to compare with)
      run el150 150 "${EL[@]}" --tasks 150 --rate 30 --modes off,on --out "$OUT/el150" ;;
    el_device)  # the rig at 21,000 offered releases/s, frames already on the GPU (decoded there, as nvJPEG does);
      # EL_TASKS=680,700 runs each count in turn (680 x 30 Hz = 20,400/s, the acceptance's floor with a margin)
      for n in $(echo "${EL_TASKS:-700}" | tr ',' ' '); do
        run "el_device_$n" 120 "${EL[@]}" --tasks "$n" --rate 30 --modes on --frames device --out "$OUT/el_device/$n"
      done ;;
    el_host)  # the same rig with 640x480 rgb8 frames in host memory, uploaded at each release
      run el_host 120 "${EL[@]}" --tasks 700 --rate 30 --modes on --frames host --out "$OUT/el_host" ;;
    ros)  # ROS 2 from the carried wheels (.device/wheels312) and this package built against them
      run ros 200 scripts/device_ros.sh true ;;
    e2e_node|e2e_percam)  # the scheduler node / per-camera nodes end to end over DDS, 12..48 JPEG 1280x720 cameras
      system=node; [ "$step" = e2e_percam ] && system=per-camera
      # shellcheck disable=SC2086
      run "$step" "${E2E_LIMIT:-330}" scripts/device_ros.sh /tmp/daris_ros/install/lib/daris_ros/daris-node-e2e \
        --systems "$system" --sweep "${E2E_SWEEP:-12,24,36,48}" --noise 8 --backend str --policy STR --contexts 1 --os 1 --streams 3 \
        --batching --precision fp16 --channels-last --launch-ahead 1 --param afet_cache=/tmp/daris_afet.json --param feasibility=warn \
        ${E2E_PARAMS:-} --budget "$(( $(left) - 20 ))" --commit "${DARIS_COMMIT:-unknown}" --out "$OUT/$step" ;;
    *) echo "unknown step $step" ;;
  esac
done
