#!/usr/bin/env bash
# Session 16's device call (issue 14, the node end to end over DDS at 48 JPEG cameras, intake_processes=4,
# decode_threads=0): (1) this tree, py-spy --gil over the window; (2) the tree of an earlier commit, packed as
# .device/old.tgz (`git archive --format=tar.gz -o .device/old.tgz <commit>`), built in a ROS install of its own,
# the same run: the before/after pair on one machine; (3) this tree again with py-spy --idle (every thread's wall
# time, the engine loop's included); (4) this tree at 36 and 24 cameras, as time allows. nvidia-smi samples the GPU's utilization in every run. Everything lands in
# $OUT/final.tgz; a line per run is printed. Usage on the device machine, repo root (carry .device/wheels312,
# .device/tools, .device/old.tgz):
#   DARIS_COMMIT=<sha> OLD_COMMIT=<sha> scripts/gpu_session16.sh
set -u
OUT=${OUT:-/tmp/out}
R=$OUT/r
REPO=$PWD
mkdir -p "$R"
T=$(date +%s)
IP4D0=ip4d0=--param,intake_processes=4,--param,decode_threads=0
OUT=$R/new CAMERAS=48 BUDGET_S=190 scripts/gpu_node_profile.sh "$IP4D0" > "$R/new.log" 2>&1
echo "new done at $(( $(date +%s) - T )) s"
if [ -f .device/old.tgz ]; then
  rm -rf /tmp/old && mkdir -p /tmp/old && tar xzf .device/old.tgz -C /tmp/old && ln -sfn "$REPO/.device" /tmp/old/.device
  (cd /tmp/old && OUT=$R/old DARIS_ROS_ROOT=/tmp/daris_ros_old DARIS_COMMIT=${OLD_COMMIT:-old} CAMERAS=48 BUDGET_S=230 \
    "$REPO/scripts/gpu_node_profile.sh" "$IP4D0") > "$R/old.log" 2>&1
  echo "old done at $(( $(date +%s) - T )) s"
fi
OUT=$R/wall PROFILE=wall CAMERAS=48 BUDGET_S=120 scripts/gpu_node_profile.sh "$IP4D0" > "$R/wall.log" 2>&1
echo "wall done at $(( $(date +%s) - T )) s"
for n in 36 24; do
  OUT=$R/new$n CAMERAS=$n BUDGET_S=$(( 575 - ($(date +%s) - T) )) scripts/gpu_node_profile.sh "$IP4D0" > "$R/new$n.log" 2>&1
done
echo "all done at $(( $(date +%s) - T )) s"
tar czf "$OUT/final.tgz" -C "$OUT" r
X=$(mktemp -d)
find "$R" -name "*.tgz" | while read -r t; do mkdir -p "$X/$(basename "$(dirname "$t")")" && tar xzf "$t" -C "$X/$(basename "$(dirname "$t")")"; done
find "$X" -name run.json -path "*runs*" | sort | while read -r j; do
  python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[3], r['system'], \
r['cameras'], {k: r.get(k) for k in ['hp_served', 'hp_missed', 'hp_dmr', 'hp_e2e_p50_ms', 'hp_e2e_p99_ms', \
'frames_uncounted', 'cpu_cores', 'lp_dmr', 'hp_split_p50_ms']})" "$j"
done
