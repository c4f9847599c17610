#!/usr/bin/env bash
# Node end to end over DDS (issue 14), one run per SPEC, no profiler attached, as far as TOTAL_S (default 480: a
# device call may be given less than its 600 s) allows. SPEC = CAMERAS:NAME:PARAMS, PARAMS a comma-separated list
# of daris-node-e2e arguments (e.g. --param,decode_threads=1). Interleave repeated variants (a, b, a, b): runs of one
# commit differ by as much as the effects looked for. Each run is added to $OUT/final.tgz as soon as it ends (the only
# file in $OUT, so a call cut short still brings back the runs done); a line per run is printed at the end. Usage on
# the device machine, repo root (carry .device/wheels312, .device/tools):
#   DARIS_COMMIT=<sha> TOTAL_S=480 scripts/gpu_node_variants.sh SPEC [SPEC ...]
# Session 17's next call (release_window 16 ms with the release clock counting from arrivals, 497f03c, and with
# batch_pad_limit 0.5 (on the instant backend it kept gathered jobs in whole batches: docs/benchmarks/engine/README.md,
# session 17), against the frame trigger and the clock; LP rejected over a loop busy share of 0.9 in all):
#   B=--param,intake_processes=4,--param,decode_threads=1,--param,lp_host_busy_limit=0.9
#   W=--param,release_window=0.016
#   scripts/gpu_node_variants.sh 48:w16a:$B,$W 48:fa:$B 48:w16pa:$B,$W,--param,batch_pad_limit=0.5 \
#     48:ca:$B,--param,release_trigger=clock 48:w16b:$B,$W 48:fb:$B 48:w16pb:$B,$W,--param,batch_pad_limit=0.5
# Per-camera nodes (the acceptance's comparison): PARAMS --systems,per-camera (the last --systems wins), e.g.
#   24:pc24:--systems,per-camera
# GPU_TESTS (optional): pytest -m gpu on these files first (output in the pack, gpu_tests.txt), within TOTAL_S.
# The next call (planned in session 18, refused then: a finished job's copy to the host asynchronous, high-priority
# preprocessing and post-processing streams, untested on a GPU so far; the per-camera nodes at 24 and 12 cameras):
#   GPU_TESTS="test/gpu/test_gpu_post_copy.py test/gpu/test_gpu_engine_batching.py test/gpu/test_gpu_detection.py" \
#     scripts/gpu_node_variants.sh 48:w16n:$B,$W 24:pc24:--systems,per-camera 48:fn:$B 12:pc12:--systems,per-camera
set -u
OUT=${OUT:-/tmp/out}
R=/tmp/node_variants/r
rm -rf "$R" && mkdir -p "$R" "$OUT"
T=$(date +%s)
TOTAL_S=${TOTAL_S:-480}
pack() { tar czf "$OUT/final.tgz.part" -C "$(dirname "$R")" r && mv "$OUT/final.tgz.part" "$OUT/final.tgz"; }
if [ -n "${GPU_TESTS:-}" ]; then
  # shellcheck disable=SC2086 # (a list of files)
  timeout 200 python3 -m pytest -m gpu -q -rs -p no:cacheprovider $GPU_TESTS > "$R/gpu_tests.txt" 2>&1
  echo "gpu tests: rc $? at $(( $(date +%s) - T )) s: $(tail -1 "$R/gpu_tests.txt")"
  pack
fi
for spec in "$@"; do
  IFS=: read -r cams name params <<< "$spec"
  left=$(( TOTAL_S - ($(date +%s) - T) ))
  [ "$left" -ge 90 ] || { echo "$name: skipped, ${left} s left"; continue; }
  OUT=$R/$name PROFILE=none CAMERAS=$cams BUDGET_S=$left scripts/gpu_node_profile.sh "$name=$params" \
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
'frames_uncounted', 'cpu_cores', 'lp_dmr', 'lp_rejected', 'hp_split_p50_ms']})" "$j"
done
