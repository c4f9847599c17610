#!/usr/bin/env bash
# The decode pool's order on this machine's CPU, before and after: daris_ros/bench/decode_priority.py run on the
# tree of BASE (a commit) and on this checkout, in turn, REPEATS times each, with the same bench arguments. Each run
# appends one JSON line (labelled with its tree's commit) to docs/benchmarks/decode_priority/runs.jsonl.
# usage: scripts/cpu_decode_priority.sh BASE REPEATS [bench arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 BASE REPEATS [bench arguments...]" >&2; exit 2; }
base=$1; repeats=$2; shift 2
out=docs/benchmarks/decode_priority
mkdir -p "$out"
tree=$(mktemp -d /tmp/decode_priority_base.XXXXXX)
git worktree add -q --detach "$tree" "$base"
trap 'git worktree remove --force "$tree"' EXIT
here=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- daris_ros || here="$here+uncommitted"
base_label=$(git -C "$tree" rev-parse --short HEAD)
for _ in $(seq "$repeats"); do
  PYTHONPATH=$tree .venv/bin/python daris_ros/bench/decode_priority.py --label "$base_label" --json "$out/runs.jsonl" "$@"
  PYTHONPATH=$PWD .venv/bin/python daris_ros/bench/decode_priority.py --label "$here" --json "$out/runs.jsonl" "$@"
done
