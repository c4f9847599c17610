#!/usr/bin/env bash
# The engine's host cost per release with no device, one commit against another: daris-engine-load --backend instant
# (every stage finishes at once, daris_ros/bench/instant_backend.py), 300 ResNet18 cameras at 30 Hz (1 in 3 HP) of
# 8x8 frames released together by the engine's clock, batching on: the loop's own Python per release, preprocessing
# next to nothing. BEFORE and AFTER are two checkouts (e.g. `git worktree add /tmp/before <sha>`), each with its
# .venv; ROUNDS rounds (default 3), interleaved (before, after, before, ...). Writes
# $OUT/$PREFIX<before|after>_<round>/engine_load.{md,json} and prints one table row per run. Usage, repo root:
#   BEFORE=/tmp/before AFTER=. OUT=docs/benchmarks/engine/instant PREFIX=s18_ scripts/instant_ab.sh
set -eu
: "${BEFORE:?a checkout of the commit to compare against}" "${AFTER:?a checkout of the commit measured}"
OUT=${OUT:-/tmp/instant_ab}
ROUNDS=${ROUNDS:-3}
COMMON=(--backend instant --tasks 300 --rate 30 --seconds 8 --warmup 2 --modes on --height 8 --width 8
        --input-size 8 --trigger clock)
OUT=$(realpath -m "$OUT")
for round in $(seq 1 "$ROUNDS"); do
  for variant in before after; do
    if [ "$variant" = before ]; then tree=$BEFORE; else tree=$AFTER; fi
    (cd "$tree" && .venv/bin/python -m daris_ros.bench.engine_load "${COMMON[@]}" --out "$OUT/${PREFIX:-}${variant}_$round" \
      > /dev/null 2>&1)
    echo "$variant $round $(git -C "$tree" rev-parse --short HEAD) $(tail -1 "$OUT/${PREFIX:-}${variant}_$round/engine_load.md")"
  done
done
