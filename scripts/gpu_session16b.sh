#!/usr/bin/env bash
# Session 16's second device call (issue 14): where the node's decoding runs, at 48 JPEG cameras with
# intake_processes=4 and no profiler attached: decode_threads 0 (the engine's loop decodes; py-spy found it in the
# nvJPEG call a quarter of its time), 1 and 4 (a decode pool), each twice, interleaved (d0 d1 d4 d1 d0 d4), then
# decode_threads=1 at 36 cameras as time allows. Everything lands in $OUT/final.tgz; a line per run is printed.
# Usage on the device machine, repo root (carry .device/wheels312, .device/tools):
#   DARIS_COMMIT=<sha> scripts/gpu_session16b.sh
set -u
OUT=${OUT:-/tmp/out}
R=$OUT/r
mkdir -p "$R"
T=$(date +%s)
IP=--param,intake_processes=4,--param,decode_threads
OUT=$R/n48 PROFILE=none CAMERAS=48 BUDGET_S=480 scripts/gpu_node_profile.sh "d0a=$IP=0" "d1a=$IP=1" "d4a=$IP=4" \
  "d1b=$IP=1" "d0b=$IP=0" "d4b=$IP=4" > "$R/n48.log" 2>&1
echo "48 done at $(( $(date +%s) - T )) s"
OUT=$R/n36 PROFILE=none CAMERAS=36 BUDGET_S=$(( 570 - ($(date +%s) - T) )) scripts/gpu_node_profile.sh "d1=$IP=1" \
  > "$R/n36.log" 2>&1
echo "all done at $(( $(date +%s) - T )) s"
tar czf "$OUT/final.tgz" -C "$OUT" r
X=$(mktemp -d)
find "$R" -name "*.tgz" | while read -r t; do tar xzf "$t" -C "$X"; done
find "$X" -name run.json -path "*runs*" | sort | while read -r j; do
  python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[3], r['system'], \
r['cameras'], {k: r.get(k) for k in ['hp_served', 'hp_missed', 'hp_dmr', 'hp_e2e_p50_ms', 'hp_e2e_p99_ms', \
'frames_uncounted', 'cpu_cores', 'lp_dmr', 'hp_split_p50_ms']})" "$j"
done
