"""use_sim_time: release timers and every time in InferenceResult follow /clock, not the wall clock."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = """
/**/daris_scheduler:
  ros__parameters:
    backend: cpu
    n_contexts: 1
    stats_period: 0.5
    profile_runs: 1
    feasibility: warn  # a one-run profile on CI's loaded CPU can be far too slow (test_feasibility.py covers refusal)
    task_names: [cam]
    tasks:
      cam: {topic: /simtime/image_raw, priority: HP, rate: 5.0, model: resnet18, input_size: [32, 32],
            qos_reliability: reliable, qos_depth: 5}
"""

SIM_START = 1000.0  # seconds on the simulated clock
SPEED = 2.0  # simulated seconds per wall second


def _t(sec: float) -> Time:
    ns = int(sec * 1e9)
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def test_releases_and_result_times_follow_clock(install_prefix, tmp_path):
    from daris_ros.msg import InferenceResult

    params = tmp_path / "p.yaml"
    params.write_text(PARAMS)
    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    proc = subprocess.Popen([str(exe), "--ros-args", "-p", "use_sim_time:=true", "--params-file", str(params)],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = Node("simtime_harness")
    clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    img_pub = node.create_publisher(Image, "/simtime/image_raw", 10)
    results: list[tuple[float, InferenceResult]] = []
    node.create_subscription(InferenceResult, "/daris/cam/result", lambda m: results.append((time.monotonic(), m)), 50)
    wall0 = time.monotonic()
    sim_now = {"t": SIM_START}

    def tick() -> None:  # /clock at 200 Hz of wall time, SPEED x faster; a camera frame every 50 ms sim
        sim = SIM_START + (time.monotonic() - wall0) * SPEED
        clock_pub.publish(Clock(clock=_t(sim)))
        if sim - sim_now["t"] >= 0.05:
            sim_now["t"] = sim
            m = Image(height=32, width=32, encoding="mono8", step=32)
            m.header.stamp = _t(sim)
            m.data = np.zeros(32 * 32, np.uint8).tobytes()
            img_pub.publish(m)

    node.create_timer(0.005, tick)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        t0 = time.monotonic()
        while len(results) < 25:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() - t0 < 90, f"{len(results)} results"
            time.sleep(0.1)
    finally:
        proc.send_signal(2)
        out = proc.communicate(timeout=30)[0]
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, out
    msgs = [m for _, m in results[5:]]  # skip the start-up transient
    sec = [m.release_time.sec + m.release_time.nanosec * 1e-9 for m in msgs]
    # times are on the simulated timeline (around SIM_START), not the wall clock (~1.8e9)
    assert all(SIM_START <= s < SIM_START + 600 for s in sec)
    for m in msgs:
        stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        assert SIM_START <= stamp <= sec[-1] + 1.0
    # releases follow the simulated 5 Hz: 0.2 s apart on /clock (0.1 s of wall time at SPEED = 2). A job the
    # scheduler rejects or a late timer callback on a loaded machine leaves a gap of 0.4 s or more, so count
    # the single-period gaps: wall-clock timers (5 Hz of wall time) would give none shorter than 0.4 s of /clock
    sim_gaps = np.diff(sec)
    single = np.abs(sim_gaps - 0.2) < 0.07
    assert single.mean() >= 0.3, np.round(sim_gaps, 3).tolist()
    assert sim_gaps.min() > 0.1, np.round(sim_gaps, 3).tolist()
    # the rest of the times are anchored at the release and keep their order on the /clock timeline
    for m in msgs:
        rel, fin, dl = (t.sec + t.nanosec * 1e-9 for t in (m.release_time, m.finish_time, m.deadline))
        assert rel <= fin and dl == pytest.approx(rel + 0.2, abs=1e-6)
