"""Worker-kill measurement on the cpu backend for docs/reliability (issue 8, item 2 on the CPU): the engine
of test_worker_fault.py (real ResNet18 stages on real worker threads, HP at 10 Hz and LP at 5 Hz on two
contexts) with ``--kills`` workers killed mid-stage, one every ``--every`` seconds, alternating between
the contexts. Per kill: death -> detection, detection -> recovery (replacement running and the lost stage
re-run to completion), and the HP jobs released after the recovery that missed.

    scripts/run_in_install.sh bash -c 'cd /tmp && python /work/main/test/reliability/worker_kill_run.py \\
        --kills 50 --json /work/main/docs/reliability/worker_kill_cpu.json'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_worker_fault import _drain, _driver, _engine  # noqa: E402


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    e, results = _engine()
    hit = []
    try:
        with _driver(e):
            time.sleep(1.0)
            for i in range(a.kills):
                hit.append(e.backend.inject_fault("kill", i % 2, 0))
                time.sleep(a.every)
        _drain(e)
    finally:
        e.close()
    recs = list(e.faults.records)
    det = [r.detection_ms for r in recs if r.detection_ms is not None]
    rec = [r.recovery_ms for r in recs if r.recovery_ms is not None]
    total = [(r.recovered - r.died) * 1e3 for r in recs if r.recovered is not None and r.died is not None]
    last = max(r.recovered for r in recs if r.recovered is not None)
    hp = [r for r in results if r.priority == "HP"]
    recovered = sorted(r.recovered for r in recs if r.recovered is not None)
    hp_after = [r for r in hp if any(t < r.release_time for t in recovered)]
    killed = {(r.task, r.job_id) for r in recs if r.outcome == "retried"}
    stats = e.scheduler.task_stats()
    out = {
        "backend": "cpu", "kills": a.kills, "kills_hitting_a_stage_in_flight": sum(hit),
        "faults_detected": len(recs), "outcomes": {o: sum(r.outcome == o for r in recs) for o in ("retried",
                                                                                                   "failed", "idle")},
        "detection_ms": {"mean": statistics.fmean(det), "p50": _pct(det, 50), "p99": _pct(det, 99), "max": max(det)},
        "recovery_ms": {"mean": statistics.fmean(rec), "p50": _pct(rec, 50), "p99": _pct(rec, 99), "max": max(rec)},
        "death_to_recovery_ms": {"mean": statistics.fmean(total), "p50": _pct(total, 50), "p99": _pct(total, 99),
                                 "max": max(total)},
        "hp_jobs_after_first_recovery": len(hp_after),
        "hp_misses_after_recovery": sum(not r.met for r in hp_after if r.release_time > recovered[0]
                                        and (r.task, r.job_id) not in killed),
        "hp_misses_of_killed_jobs": sum(not r.met for r in hp if (r.task, r.job_id) in killed),
        "hp_misses_total": sum(not r.met for r in hp), "hp_completed": len(hp),
        "hp_misses_after_last_recovery": sum(not r.met for r in hp if r.release_time > last),
        "jobs_lost": sum(stats[t].admitted - stats[t].completed - stats[t].skipped for t in stats),
        "jobs_skipped": sum(stats[t].skipped for t in stats),  # skip_late: not started within x deadlines
        "results_with_error": sum(bool(r.error) for r in results),
        "stale_results_ignored": e.faults.stale_completions,
        "records": [r.as_dict() for r in recs],
    }
    print(json.dumps({k: v for k, v in out.items() if k != "records"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
