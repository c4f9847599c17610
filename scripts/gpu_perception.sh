#!/usr/bin/env bash
# Issue 16's device steps (perception: detectors and segmenters on every backend, the vehicle perception set): the
# GPU tests of the detectors and segmenters, then the node end to end over DDS with the vehicle perception set.
# Each step's output lands in $OUT (the device tool brings it back).
# Usage on the device machine, repo root: scripts/gpu_perception.sh STEP... (BUDGET_S, default 540; E2E_PARAMS: more "--param name=value" for the node)
#   tests         test/gpu/test_gpu_detection.py (str/green: graphs for graph stages only, GPU == CPU, batched ==
#                 unbatched, fp16) and the mps workers' detector/segmenter test
#   ros           ROS 2 from the carried wheels (.device/wheels312) and this package built against them
#   vehicle_node  the scheduler node on config/vehicle_perception.yaml for 90 s without cameras: it must load,
#                 capture, profile and pass its feasibility check (its log has the profiled AFETs and the verdict)
#   e2e_vehicle   daris-node-e2e, the vehicle set (per 6 cameras: 2 HP SSDlite 320x320 at 30 Hz, 2 LP LR-ASPP
#                 288x512 and 2 LP ResNet18 at 15 Hz, JPEG 1280x720), 1, 2 and 4 vehicles (E2E_SWEEP); the
#                 acceptance: 0 HP misses; report HP e2e p99 and LP DMR (node_e2e.md, run.json)
set -u
OUT=${OUT:-/tmp/out}
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
device_header
VEHICLE_GROUP=HP:ssdlite320_mobilenet_v3_large:2:320x320,LP:lraspp_mobilenet_v3_large:2:288x512,LP:resnet18:2:224x224
for step in "$@"; do
  case $step in
    tests)
      run tests 400 python3 -m pytest -m gpu -q -rs -p no:cacheprovider test/gpu/test_gpu_detection.py \
        "test/gpu/test_gpu_mps.py::test_a_detector_and_a_segmenter_through_mps_workers" ;;
    ros)
      run ros 200 scripts/device_ros.sh true ;;
    vehicle_node)
      run vehicle_node 150 scripts/device_ros.sh timeout -s INT 90 /tmp/daris_ros/install/lib/daris_ros/scheduler_node \
        --ros-args --params-file config/vehicle_perception.yaml -p afet_cache:=/tmp/daris_afet.json ;;
    e2e_vehicle)
      run e2e_vehicle "${E2E_LIMIT:-330}" scripts/device_ros.sh /tmp/daris_ros/install/lib/daris_ros/daris-node-e2e \
        --systems node --sweep "${E2E_SWEEP:-6,12,24}" --group "$VEHICLE_GROUP" --rate 30 --lp-rate 15 --noise 8 \
        --backend str --policy STR --contexts 1 --streams 3 --os 1 --batching --batch-sizes 1,2,4,8 --precision fp16 \
        --channels-last --param afet_cache=/tmp/daris_afet.json --param feasibility=warn ${E2E_PARAMS:-} \
        --budget "$(( $(left) - 20 ))" \
        --commit "${DARIS_COMMIT:-unknown}" --out "$OUT/e2e_vehicle" ;;
    *) echo "unknown step $step" ;;
  esac
done
