"""Overload + soak scenario over real DDS (issue 8, items 4 and 6, and the worker kill of item 2 on the cpu
backend), shared by the CI test (test_overload_soak.py) and the long runs for docs/reliability
(scripts/reliability_soak.sh).

The scheduler node runs from the install space (MPS policy, 2 contexts, ``hp_admission`` on) with 2 HP
and 4 LP camera tasks fed by synthetic cameras in this process. After start-up the LP rates are set
(``ros2 param set``) so that the offered load, from the node's own profiled per-task MRET, is
``load`` x N_p (3.0: 300 %). Worker kills come from ``DARIS_CPU_FAULTS``. Every second: the node's RSS
(/proc), its stats and /diagnostics (jobs in flight, stages queued). The figures: HP misses, LP miss
rate per window, rejections, queue maxima, RSS slope (least squares over the run after warm-up), worker
faults and recovery times.

    scripts/run_in_install.sh python test/reliability/soak_scenario.py --duration 1800 --load 1.0 \\
        --json docs/reliability/soak_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_helpers import lstsq_slope, start_node  # noqa: E402

# HP: light (small input, 5 Hz), so that its utilization stays far below a context even when the shared
# CPU slows it down 3x (an HP task whose MRET reaches its period is rejected by HPA until it runs again,
# which it then never does). LP: many tasks of small utilization each (about 0.24 at 300 %), so that
# admission and migration have choices and LP keeps running while most of its releases are rejected.
HP_TASKS = ("hp_front", "hp_rear")
LP_TASKS = tuple(f"lp{i}" for i in range(24))
HP_RATE = 5.0
N_P = 2  # contexts x streams


def params(stats_period: float, lp_rate: float = 10.0, hp_deadline: float | None = None) -> str:
    """The node's parameter file; HP deadline = period unless ``hp_deadline`` (seconds) is given."""
    lines = [f"""
daris_scheduler:
  ros__parameters:
    policy: MPS
    backend: cpu
    n_contexts: {N_P}
    n_streams: 1
    hp_admission: true
    stats_period: {stats_period}
    profile_runs: 5
    worker_stage_timeout: 2.0
    task_names: [{", ".join(HP_TASKS + LP_TASKS)}]
    tasks:"""]
    for t in HP_TASKS:
        deadline = "" if hp_deadline is None else f"deadline: {hp_deadline}, "
        lines.append(f"      {t}: {{topic: /soak/{t}, priority: HP, rate: {HP_RATE}, {deadline}"
                     "model: resnet18, input_size: [32, 32]}")
    for t in LP_TASKS:
        lines.append(f"      {t}: {{topic: /soak/{t}, priority: LP, rate: {lp_rate}, model: resnet18, "
                     "input_size: [224, 224]}")
    return "\n".join(lines) + "\n"


@dataclass
class Sample:
    t: float  # seconds since the cameras started
    rss_kb: int
    tasks: dict[str, dict[str, float]]
    diag: dict[str, str]


@dataclass
class Harness:
    node: Any
    samples: list[Sample] = field(default_factory=list)
    stats: Any = None
    diag_sched: dict[str, str] = field(default_factory=dict)
    diag_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    diag_levels: list[tuple[float, int, str]] = field(default_factory=list)
    task_messages: dict[str, set[str]] = field(default_factory=dict)  # every message seen, per task
    hp_results: dict[str, list[tuple[int, bool, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _make_harness(node: Any) -> tuple[Harness, Any]:
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from daris_ros.msg import InferenceResult, SchedulerStats

    h = Harness(node)

    def on_stats(m: Any) -> None:
        with h.lock:
            h.stats = m

    def on_diag(m: Any) -> None:
        with h.lock:
            for s in m.status:
                values = {kv.key: kv.value for kv in s.values}
                if s.name.endswith(": scheduler"):
                    h.diag_sched = values
                    h.diag_levels.append((time.monotonic(), s.level[0] if isinstance(s.level, bytes) else s.level,
                                          s.message))
                elif ": task " in s.name:
                    task = s.name.split(": task ", 1)[1]
                    h.diag_tasks[task] = {"level": s.level, "message": s.message, **values}
                    h.task_messages.setdefault(task, set()).update(p.split(" (")[0] for p in s.message.split("; "))

    node.create_subscription(SchedulerStats, "/daris/stats", on_stats, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    for t in HP_TASKS:
        h.hp_results[t] = []
        node.create_subscription(InferenceResult, f"/daris/{t}/result",
                                 lambda m, t=t: h.hp_results[t].append((m.job_id, m.met, m.response_time)), 100)
    pubs = {t: node.create_publisher(Image, f"/soak/{t}", qos_profile_sensor_data) for t in HP_TASKS + LP_TASKS}
    frame = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
    frame.data = np.random.default_rng(0).integers(0, 256, 48 * 64 * 3, dtype=np.uint8).tobytes()
    frame.header.frame_id = "soak_camera"
    state: dict[str, Any] = {"on": False}

    def tick() -> None:
        if not state["on"]:
            return
        frame.header.stamp = node.get_clock().now().to_msg()
        for p in pubs.values():
            p.publish(frame)

    def start_cameras(rate: float) -> None:
        state["on"] = True
        state["timer"] = node.create_timer(1.0 / rate, tick)

    state["start"] = start_cameras
    return h, state


def _task_counts(t: Any) -> dict[str, float]:
    return {"released": t.released, "admitted": t.admitted, "rejected": t.rejected, "completed": t.completed,
            "missed": t.missed, "frames": t.frames, "dropped": t.dropped, "mret": t.mret, "period": t.period,
            "priority": t.priority}


def _set_rates(node: Any, rates: dict[str, float]) -> None:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cli = node.create_client(SetParameters, "/daris_scheduler/set_parameters")
    assert cli.wait_for_service(timeout_sec=20), "no set_parameters service"
    fut = cli.call_async(SetParameters.Request(parameters=[Parameter(f"tasks.{t}.rate", value=float(r))
                                                           .to_parameter_msg() for t, r in rates.items()]))
    t0 = time.monotonic()
    while not fut.done():
        assert time.monotonic() - t0 < 20, "set_parameters timed out"
        time.sleep(0.02)
    bad = [r.reason for r in fut.result().results if not r.successful]
    assert not bad, bad


def run_scenario(install_prefix: Path, workdir: Path, *, duration: float, load: float = 3.0,
                 kills: tuple[float, ...] = (), stats_period: float = 1.0, warmup: float = 10.0,
                 hp_deadline: float | None = None) -> dict[str, Any]:
    """Run the node for ``duration`` s of cameras at the given offered ``load`` (x N_p); returns figures.
    ``hp_deadline``: the HP tasks' deadline in seconds (default: their period)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    # kills are timed from the first stage submitted; the cameras start a few seconds after that point
    env = {"DARIS_CPU_FAULTS": ";".join(f"kill:{i % N_P}:0:{t:g}" for i, t in enumerate(kills))} if kills else {}
    proc = start_node(install_prefix, params(stats_period, hp_deadline=hp_deadline), workdir, env=env)
    try:  # a harness that fails to start must not leave the node running (it would load every later test)
        rclpy.init()
        node = Node(f"soak_harness_{os.getpid()}")
        h, cams = _make_harness(node)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        threading.Thread(target=ex.spin, daemon=True).start()
    except BaseException:
        proc.stop()
        rclpy.try_shutdown()
        raise
    out: dict[str, Any] = {"duration_s": duration, "load_target": load, "kills_at_s": list(kills),
                           "hp_deadline_s": hp_deadline if hp_deadline is not None else 1.0 / HP_RATE}
    try:
        proc.wait_for("running:")
        t_wait = time.monotonic()
        while h.stats is None:
            assert time.monotonic() - t_wait < 30, "no stats"
            time.sleep(0.05)
        # LP rates for the offered load: sum_i MRET_i / T_i = load * N_p (MRET from the node's profiling)
        with h.lock:
            mret = {t.task: t.mret for t in h.stats.tasks}
        hp_u = sum(mret[t] * HP_RATE for t in HP_TASKS)
        lp_rate = max(0.1, (load * N_P - hp_u) / sum(mret[t] for t in LP_TASKS))
        _set_rates(node, {t: lp_rate for t in LP_TASKS})
        camera_rate = 1.5 * max(lp_rate, HP_RATE)  # every period has a new frame
        out.update(profiled_mret_ms={t: round(v * 1e3, 2) for t, v in mret.items()}, lp_rate_hz=round(lp_rate, 2),
                   hp_rate_hz=HP_RATE, camera_rate_hz=round(camera_rate, 2),
                   offered_load=round((hp_u + lp_rate * sum(mret[t] for t in LP_TASKS)) / N_P, 3))
        cams["start"](camera_rate)
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < duration:
            assert proc.proc.poll() is None, f"node died:\n{proc.output()[-3000:]}"
            with h.lock:
                tasks = {t.task: _task_counts(t) for t in h.stats.tasks}
                diag = dict(h.diag_sched)
            h.samples.append(Sample(now - t0, proc.rss_kb(), tasks, diag))
            time.sleep(max(0.0, t0 + len(h.samples) - time.monotonic()))
        cams["on"] = False
        time.sleep(max(1.0, 2 * stats_period))
        with h.lock:
            final = {t.task: _task_counts(t) for t in h.stats.tasks}
            final_diag, task_diag = dict(h.diag_sched), dict(h.diag_tasks)
            levels = list(h.diag_levels)
        out.update(_figures(h, final, final_diag, task_diag, levels, warmup))
    finally:
        cams["on"] = False
        rc = proc.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    out["exit_code"] = rc
    out["node_log_tail"] = proc.output()[-2000:]
    return out


def _window(samples: list[Sample], a: float, b: float, tasks: tuple[str, ...], key: str, den: str) -> float | None:
    s0 = min((s for s in samples if s.t >= a), key=lambda s: s.t, default=None)
    s1 = max((s for s in samples if s.t <= b), key=lambda s: s.t, default=None)
    if s0 is None or s1 is None:
        return None
    num = sum(s1.tasks[t][key] - s0.tasks[t][key] for t in tasks)
    d = sum(s1.tasks[t][den] - s0.tasks[t][den] for t in tasks)
    return num / d if d else None


def _figures(h: Harness, final: dict[str, dict[str, float]], diag: dict[str, str], task_diag: dict[str, Any],
             levels: list[tuple[float, int, str]], warmup: float) -> dict[str, Any]:
    s = h.samples
    steady = [x for x in s if x.t >= warmup] or s
    slope_kb_s = lstsq_slope([x.t for x in steady], [float(x.rss_kb) for x in steady])
    dur = s[-1].t if s else 0.0
    n_win = 4
    edges = [warmup + (dur - warmup) * i / n_win for i in range(n_win + 1)]
    lp_windows = [_window(s, edges[i], edges[i + 1], LP_TASKS, "missed", "admitted") for i in range(n_win)]
    rej_windows = [_window(s, edges[i], edges[i + 1], LP_TASKS, "rejected", "released") for i in range(n_win)]
    in_flight = [int(x.diag.get("in_flight_jobs", 0)) for x in s if x.diag]
    outstanding = [int(x.diag.get("outstanding_stages", 0)) for x in s if x.diag]
    hp_ids = {t: [j for j, _, _ in h.hp_results[t]] for t in HP_TASKS}
    return {
        "samples": [{"t": round(x.t, 2), "rss_kb": x.rss_kb, "in_flight_jobs": x.diag.get("in_flight_jobs"),
                     "outstanding_stages": x.diag.get("outstanding_stages")} for x in s],
        "rss_kb_first": s[0].rss_kb if s else None, "rss_kb_last": s[-1].rss_kb if s else None,
        "rss_slope_kb_per_min": round(slope_kb_s * 60, 2), "rss_slope_from_s": warmup,
        "tasks": final,
        "hp_missed": sum(final[t]["missed"] for t in HP_TASKS),
        "hp_completed": sum(final[t]["completed"] for t in HP_TASKS),
        "hp_rejected": sum(final[t]["rejected"] for t in HP_TASKS),
        "hp_results_unique": all(len(v) == len(set(v)) for v in hp_ids.values()),
        "hp_results_received": {t: len(v) for t, v in hp_ids.items()},
        "lp_rejected": sum(final[t]["rejected"] for t in LP_TASKS),
        "lp_released": sum(final[t]["released"] for t in LP_TASKS),
        "lp_miss_rate_windows": lp_windows, "lp_rejection_rate_windows": rej_windows,
        "max_in_flight_jobs": max(in_flight, default=0), "max_outstanding_stages": max(outstanding, default=0),
        "worker_faults": int(diag.get("worker_faults", 0)),
        "worker_stages_retried": int(diag.get("worker_stages_retried", 0)),
        "worker_last_recovery_ms": float(diag.get("worker_last_recovery_ms", -1)),
        "scheduler_diag_warn_messages": sorted({m for _, lvl, m in levels if lvl}),
        "lp_diag_messages": sorted({_generic(m) for t in LP_TASKS for m in h.task_messages.get(t, ())}),
        "hp_diag_messages": sorted({_generic(m) for t in HP_TASKS for m in h.task_messages.get(t, ())}),
    }


def _generic(message: str) -> str:
    """A diagnostic message with its numbers and topic taken out (to list the kinds seen)."""
    return " ".join("N" if w.replace(".", "").replace("%", "").isdigit() else w for w in message.split()
                    if not w.startswith("/"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of cameras (default 600)")
    ap.add_argument("--load", type=float, default=1.0, help="offered load x N_p (3.0 = 300 %%)")
    ap.add_argument("--kill-every", type=float, default=0.0, help="kill a worker every S seconds (0: none)")
    ap.add_argument("--stats-period", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the RSS slope")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    from ament_index_python.packages import get_package_prefix

    prefix = Path(get_package_prefix("daris_ros"))
    kills = tuple(a.kill_every * (i + 1) + 5.0 for i in range(int(a.duration // a.kill_every))) \
        if a.kill_every > 0 else ()
    with tempfile.TemporaryDirectory() as d:
        res = run_scenario(prefix, Path(d), duration=a.duration, load=a.load, kills=kills,
                           stats_period=a.stats_period, warmup=a.warmup)
    summary = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(summary, indent=1, sort_keys=True, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
