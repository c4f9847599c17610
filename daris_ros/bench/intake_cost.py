"""What taking one camera frame costs the node's process: rclpy's executor against the intake thread.

    scripts/run_in_install.sh python3 -m daris_ros.bench.intake_cost --cameras 48 --out DIR

A child process publishes ``--cameras`` CompressedImage topics (``--kb`` KB each) at ``--rate`` Hz, best effort.
This process subscribes to all of them, raw, on one node that also has ``--publishers-per-camera`` publishers per
camera (the scheduler node has a result, a detections-or-mask and a labels publisher per task; each publisher
comes with an event handler the executor walks at every wake) and one timer, and takes the frames either with a
``SingleThreadedExecutor`` (``executor``) or with :class:`~daris_ros.ros.intake.FrameIntake` while the executor
spins the rest of the node (``intake``). Per variant, over ``--seconds``: frames taken per second; this process's
CPU time per frame (user + system, all threads but the measuring one: DDS's receive threads included); the CPU
time per frame of the Python threads that take them (the executor's, with ``intake`` also the intake's; native
waiting included); and the share of pure-Python work a measuring thread still gets done against the same thread
alone in the process: what taking the frames leaves of the interpreter (the GIL) to a thread like the engine's
loop.

Writes ``intake_cost.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from daris_ros.bench.variant_runs import parse_variants, record_run

VARIANTS = ("executor", "intake")


def publish(cameras: int, rate: float, kb: int, seconds: float) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    rclpy.init()
    node = rclpy.create_node("intake_cost_cameras")
    pubs = [node.create_publisher(CompressedImage, f"/intake_cost/cam{i}", qos_profile_sensor_data)
            for i in range(cameras)]
    msg = CompressedImage(format="jpeg", data=bytes(kb * 1024))
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        for pub in pubs:
            pub.publish(msg)
        k += 1
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
    rclpy.shutdown()


def thread_cpu(native_ids: list[int]) -> float:
    """CPU seconds (user + system) of the threads ``native_ids`` of this process (Linux /proc; 0 elsewhere)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for tid in native_ids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)
    return total


class PythonWork:
    """A thread that does pure-Python work in small chunks and counts them: the interpreter time left to a thread
    like the engine's loop while the frames are taken (every thread that holds the GIL takes from it)."""

    def __init__(self) -> None:
        self.chunks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="python-work", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for i in range(2000):
                total += i * i
            self.chunks += 1

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def python_baseline(seconds: float) -> float:
    """Chunks per second of :class:`PythonWork` with nothing else running in this process."""
    work = PythonWork()
    time.sleep(0.5)
    start = work.chunks
    time.sleep(seconds)
    rate = (work.chunks - start) / seconds
    work.stop()
    return rate


def measure(variant: str, args: argparse.Namespace, baseline: float) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from daris_ros.msg import InferenceResult
    from daris_ros.ros.intake import FrameIntake

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"intake_cost_{variant}", context=context)
    count = [0]

    def on_frame(_raw: Any) -> None:
        count[0] += 1

    for i in range(args.cameras):
        for j in range(args.publishers_per_camera):
            node.create_publisher(InferenceResult, f"/intake_cost/out{i}_{j}", 10)
    node.create_timer(0.1, lambda: None)
    intake = FrameIntake(node) if variant == "intake" else None
    for i in range(args.cameras):
        topic = f"/intake_cost/cam{i}"
        if intake is not None:
            intake.subscribe(CompressedImage, topic, on_frame, qos_profile_sensor_data)
        else:
            node.create_subscription(CompressedImage, topic, on_frame, qos_profile_sensor_data, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    work = PythonWork()
    cameras = subprocess.Popen([sys.executable, "-m", "daris_ros.bench.intake_cost", "--publish",
                                "--cameras", str(args.cameras), "--rate", str(args.rate), "--kb", str(args.kb),
                                "--seconds", str(args.seconds + args.warmup + 3)])
    try:
        time.sleep(args.warmup + 2.0)
        turns0 = intake.turns if intake is not None else 0
        python_threads = [t.native_id for t in (spinning, intake._thread if intake is not None else None)
                          if t is not None and t.native_id is not None]
        py0 = thread_cpu(python_threads)
        work_ids = [work.native_id] if work.native_id is not None else []
        work0 = thread_cpu(work_ids)
        frames0, cpu0, wall0, chunks0 = count[0], os.times(), time.monotonic(), work.chunks
        time.sleep(args.seconds)
        frames1, cpu1, wall1, chunks1 = count[0], os.times(), time.monotonic(), work.chunks
        py_cpu = thread_cpu(python_threads) - py0
        work_cpu = thread_cpu(work_ids) - work0
        turns = (intake.turns if intake is not None else 0) - turns0
    finally:
        work.stop()
        cameras.wait(args.seconds + args.warmup + 30)
        if intake is not None:
            intake.close()
        executor.shutdown()
        spinning.join(5.0)
        node.destroy_node()
        context.try_shutdown()
    frames = frames1 - frames0
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) - work_cpu  # (the measuring thread left out)
    wall = wall1 - wall0
    return {"variant": variant, "frames_per_s": round(frames / wall, 1), "cpu_cores": round(cpu / wall, 3),
            "cpu_us_per_frame": round(1e6 * cpu / frames, 1) if frames else None,
            "taking_threads_us_per_frame": round(1e6 * py_cpu / frames, 1) if frames else None,
            "offered_per_s": args.cameras * args.rate,
            "frames_per_wake": round(frames / turns, 2) if turns else None,
            "python_share_left": round((chunks1 - chunks0) / wall / baseline, 3)}


def render_md(doc: dict[str, Any]) -> str:
    lines = [f"# Taking camera frames: executor against intake thread ({doc['date']})", "", "```bash",
             doc["command"], "```", "",
             f"Commit {doc['commit']}, {doc['host']}. {doc['cameras']} cameras at {doc['rate']:g} Hz, "
             f"{doc['kb']} KB frames, {doc['publishers_per_camera']} publisher(s) per camera on the node; CPU: "
             "this process, all threads but the measuring one.", "",
             "| variant | frames/s offered | frames/s taken | CPU cores | CPU us per frame (process) | "
             "CPU us per frame (taking threads) | frames per wake | Python work left to another thread |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        lines.append(f"| {r['variant']} | {r['offered_per_s']:g} | {r['frames_per_s']} | {r['cpu_cores']} | "
                     f"{r['cpu_us_per_frame']} | {r['taking_threads_us_per_frame']} | "
                     f"{r['frames_per_wake'] if r['frames_per_wake'] is not None else ''} | "
                     f"{r['python_share_left']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.bench.intake_cost",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--cameras", type=int, default=48)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--kb", type=int, default=20, help="frame size (KB)")
    p.add_argument("--publishers-per-camera", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--commit", default="")
    p.add_argument("--out", type=Path)
    p.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)  # (the child: the cameras)
    args = p.parse_args(argv)
    if args.publish:
        publish(args.cameras, args.rate, args.kb, args.seconds)
        return 0
    variants = parse_variants(p, args.variants, VARIANTS)
    if args.out is None:
        p.error("--out is required")
    doc: dict[str, Any] = {
        "command": "python -m daris_ros.bench.intake_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": args.commit,
        "host": f"{os.cpu_count()} CPUs", "cameras": args.cameras, "rate": args.rate, "kb": args.kb,
        "publishers_per_camera": args.publishers_per_camera, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    doc["python_chunks_per_s_alone"] = baseline = python_baseline(args.seconds / 2)
    for variant in variants:
        record_run(doc, measure(variant, args, baseline), args.out, "intake_cost", render_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
