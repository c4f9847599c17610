#!/usr/bin/env bash
# daris-bench on the engine (issue 14 item 4), on the device machine. Each step's tables (with their exact command,
# commit and device) land in $OUT/bench; the whole folder is packed into $OUT/bench.tgz.
# Usage (repo root on the GPU machine): DARIS_COMMIT=<sha> scripts/gpu_bench_engine.sh STEP...
#   tests     the bench's CPU tests and the GPU batching tests -> $OUT/bench/tests.txt
#   smoke     ResNet18, two paper configurations (str STR 1x8, green MPS+STR 3x3 OS 2), 150% of the batch-1 ceiling
#   resnet18  acceptance: ResNet18 fp16 batching at 150% of the fp16 upper baseline, 2:1 LP:HP, 30 Hz (= paper)
#   unet      acceptance: UNet fp16 at the paper's task rate (24 Hz)
#   inception acceptance: InceptionV3 bf16 at the paper's task rate (24 Hz)
#   mps       green MPS+STR 4x2 OS 2 and the same on mps (needs the mps backend's launch/poll)
# DARIS_COMMIT (and DARIS_COMMIT_DIRTY=1 for a changed tree) name the measured commit where the copy has no .git.
set -u
OUT=${OUT:-/tmp/out}
BUDGET_S=${BUDGET_S:-560} RUN_LOG_DIR=$OUT/bench RUN_MIN_S=40
# shellcheck source=scripts/lib/device_budget.sh
source "$(dirname "$0")/lib/device_budget.sh"
CLI=(python3 -m daris_ros.bench.cli)
BATCH=("${CLI[@]}" --out "$OUT/bench" --batching x --seconds 4 --warmup 0.5)
US='unet=1,2,4,8,12,16,20,24,26,28,30,32,34,36,38,40,44,48,56,64'
IS='inception_v3=1,2,4,8,12,16,20,24,28,32,36,40,44,48,56,64,80,96,128'
RS='resnet18=1,2,4,8,16,24,32,40,48,56,64,72,80,88,96,104,112,120,128,144,160,176,192'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/bench/device.txt" 2>&1
for step in "$@"; do
  case $step in
    tests)
      run tests 240 python3 -m pytest -p no:cacheprovider -q -rs test/unit/test_bench_engine.py \
        test/unit/test_bench_modes.py test/gpu/test_gpu_batching.py ;;
    smoke)
      run smoke 200 "${CLI[@]}" --out "$OUT/bench/smoke" --models resnet18 \
        --configs str:STR:1x8:1,green:MPS+STR:3x3:2 \
        --seconds 3 --baseline-seconds 1.5 ;;
    resnet18)
      run resnet18 200 "${BATCH[@]}" --batch-tag engine_resnet18 --batch-models resnet18 \
        --model-modes resnet18=batch-fp16-cl-3s-m0.5-ahead2-max192,batch-fp16-cl-3s-m0.5-ahead2-max192-pad0 \
        --model-sizes "$RS" --upper-sizes 128,256,512,1024 --baseline-seconds 2 ;;
    unet)
      run unet 200 "${BATCH[@]}" --batch-tag engine_unet_paper --batch-models unet \
        --model-modes 'unet=batch-fp16-cl-2s-m0.5-pad0,batch-fp16-cl-3s-m0.5-pad0' \
        --model-sizes "$US" --upper-sizes 32,64,128 --task-rate paper --baseline-seconds 3 ;;
    inception)
      run inception 200 "${BATCH[@]}" --batch-tag engine_inception_paper --batch-models inception_v3 \
        --model-modes 'inception_v3=batch-bf16-cl-2s-m0.5-pad0,batch-bf16-cl-3s-m0.5' \
        --model-sizes "$IS" --upper-sizes 256,512,1024 --task-rate paper --baseline-seconds 2 ;;
    mps)
      run mps 200 "${CLI[@]}" --out "$OUT/bench/mps" --models resnet18 --configs green:MPS+STR:4x2:2 --mps --seconds 3 \
        --baseline-seconds 1.5 ;;
    *) echo "unknown step $step" ;;
  esac
done
tar czf "$OUT/bench.tgz" -C "$OUT" bench
grep -h "JPS = \|upper fp\|upper bf\| JPS (window" "$OUT"/bench/*.txt | cut -c25-400
