#!/usr/bin/env bash
# Session 15's device call (issue 14, the node end to end over DDS): the scheduler node with intake_processes=4
# and decode_threads=0 at 48, 24 and 36 JPEG cameras, the node as it was before (intake_processes=0) at 48 in the
# same call (the before/after pair), then per-camera nodes at 12 and 24 cameras. Every node run has py-spy --gil
# attached over its window (scripts/gpu_node_profile.sh). Everything lands in $OUT/final.tgz; a line per run is
# printed. Usage on the device machine, repo root (carry .device/wheels312 and .device/tools):
#   DARIS_COMMIT=<sha> scripts/gpu_session15.sh
set -u
OUT=${OUT:-/tmp/out}
R=$OUT/r
mkdir -p "$R"
T=$(date +%s)
IP4D0=ip4d0=--param,intake_processes=4,--param,decode_threads=0
OUT=$R/n48 CAMERAS=48 BUDGET_S=200 scripts/gpu_node_profile.sh "$IP4D0" base= > "$R/n48.log" 2>&1
OUT=$R/n24 CAMERAS=24 BUDGET_S=100 scripts/gpu_node_profile.sh "$IP4D0" > "$R/n24.log" 2>&1
OUT=$R/n36 CAMERAS=36 BUDGET_S=100 scripts/gpu_node_profile.sh "$IP4D0" > "$R/n36.log" 2>&1
echo "node runs done at $(( $(date +%s) - T )) s"
OUT=$R/pc BUDGET_S=$(( 560 - ($(date +%s) - T) )) E2E_SWEEP_NODE=12,24 scripts/gpu_session8.sh percam > "$R/pc.log" 2>&1
echo "all done at $(( $(date +%s) - T )) s"
tar czf "$OUT/final.tgz" -C "$OUT" r
X=$(mktemp -d)
find "$R" -name "*.tgz" -exec tar xzf {} -C "$X" \;
find "$X" -name run.json -path "*runs*" | sort | while read -r j; do
  python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-4], r['system'], \
r['cameras'], {k: r.get(k) for k in ['hp_served', 'hp_missed', 'hp_e2e_p50_ms', 'hp_e2e_p99_ms', 'frames_uncounted', \
'cpu_cores', 'gpu_mem_gb', 'lp_dmr']})" "$j"
done
