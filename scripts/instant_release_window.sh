#!/usr/bin/env bash
# The engine's host cost with no device (daris-engine-load --backend instant), 48 cameras of ResNet18 at 30 Hz (1 in
# 3 HP), batching on: free-running cameras (phases spread over the period) released on arrival, with release_window
# 8 and 16 ms (batch_pad_limit 0.1, the default, and 0.5), against a rig released by the engine's clock; each variant
# twice, interleaved. Writes
# $OUT/<variant>_<round>/engine_load.{md,json} and prints one table row per run. Usage, repo root:
#   OUT=docs/benchmarks/engine/instant scripts/instant_release_window.sh
set -eu
OUT=${OUT:-/tmp/instant_release_window}
PY=${PY:-.venv/bin/python}
COMMON=(--backend instant --tasks 48 --rate 30 --seconds 8 --warmup 2 --modes on --height 48 --width 64
        --input-size 32)
for round in 1 2; do
  for variant in frame w8 w16 w8p50 w16p50 clock; do
    case $variant in
      frame) args=(--trigger frame) ;;
      w8) args=(--trigger frame --release-window 0.008) ;;
      w16) args=(--trigger frame --release-window 0.016) ;;
      w8p50) args=(--trigger frame --release-window 0.008 --pad-limit 0.5) ;;
      w16p50) args=(--trigger frame --release-window 0.016 --pad-limit 0.5) ;;
      clock) args=(--trigger clock) ;;
    esac
    "$PY" -m daris_ros.bench.engine_load "${COMMON[@]}" "${args[@]}" --out "$OUT/${variant}_$round" > /dev/null 2>&1
    echo "$variant $round $(tail -1 "$OUT/${variant}_$round/engine_load.md")"
  done
done
