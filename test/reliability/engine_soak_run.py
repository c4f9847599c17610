"""Engine-level soak for docs/reliability (issue 8, item 6), for machines without ROS (the GPU test machine):
the engine of the node with a backend (``cpu``, ``str``, ``green``, ``mps``), ``--hp`` HP and ``--lp`` LP
tasks of one model released at their periods by :class:`daris_ros.runtime.driver.SyntheticCameras`, for
``--duration`` seconds. Every second: the process RSS, the device memory (per context, from the engine's
``memory()``; for ``mps`` the workers' reserved memory), the jobs in flight; per window of
``--window`` seconds: HP and LP miss rates. Least-squares slopes of RSS and device memory after
``--warmup`` seconds.

    python test/reliability/engine_soak_run.py --backend mps --duration 600 --json OUT.json   # GPU machine
    python test/reliability/engine_soak_run.py --backend cpu --duration 20 --input 32 --rate 5  # a dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _slope_per_min(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    t = np.asarray(ts) / 60.0
    return float(np.polyfit(t, np.asarray(ys, dtype=float), 1)[0])


def main(argv: list[str] | None = None) -> int:
    from daris_ros.runtime.driver import SyntheticCameras, drain
    from daris_ros.runtime.engine import Engine, JobResult
    from daris_ros.settings import SchedulerSettings, TaskSettings

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--backend", default="cpu", choices=("cpu", "str", "green", "mps"))
    ap.add_argument("--policy", default="MPS")
    ap.add_argument("--contexts", type=int, default=2)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--input", type=int, default=224)
    ap.add_argument("--hp", type=int, default=2)
    ap.add_argument("--lp", type=int, default=4)
    ap.add_argument("--rate", type=float, default=30.0, help="Hz of every task")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)

    period = 1.0 / a.rate
    tasks = tuple(TaskSettings(f"{p.lower()}{i}", f"/{p.lower()}{i}", p, period, period, a.model,
                               input_size=(a.input, a.input))
                  for p, n in (("HP", a.hp), ("LP", a.lp)) for i in range(n))
    device = "cpu" if a.backend == "cpu" else "cuda"
    s = SchedulerSettings(policy=a.policy, backend=a.backend, device=device, n_contexts=a.contexts,
                          n_streams=a.streams, profile_runs=5, tasks=tasks)
    # Counted as they come, nothing kept per job: a first H200 soak that kept every JobResult (~2 KB each, with
    # its stage traces) measured the harness, not the engine (RSS +41 MB/min at 360 jobs/s).
    lock = threading.Lock()
    counts: dict[tuple[int, str], list[int]] = {}  # (window, priority) -> [jobs, missed]
    totals = {"HP": [0, 0], "LP": [0, 0]}
    first: list[float] = []

    def on_result(r: JobResult) -> None:
        with lock:
            if not first:
                first.append(r.release_time)
            w = int((r.release_time - first[0]) // a.window)
            c = counts.setdefault((w, r.priority), [0, 0])
            c[0] += 1
            c[1] += not r.met
            totals[r.priority][0] += 1
            totals[r.priority][1] += not r.met

    eng = Engine(s, on_result=on_result)
    samples: list[dict[str, float]] = []
    t_load = time.monotonic()
    try:
        eng.load_models()
        eng.profile()
        eng.start()
        t_ready = time.monotonic()
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        with SyntheticCameras(eng, [t.name for t in tasks], frame):
            t0 = time.monotonic()
            while (now := time.monotonic()) - t0 < a.duration:
                mem = eng.memory(max_age=0.0)
                samples.append({"t": round(now - t0, 3), "rss_kb": _rss_kb(os.getpid()),
                                "device_bytes": float(sum(mem.bytes) if not mem.shared else mem.bytes[0]),
                                "in_flight": eng.in_flight()})
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        drain(eng, 30.0)
    finally:
        eng.close()
    n_win = max(1, int(a.duration // a.window))
    with lock:
        windows = [{prio: dict(zip(("jobs", "missed"), counts.get((w, prio), [0, 0]), strict=True))
                    for prio in ("HP", "LP")} for w in range(n_win)]
    after = [x for x in samples if x["t"] >= a.warmup]
    stats = eng.scheduler.task_stats()
    out = {
        "backend": a.backend, "policy": a.policy, "layout": f"{a.contexts}x{a.streams}", "model": a.model,
        "input": a.input, "tasks": {"HP": a.hp, "LP": a.lp}, "rate_hz": a.rate, "duration_s": a.duration,
        "start_up_s": round(t_ready - t_load, 2), "memory_source": eng.memory().source,
        "hp": {"released": sum(v.released for v in stats.values() if v.priority.name == "HP"),
               "completed": totals["HP"][0], "missed": totals["HP"][1]},
        "lp": {"released": sum(v.released for v in stats.values() if v.priority.name == "LP"),
               "rejected": sum(v.rejected for v in stats.values() if v.priority.name == "LP"),
               "completed": totals["LP"][0], "missed": totals["LP"][1]},
        "windows": windows, "max_in_flight": max((x["in_flight"] for x in samples), default=0),
        "rss_slope_kb_per_min": round(_slope_per_min([x["t"] for x in after], [x["rss_kb"] for x in after]), 1),
        "device_memory_slope_bytes_per_min": round(_slope_per_min([x["t"] for x in after],
                                                                  [x["device_bytes"] for x in after]), 1),
        "worker_faults": eng.faults.worker_faults, "samples": samples,
        "command": "python test/reliability/engine_soak_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
