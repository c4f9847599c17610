#!/usr/bin/env bash
# Create .venv (Python 3.11 or 3.12) with ROS 2 from PyPI wheels, torch and the dev tools, all pinned.
# Idempotent: reinstalls only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
REQS=(requirements/ros.txt requirements/torch.txt requirements/base.txt requirements/dev.txt)

pick_python() {
  for cand in "${PYTHON:-}" python3.12 python3.11 python3; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
      echo "$cand"; return 0
    fi
  done
  echo "error: need Python 3.11 or 3.12 (the ROS 2 wheels exist for cp311/cp312 only)" >&2
  return 1
}

stamp="$VENV/.daris-requirements.sha"
want=$(cat "${REQS[@]}" requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  echo "== creating $VENV with $py"
  "$py" -m venv "$VENV"
fi
echo "== installing pinned requirements into $VENV (first time: a few minutes, ~6 GB with torch)"
# Downloads (torch's CUDA libraries: several GB) and the installed venv share one disk at the peak; pip's
# cache would hold a third copy, so it is off (a CI clone once ran out of space with it on). Say it when
# the disk is short, before pip fails with a bare "No space left on device".
need_gb=12
free_gb=$(df -Pk "$VENV" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "${free_gb:-0}" -lt "$need_gb" ]; then
  echo "warning: $free_gb GB free on the disk of $VENV ($(df -P "$VENV" | awk 'NR == 2 { print $6 }')); installing torch needs about $need_gb GB at the peak" >&2
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  -c requirements/constraints.txt "${REQS[@]/#/-r}"
# The wheels install ROS package manifests under $VENV/share: keep colcon from crawling them.
touch "$VENV/COLCON_IGNORE"
echo "$want" > "$stamp"
