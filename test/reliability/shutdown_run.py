"""Shutdown figures for docs/reliability (issue 8, item 5): ``--repeat`` x (SIGINT, SIGTERM) x (loading,
profiling, running) with the checks of test_shutdown.py; writes every case and the totals.

    scripts/run_in_install.sh bash -c 'cd /tmp && python /work/main/test/reliability/shutdown_run.py \\
        --repeat 3 --json /work/main/docs/reliability/shutdown_cpu.json'
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_shutdown import PHASES, signal_at_phase  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    from ament_index_python.packages import get_package_prefix

    prefix = Path(get_package_prefix("daris_ros"))
    cases = []
    for _ in range(a.repeat):
        for phase in PHASES:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with tempfile.TemporaryDirectory() as d:
                    r = signal_at_phase(prefix, Path(d), phase, sig)
                if r["exit_code"] == 0 and not r["traceback"]:
                    del r["log_tail"]
                cases.append(r)
                print(phase, sig.name, r["exit_code"], r["stop_seconds"], r["orphan_processes"],
                      r["shm_segments_left"], flush=True)
    out = {"cases": cases, "runs": len(cases),
           "nonzero_exit_codes": sum(c["exit_code"] != 0 for c in cases),
           "orphan_processes_after_signal": sum(c["orphan_processes"] for c in cases),
           "orphan_processes_after_sigint": sum(c["orphan_processes"] for c in cases if c["signal"] == "SIGINT"),
           "shm_segments_left": sum(len(c["shm_segments_left"]) for c in cases),
           "max_stop_seconds": max(c["stop_seconds"] for c in cases),
           "tracebacks": sum(c["traceback"] for c in cases)}
    print(json.dumps({k: v for k, v in out.items() if k != "cases"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
