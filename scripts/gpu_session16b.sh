#!/usr/bin/env bash
# Issue 14, where the node's decoding runs, at 48 JPEG cameras with intake_processes=4 and no profiler attached:
# decode_threads 0 (the engine's loop decodes; py-spy found it in the nvJPEG call a quarter of its time, session 16),
# 1 and 4 (a decode pool), each twice, interleaved (d0 d1 d4 d1 d0 d4), then decode_threads=1 at 36 cameras, as far
# as TOTAL_S (default 480: a device call may be given less than its 600 s) allows. Each run is added to
# $OUT/final.tgz as soon as it ends (the only file in $OUT, so a call cut short still brings back the runs done);
# a line per run is printed at the end. Usage on the device machine, repo root (carry .device/wheels312,
# .device/tools):
#   DARIS_COMMIT=<sha> TOTAL_S=480 scripts/gpu_session16b.sh
set -u
OUT=${OUT:-/tmp/out}
R=/tmp/session16b/r
rm -rf "$R" && mkdir -p "$R" "$OUT"
T=$(date +%s)
TOTAL_S=${TOTAL_S:-480}
IP=--param,intake_processes=4,--param,decode_threads
pack() { tar czf "$OUT/final.tgz.part" -C "$(dirname "$R")" r && mv "$OUT/final.tgz.part" "$OUT/final.tgz"; }
for spec in 48:d0a:0 48:d1a:1 48:d4a:4 48:d1b:1 48:d0b:0 48:d4b:4 36:d1c:1; do
  IFS=: read -r cams name threads <<< "$spec"
  left=$(( TOTAL_S - ($(date +%s) - T) ))
  [ "$left" -ge 90 ] || { echo "$name: skipped, ${left} s left"; continue; }
  OUT=$R/$name PROFILE=none CAMERAS=$cams BUDGET_S=$left scripts/gpu_node_profile.sh "$name=$IP=$threads" \
    > "$R/$name.log" 2>&1
  echo "$name: done at $(( $(date +%s) - T )) s"
  export ROS_READY=1
  pack
done
X=$(mktemp -d)
find "$R" -name "*.tgz" | while read -r t; do tar xzf "$t" -C "$X"; done
find "$X" -name run.json -path "*runs*" | sort | while read -r j; do
  python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[3], r['system'], \
r['cameras'], {k: r.get(k) for k in ['hp_served', 'hp_missed', 'hp_dmr', 'hp_e2e_p50_ms', 'hp_e2e_p99_ms', \
'frames_uncounted', 'cpu_cores', 'lp_dmr', 'hp_split_p50_ms']})" "$j"
done
