#!/usr/bin/env bash
# Device-machine steps for one `run` call, run in order within one time budget (issue 4 runs).
# Usage (repo root on the GPU machine): BUDGET_S=570 scripts/gpu_steps.sh STEP...
#   full:<model>   python -m daris_ros.bench.cli --models <model> --full ... --out docs/benchmarks/full/<model>
#   tests          pytest -m gpu on $GPU_TESTS -> $OUT/gpu_tests_output.txt (header: date, device, command)
#   upper          ResNet18 quick sweep with --load-reference upper -> docs/benchmarks/upper; Python stacks
#                  every $DUMP_S s (faulthandler) to $OUT/upper_stacks.txt
# Each step gets what is left of BUDGET_S (minus a reserve for the next steps' copies); its log is $OUT/<step>.log.
set -u
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
SECONDS_FULL=${SECONDS_FULL:-1.5}
GPU_TESTS=${GPU_TESTS:-"test/gpu/test_gpu_mps.py test/gpu/test_gpu_backends.py test/gpu/test_gpu_green.py \
test/gpu/test_gpu_batching.py test/gpu/test_gpu_jpeg.py test/runtime"}
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.txt" 2>&1
for step in "$@"; do
  limit=$(left)
  [ "$limit" -gt 20 ] || { echo "$step: skipped, no time left" | tee -a "$OUT/steps.txt"; continue; }
  t=$(date +%s)
  name=${step//:/_}
  case $step in
    full:*)
      model=${step#full:}
      timeout "$limit" python3 -m daris_ros.bench.cli --models "$model" --full --seconds "$SECONDS_FULL" \
        --baseline-seconds 1.5 --out "docs/benchmarks/full/$model" > "$OUT/$name.log" 2>&1
      rc=$?
      tar czf "$OUT/full_$model.tgz" "docs/benchmarks/full/$model" ;;  # one file: $OUT returns few files
    tests)
      # shellcheck disable=SC2086 # (GPU_TESTS is a list of paths)
      cmd="python3 -m pytest -m gpu $GPU_TESTS -p no:cacheprovider -v -rs"
      { echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1), command: $cmd"
        timeout "$limit" $cmd 2>&1; } > "$OUT/gpu_tests_output.txt"
      rc=$? ;;
    upper)
      timeout "$limit" python3 - > "$OUT/$name.log" 2>&1 <<EOF
import faulthandler, sys
faulthandler.dump_traceback_later(${DUMP_S:-45}, repeat=True, file=open("$OUT/upper_stacks.txt", "w"))
from daris_ros.bench.cli import main
sys.exit(main(["--models", "resnet18", "--load-reference", "upper", "--seconds", "2", "--baseline-seconds", "1.5",
               "--out", "docs/benchmarks/upper"]))
EOF
      rc=$?
      tar czf "$OUT/upper.tgz" docs/benchmarks/upper ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
  echo "$step: rc $rc in $(($(date +%s) - t)) s" | tee -a "$OUT/steps.txt"
done
