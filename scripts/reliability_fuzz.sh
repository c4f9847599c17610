#!/usr/bin/env bash
# Full malformed-input run for docs/reliability (issue 8, item 1): the scheduler node from the install
# space gets N malformed Image + CompressedImage frames (every kind, seeded) mixed with good frames from
# daris-fuzz, which then checks the node's stats and /diagnostics. Needs `make build` (or scripts/build.sh).
#   scripts/reliability_fuzz.sh [COUNT] [SEED] [OUT_JSON]     (defaults: 10000 0 docs/reliability/fuzz_10k.json)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
SEED=${2:-0}
OUT=${3:-docs/reliability/fuzz_10k.json}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((100 + $$ % 100))}   # keep off other runs' DDS traffic
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
setsid scripts/run_in_install.sh install/daris_ros/lib/daris_ros/scheduler_node --ros-args \
  --params-file config/fuzz.yaml > "$WORK/scheduler.log" 2>&1 &
NODE=$!
for _ in $(seq 1200); do grep -q "running:" "$WORK/scheduler.log" && break; sleep 0.1; done
set +e
scripts/run_in_install.sh install/daris_ros/lib/daris_ros/daris-fuzz \
  --image-topic /fuzz/image_raw --image-task img \
  --compressed-topic /fuzz/image_raw/compressed --compressed-task jpg \
  --count "$COUNT" --seed "$SEED" --rate 400 --release-pause 0.3 \
  --max-pixels 100000 --future-tolerance 1.0 --past-tolerance 5.0 --node-pid "$(pgrep -s "$NODE" -f scheduler_node | head -1)" \
  --json "$OUT"
FUZZ_RC=$?
kill -INT "$NODE"
wait "$NODE"
NODE_RC=$?
set -e
LEFT=$(pgrep -s "$NODE" || true)
echo "daris-fuzz exit $FUZZ_RC; node exit on SIGINT: $NODE_RC; processes left in its session: ${LEFT:-none}"
grep -c "Traceback" "$WORK/scheduler.log" | sed 's/^/tracebacks in the node log: /' || true
python3 - "$OUT" "$NODE_RC" <<'PY'
import json, sys
p, rc = sys.argv[1], int(sys.argv[2])
r = json.load(open(p))
r["node_exit_code_on_sigint"] = rc
json.dump(r, open(p, "w"), indent=1, sort_keys=True)
PY
exit $((FUZZ_RC || NODE_RC))
