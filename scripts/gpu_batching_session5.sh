#!/usr/bin/env bash
# Session 5's batching runs on the device machine (issue 7): UNet and InceptionV3 with the padding limit at 0
# (mode part pad0), at 30 Hz and at the paper's Table II rates, and ResNet18 repeats. Each run's table (with its
# exact command) lands in $OUT/bench/batching_results_<tag>.md; all of $OUT/bench is packed into $OUT/bench.tgz.
# Usage on the device machine, repo root: scripts/gpu_batching_session5.sh STEP... (steps below; BUDGET_S=560)
set -u
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-560}
B=(python3 -m daris_ros.bench.cli --out "$OUT/bench" --batching x --seconds 4 --warmup 0.5 --mret-source events)
US='unet=1,2,4,8,12,16,20,24,26,28,30,32,34,36,38,40,44,48,56,64'
IS='inception_v3=1,2,4,8,12,16,20,24,28,32,36,40,44,48,56,64,80,96,128'
RS='resnet18=1,2,4,8,16,24,32,40,48,56,64,72,80,88,96,104,112,120,128,144,160,176,192'
bench() {  # bench TAG LIMIT_S ARGS...
  local tag=$1 limit=$2 left
  shift 2
  left=$((BUDGET_S - ($(date +%s) - T0)))
  [ "$left" -lt "$limit" ] && limit=$left
  [ "$limit" -gt 40 ] || { echo "$tag: skipped, no time left"; return; }
  timeout "$limit" "${B[@]}" --batch-tag "$tag" "$@" >> "$OUT/all.log" 2>&1
  echo "$tag: rc $? at $(($(date +%s) - T0)) s"
}
mkdir -p "$OUT/bench"
for step in "$@"; do
  case $step in
    unet_paper_rep*)
      bench "$step" 100 --batch-models unet --model-modes 'unet=batch-fp16-cl-3s-m0.5-pad0,batch-fp16-cl-2s-m0.55-pad0,batch-fp16-cl-2s-m0.5-pad0,batch-fp16-cl-3s-m0.52-pad0' \
        --model-sizes "$US" --upper-sizes 32,64,128 --task-rate paper --baseline-seconds 3 ;;
    unet_30_pad2)
      bench "$step" 110 --batch-models unet --model-modes 'unet=batch-fp16-cl-2s-m0.55-pad0,batch-fp16-cl-2s-m0.5-pad0,batch-fp16-cl-2s-m0.6-max32-pad0,batch-fp16-cl-3s-m0.52-pad0,batch-fp16-cl-2s-m0.55-max40-pad0' \
        --model-sizes "$US" --upper-sizes 32,64,128 --task-rate 30 --baseline-seconds 3 ;;
    inception_30_pad|inception_paper_pad)
      rate=${step#inception_}; rate=${rate%_pad}
      bench "$step" 110 --batch-models inception_v3 --model-modes 'inception_v3=batch-bf16-cl-3s-m0.5-pad0,batch-bf16-cl-2s-m0.5-pad0,batch-bf16-cl-3s-m0.6-pad0' \
        --model-sizes "$IS" --upper-sizes 256,512,1024 --task-rate "$rate" --baseline-seconds 2 ;;
    rep4)
      bench "$step" 100 --batch-models resnet18 --model-modes resnet18=batch-fp16-cl-3s-m0.5-ahead2-max192,batch-fp16-cl-3s-m0.5-ahead2-max192-pad0 \
        --model-sizes "$RS" --upper-sizes 128,256,512,1024 --baseline-seconds 2 ;;
    tests_engine)  # the engine's batched path on the GPU, and the batched-stage tests it builds on
      { echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
        timeout 300 python3 -m pytest -m gpu test/gpu/test_gpu_engine_batching.py test/gpu/test_gpu_batching.py \
          -p no:cacheprovider -v -rs -s 2>&1; } > "$OUT/bench/gpu_tests_engine_batching.txt"
      echo "$step: rc $? at $(($(date +%s) - T0)) s" ;;
    engine_resnet18_*)  # engine_resnet18_<tasks>: the node's own path under load, batch-1 vs batched
      n=${step#engine_resnet18_}
      timeout 150 python3 -m daris_ros.bench.engine_load --tasks "$n" --rate 30 --precision fp16 --channels-last \
        --streams 3 --seconds 5 --out "$OUT/bench/engine_resnet18_$n" >> "$OUT/all.log" 2>&1
      echo "$step: rc $? at $(($(date +%s) - T0)) s" ;;
    engine_unet_*)
      n=${step#engine_unet_}
      timeout 150 python3 -m daris_ros.bench.engine_load --model unet --tasks "$n" --rate 24 --precision fp16 \
        --channels-last --streams 2 --sizes 1,2,4,8,12,16,24,32 --pad-limit 0 --lp-margin 0.5 --seconds 5 \
        --out "$OUT/bench/engine_unet_$n" >> "$OUT/all.log" 2>&1
      echo "$step: rc $? at $(($(date +%s) - T0)) s" ;;
    *) echo "unknown step $step" ;;
  esac
done
tar czf "$OUT/bench.tgz" -C "$OUT" bench
grep -h "JPS = \|upper fp\|upper bf" "$OUT/all.log" | cut -c44-300
