"""Shared pieces of the ROS tests (and of scripts/two_gpu_run.py): a scheduler process from the install space,
synthetic cameras on a timer (mono8 black frames, or rgb8 test pictures), and an executor spinning a harness
node in a thread (stopped before the node is destroyed). Needs rclpy, sensor_msgs and numpy only."""

from __future__ import annotations

import array
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def start_scheduler(install_prefix: Path, params: Path, *, args: Sequence[str] = (),
                    env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``lib/daris_ros/scheduler_node --ros-args [args] --params-file params`` in its own session."""
    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    return subprocess.Popen([str(exe), "--ros-args", *args, "--params-file", str(params)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_running(proc: subprocess.Popen[str], running: Callable[[], bool], timeout: float = 120.0,
                       what: str = "scheduler not ready") -> None:
    """Poll ``running()`` until true; fail with the scheduler's output if it exits first, or after ``timeout`` s."""
    t0 = time.monotonic()
    while not running():
        assert proc.poll() is None, f"scheduler exited early:\n{proc.stdout.read() if proc.stdout else ''}"
        assert time.monotonic() - t0 < timeout, f"{what} within {timeout:g} s"
        time.sleep(0.2)


def stop_scheduler(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """SIGINT the scheduler (killed after ``timeout`` s); returns its output."""
    proc.send_signal(2)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate()`` every 20 ms until it is true (True) or ``timeout`` s passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def mono8_cameras(node: Node, topics: Sequence[str], period: float, size: int = 32) -> None:
    """Publish a black ``size`` x ``size`` mono8 frame, stamped now, on every topic each ``period`` s
    (sensor-data QoS)."""
    pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in topics]
    data = np.zeros(size * size, np.uint8).tobytes()

    def tick() -> None:
        m = Image(height=size, width=size, encoding="mono8", step=size)
        m.header.stamp = node.get_clock().now().to_msg()
        m.data = data
        for p in pubs:
            p.publish(m)

    node.create_timer(period, tick)


def rgb8_cameras(node: Node, topics: Sequence[str], period: float, width: int, height: int,
                 frames: int = 8) -> dict[str, int]:
    """Publish ``width`` x ``height`` rgb8 test pictures (per camera a colour gradient with a bar that moves
    over ``frames`` pre-built messages), stamped now, on every topic each ``period`` s (sensor-data QoS).
    Returns the live count of published frames per topic."""
    published = dict.fromkeys(topics, 0)
    cams = []
    x = np.arange(width, dtype=np.int64) * 255 // max(1, width - 1)
    y = np.arange(height, dtype=np.int64) * 255 // max(1, height - 1)
    for i, topic in enumerate(topics):
        base = np.empty((height, width, 3), np.uint8)
        base[..., 0] = x.astype(np.uint8)
        base[..., 1] = y.astype(np.uint8)[:, None]
        base[..., 2] = (37 * i) % 256
        msgs = []
        for k in range(frames):
            img = base.copy()
            c0 = k * width // frames
            img[:, c0:c0 + max(1, width // 16)] = 255
            msgs.append(Image(height=height, width=width, encoding="rgb8", step=3 * width,
                              data=array.array("B", img.tobytes())))
        cams.append((topic, node.create_publisher(Image, topic, qos_profile_sensor_data), msgs))
    tick_count = [0]

    def tick() -> None:
        stamp = node.get_clock().now().to_msg()
        k = tick_count[0] % frames
        for topic, pub, msgs in cams:
            m = msgs[k]
            m.header.stamp = stamp
            pub.publish(m)
            published[topic] += 1
        tick_count[0] += 1

    node.create_timer(period, tick)
    return published


class Spinner:
    """Spin ``node`` in a thread; ``stop()`` shuts the executor down and joins the thread."""

    def __init__(self, node: Node) -> None:
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.executor.shutdown()
        self.thread.join(5.0)
