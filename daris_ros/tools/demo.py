"""Self-contained demo: synthetic cameras -> the scheduler node (from the install space) -> a summary.

    daris-demo [--config FILE] [--duration SECONDS] [--width W --height H] [--camera-rate HZ] [--json OUT]

It starts ``lib/daris_ros/scheduler_node`` as its own process with the parameter file, publishes one
synthetic camera per task in this process, collects every InferenceResult, SchedulerStats and
/diagnostics message for ``--duration`` seconds after the node reports ready, stops the node with
SIGINT and prints a per-task table, the per-frame overhead of the ROS path and the promise: every HP
job meets its deadline.

Exit codes: 0 the promise was kept (no HP job missed its deadline or was skipped), 1 the demo could not
run (the node did not start or no result came), 3 an HP job missed its deadline or was skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from daris_ros.msg import InferenceResult, SchedulerStats
from daris_ros.ros.camera_publisher_node import CameraPublisherNode
from daris_ros.settings import SchedulerSettings, load_parameter_file, settings_from_mapping

EXIT_OK = 0
EXIT_FAILED = 1  # the node did not start, or no result came
EXIT_HP_MISSED = 3  # the promise is broken: an HP job missed its deadline or was skipped


def _sec(t: Any) -> float:
    return t.sec + t.nanosec * 1e-9


@dataclass(slots=True)
class ResultSample:
    job_id: int
    response: float
    exec_time: float
    met: bool
    stamp: float
    e2e: float  # result received here - frame received by the node
    sampling_wait: float  # release - frame received (periodic release)
    node_internal: float  # finish - release - exec (preprocess, queueing, dispatch)
    delivery: float  # result received here - finish (post-process, message, publish, DDS)


@dataclass(slots=True)
class Collected:
    results: dict[str, list[ResultSample]] = field(default_factory=dict)
    stats: Any = None
    diagnostics: Any = None
    ready: threading.Event = field(default_factory=threading.Event)


class Collector(Node):
    """Subscribes to every result topic, the stats topic and /diagnostics."""

    def __init__(self, settings: SchedulerSettings, namespace: str = "") -> None:
        super().__init__("daris_demo_collector")
        self.data = Collected()
        self.recording = False
        for t in settings.tasks:
            topic = t.output_topic if t.output_topic.startswith("/") else f"{namespace}/{t.output_topic}"
            self.data.results[t.name] = []
            self.create_subscription(InferenceResult, topic, self._on_result, 100)
        self.create_subscription(SchedulerStats, f"{namespace}/daris/stats", self._on_stats, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_result(self, m: InferenceResult) -> None:
        if not self.recording:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        recv, rel, fin = _sec(m.receive_time), _sec(m.release_time), _sec(m.finish_time)
        self.data.results[m.task].append(ResultSample(
            job_id=m.job_id, response=m.response_time, exec_time=m.exec_time, met=m.met,
            stamp=_sec(m.header.stamp), e2e=now - recv, sampling_wait=rel - recv,
            node_internal=fin - rel - m.exec_time, delivery=now - fin))

    def _on_stats(self, m: SchedulerStats) -> None:
        self.data.stats = m
        self.data.ready.set()

    def _on_diag(self, m: DiagnosticArray) -> None:
        self.data.diagnostics = m


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summarize(settings: SchedulerSettings, data: Collected, duration: float,
              published: dict[str, int] | None = None) -> dict[str, Any]:
    stats = {t.task: t for t in data.stats.tasks} if data.stats is not None else {}
    rows: list[dict[str, Any]] = []
    for t in settings.tasks:
        res = data.results[t.name]
        resp = [r.response for r in res]
        st = stats.get(t.name)
        rows.append({
            "task": t.name, "priority": t.priority, "rate_hz": t.rate, "model": t.model,
            "deadline_ms": t.deadline * 1e3,
            "completed": len(res), "jps": len(res) / duration if duration > 0 else 0.0,
            "missed": sum(1 for r in res if not r.met),
            "miss_rate": (sum(1 for r in res if not r.met) / len(res)) if res else 0.0,
            "p50_ms": _pct(resp, 50) * 1e3, "p99_ms": _pct(resp, 99) * 1e3,
            "published": (published or {}).get(t.name, 0), "frames": int(st.frames) if st else 0,
            "released": int(st.released) if st else 0, "rejected": int(st.rejected) if st else 0,
            "stale": int(st.stale) if st else 0, "dropped": int(st.dropped) if st else 0,
            # skip_late: admitted, never started (overload), no result: a lost deadline the results cannot show
            "skipped": int(st.skipped) if st else 0,
            "node_completed": int(st.completed) if st else 0, "node_missed": int(st.missed) if st else 0,
        })
    samples = [r for res in data.results.values() for r in res]
    overhead = [r.e2e - r.sampling_wait - r.exec_time for r in samples]
    out = {
        "duration_s": duration,
        "tasks": rows,
        "total_jps": sum(r["jps"] for r in rows),
        "ros_path": {
            "frames": len(samples),
            "overhead_mean_ms": (sum(overhead) / len(overhead) * 1e3) if overhead else math.nan,
            "overhead_p50_ms": _pct(overhead, 50) * 1e3,
            "overhead_p99_ms": _pct(overhead, 99) * 1e3,
            "inference_mean_ms": (sum(r.exec_time for r in samples) / len(samples) * 1e3) if samples
            else math.nan,
            "sampling_wait_mean_ms": (sum(r.sampling_wait for r in samples) / len(samples) * 1e3) if samples
            else math.nan,
            "node_internal_mean_ms": (sum(r.node_internal for r in samples) / len(samples) * 1e3) if samples
            else math.nan,
            "delivery_mean_ms": (sum(r.delivery for r in samples) / len(samples) * 1e3) if samples
            else math.nan,
        },
    }
    out["promise"] = promise(out)
    return out


def promise(summary: dict[str, Any]) -> dict[str, Any]:
    """The demo's promise, from the results received in the window and the node's own counters since it
    started (which also cover the jobs before and after the window): no HP job misses its deadline or is
    skipped. LP jobs may be rejected by admission control or miss; their rates are reported."""
    hp = [r for r in summary["tasks"] if r["priority"] == "HP"]
    lp = [r for r in summary["tasks"] if r["priority"] != "HP"]
    hp_missed = sum(r["missed"] for r in hp)
    hp_node_missed = sum(r["node_missed"] for r in hp)
    hp_skipped = sum(r["skipped"] for r in hp)
    lp_released = sum(r["released"] for r in lp)
    lp_done = sum(r["completed"] for r in lp)
    return {
        "hp_jobs": sum(r["completed"] for r in hp), "hp_missed": hp_missed, "hp_skipped": hp_skipped,
        "hp_node_completed": sum(r["node_completed"] for r in hp), "hp_node_missed": hp_node_missed,
        "hp_worst_p99_ms": max((r["p99_ms"] for r in hp if r["completed"]), default=math.nan),
        "hp_worst_p99_share": max((r["p99_ms"] / r["deadline_ms"] for r in hp if r["completed"]),
                                  default=math.nan),
        "lp_jobs": lp_done, "lp_missed": sum(r["missed"] for r in lp),
        "lp_released": lp_released, "lp_rejected": sum(r["rejected"] for r in lp),
        "lp_skipped": sum(r["skipped"] for r in lp),
        "kept": hp_missed == 0 and hp_node_missed == 0 and hp_skipped == 0,
    }


def format_promise(summary: dict[str, Any]) -> str:
    p = summary.get("promise") or promise(summary)
    hp = [r for r in summary["tasks"] if r["priority"] == "HP"]
    per_task = ", ".join(f"{r['task']} p99 {r['p99_ms']:.1f} ms of {r['deadline_ms']:.0f} ms" for r in hp)
    lp_miss = p["lp_missed"] / p["lp_jobs"] if p["lp_jobs"] else 0.0
    lp_rej = p["lp_rejected"] / p["lp_released"] if p["lp_released"] else 0.0
    lines = [
        f"HP: {p['hp_jobs']} jobs in the window, {p['hp_missed']} missed, {p['hp_skipped']} skipped "
        f"(node since start: {p['hp_node_completed']} done, {p['hp_node_missed']} missed) "
        "(promise: 0 HP deadline misses)",
        f"HP margin: {per_task} (worst p99 = {p['hp_worst_p99_share'] * 100:.0f}% of the deadline)",
        f"LP: {p['lp_jobs']} jobs, miss rate {lp_miss * 100:.1f}%, rejected {p['lp_rejected']} of "
        f"{p['lp_released']} releases ({lp_rej * 100:.1f}%), skipped {p['lp_skipped']} "
        "(LP jobs may be rejected by admission control: no promise)",
    ]
    if p["kept"]:
        lines.append("RESULT: promise kept: no HP job missed its deadline")
    else:
        lines.append("RESULT: PROMISE BROKEN: HP deadline misses (see the table); exit code 3")
    return "\n".join(lines)


def exit_code(summary: dict[str, Any]) -> int:
    if not any(r["completed"] for r in summary["tasks"]):
        return EXIT_FAILED
    return EXIT_OK if (summary.get("promise") or promise(summary))["kept"] else EXIT_HP_MISSED


def format_table(summary: dict[str, Any]) -> str:
    hdr = (f"{'task':<14}{'prio':<5}{'rate':>6}{'sent':>6}{'recv':>6}{'released':>9}{'done':>6}{'JPS':>7}{'missed':>7}"
           f"{'miss%':>7}{'p50 ms':>8}{'p99 ms':>8}{'rejected':>9}{'skipped':>8}{'stale':>6}")
    lines = [hdr, "-" * len(hdr)]
    for r in summary["tasks"]:
        lines.append(f"{r['task']:<14}{r['priority']:<5}{r['rate_hz']:>6.1f}{r['published']:>6}{r['frames']:>6}"
                     f"{r['released']:>9}"
                     f"{r['completed']:>6}{r['jps']:>7.1f}{r['missed']:>7}{r['miss_rate'] * 100:>7.1f}"
                     f"{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['rejected']:>9}{r['skipped']:>8}{r['stale']:>6}")
    p = summary["ros_path"]
    lines += [
        "-" * len(hdr),
        f"total {summary['total_jps']:.1f} jobs/s over {summary['duration_s']:.0f} s "
        "(sent/recv: camera frames published / received by the node since start, sensor-data QoS)",
        f"ROS path overhead per frame (frame received -> result received, minus inference and the wait for "
        f"the periodic release): mean {p['overhead_mean_ms']:.2f} ms, p50 {p['overhead_p50_ms']:.2f} ms, "
        f"p99 {p['overhead_p99_ms']:.2f} ms over {p['frames']} frames",
        f"  split: in the node (conversion, preprocessing, queueing, dispatch) {p['node_internal_mean_ms']:.2f} ms"
        f" + result message, publish and DDS delivery {p['delivery_mean_ms']:.2f} ms;"
        f" pure inference {p['inference_mean_ms']:.2f} ms, release wait {p['sampling_wait_mean_ms']:.2f} ms",
    ]
    return "\n".join(lines)


def use_large_frame_transport() -> None:
    """Unless Fast DDS is configured already, use the package's profile for camera-sized messages in this
    process and in the scheduler node it starts (inherited environment): with the default 512 KB
    shared-memory segment, best-effort 640x480 frames between processes are almost all lost."""
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_BUILTIN_TRANSPORTS"):
        return
    from ament_index_python.packages import get_package_share_directory

    profile = os.path.join(get_package_share_directory("daris_ros"), "config", "fastdds_large_frames.xml")
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    print(f"[demo] FASTDDS_DEFAULT_PROFILES_FILE={profile}", flush=True)


def _default_config() -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory("daris_ros"), "config", "demo.yaml")


def scheduler_executable() -> str:
    from ament_index_python.packages import get_package_prefix

    return os.path.join(get_package_prefix("daris_ros"), "lib", "daris_ros", "scheduler_node")


def start_scheduler(config: str, extra_args: list[str] | None = None, stdout: Any = None) -> subprocess.Popen:
    """The scheduler node from the install space, as its own process (its own session).

    ``extra_args`` go after ``--ros-args``; ``stdout`` (a file) takes its output and errors, else they
    go to this process's terminal."""
    cmd = [scheduler_executable(), "--ros-args", "--params-file", config, *(extra_args or [])]
    return subprocess.Popen(cmd, start_new_session=True, stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run_demo(config: str, duration: float, width: int, height: int, camera_rate: float | None,
             ready_timeout: float = 180.0) -> dict[str, Any]:
    settings = settings_from_mapping(load_parameter_file(config))
    proc = start_scheduler(config)
    executor = MultiThreadedExecutor(num_threads=4)
    nodes: list[Node] = []
    cameras: dict[str, CameraPublisherNode] = {}
    spin: threading.Thread | None = None
    try:
        collector = Collector(settings)
        nodes.append(collector)
        for i, t in enumerate(settings.tasks):
            cameras[t.name] = CameraPublisherNode(f"demo_camera_{t.name}", topic=t.topic,
                                                  rate=camera_rate or t.rate, width=width,
                                                  height=height, encoding="rgb8", camera=i)
            nodes.append(cameras[t.name])
        for n in nodes:
            executor.add_node(n)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        t0 = time.monotonic()
        while not collector.data.ready.wait(0.5):
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler node exited with code {proc.returncode} before it was ready")
            if time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"scheduler node not ready after {ready_timeout:.0f} s")
        print(f"[demo] scheduler ready after {time.monotonic() - t0:.1f} s; running for {duration:.0f} s",
              flush=True)
        collector.recording = True
        t_start = time.monotonic()
        time.sleep(duration)
        collector.recording = False
        measured = time.monotonic() - t_start
        time.sleep(1.2)  # one more stats period
        return summarize(settings, collector.data, measured, {n: c.published for n, c in cameras.items()})
    finally:
        stop_process(proc)
        executor.shutdown()
        if spin is not None:
            spin.join(timeout=5.0)  # leave rcl before the nodes and the context go away
        for n in nodes:
            n.destroy_node()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-demo", description=__doc__.split("\n\n")[0],
                                 epilog="Exit codes: 0 no HP deadline missed, 1 the demo could not run, "
                                        "3 an HP job missed its deadline or was skipped.")
    ap.add_argument("--config", default=None, help="parameter file (default: share/daris_ros/config/demo.yaml)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measurement (default 30)")
    ap.add_argument("--width", type=int, default=320, help="camera frame width (default 320)")
    ap.add_argument("--height", type=int, default=240, help="camera frame height (default 240)")
    ap.add_argument("--camera-rate", type=float, default=None,
                    help="camera frame rate in Hz (default: each camera at its task's rate)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    return ap


def main(argv: list[str] | None = None) -> int:
    ns, ros_args = build_parser().parse_known_args(argv)
    use_large_frame_transport()
    rclpy.init(args=ros_args)
    try:
        summary = run_demo(ns.config or _default_config(), ns.duration, ns.width, ns.height, ns.camera_rate)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    except RuntimeError as exc:
        print(f"[demo] error: {exc}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    print(format_table(summary))
    print(format_promise(summary))
    if ns.json:
        ns.json.write_text(json.dumps(summary, indent=2, default=lambda o: asdict(o)))
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
