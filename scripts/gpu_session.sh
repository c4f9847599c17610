#!/usr/bin/env bash
# One device-machine session: environment, GPU tests, then daris-bench with the given arguments.
# Usage (on the GPU machine, repo root): scripts/gpu_session.sh [bench args...]; the test log, the bench log and
# $BENCH_OUT (default docs/benchmarks) packed as bench.tgz land in $OUT (or /tmp/out).
# DARIS_GPU_OUT (default $OUT/rel) collects the figures of test/gpu/test_gpu_reliability*.py; SOAK_S=600 adds an
# engine soak on $SOAK_BACKEND (default mps) for docs/reliability (test/reliability/engine_soak_run.py).
# GPU_TESTS (default "test/gpu test/runtime") selects the tests, e.g. GPU_TESTS=test/gpu/test_gpu_reliability_more.py.
set -u
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, cuda.bindings, cupy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bindings', cuda.bindings.__version__, 'cupy', cupy.__version__)"
} 2>&1 | tee "$OUT/gpu_tests.txt"
export DARIS_GPU_OUT=${DARIS_GPU_OUT:-$OUT/rel}
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # shellcheck disable=SC2086 # (GPU_TESTS is a list of paths)
  timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -m gpu ${GPU_TESTS:-test/gpu test/runtime} -p no:cacheprovider -q -rs -s \
    2>&1 | tee -a "$OUT/gpu_tests.txt" | grep -v "^$" | tail -60
fi
if [ "$#" -gt 0 ]; then
  BENCH_OUT=${BENCH_OUT:-docs/benchmarks}
  timeout "${BENCH_TIMEOUT:-300}" python3 -m daris_ros.bench.cli --out "$BENCH_OUT" "$@" 2>&1 \
    | tee "$OUT/bench_log.txt" | grep -E "daris_ros.bench|Error|error|Traceback" | tail -40
  tar czf "$OUT/bench.tgz" "$BENCH_OUT"
fi
if [ "${SOAK_S:-0}" -gt 0 ]; then
  timeout $((SOAK_S + 240)) python3 test/reliability/engine_soak_run.py --backend "${SOAK_BACKEND:-mps}" \
    --duration "$SOAK_S" --warmup 60 --json "$OUT/soak_gpu.json" 2>&1 | tail -40
fi
