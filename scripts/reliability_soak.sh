#!/usr/bin/env bash
# Long soak / overload runs for docs/reliability (issue 8, items 4 and 6) on the cpu backend: the scheduler
# node from the install space, 2 HP + 24 LP synthetic cameras, RSS and stats sampled every second
# (test/reliability/soak_scenario.py; the CI test test_overload_soak.py runs the same scenario for 40 s).
#   scripts/reliability_soak.sh OUT_JSON [soak_scenario.py options...]
#   scripts/reliability_soak.sh docs/reliability/soak_cpu_30min.json --duration 1800 --load 1.0 --warmup 120
#   scripts/reliability_soak.sh docs/reliability/overload_cpu_10min.json --duration 600 --load 3.0 --kill-every 60
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "$1")
shift
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((100 + $$ % 100))}   # keep off other runs' DDS traffic
# run from /tmp: the source tree must not shadow the installed daris_ros (it has no daris_ros.msg)
exec scripts/run_in_install.sh bash -c "cd /tmp && python $(pwd)/test/reliability/soak_scenario.py --json '$OUT' $*"
