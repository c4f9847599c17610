"""Shared pieces of the ROS tests: a scheduler process from the install space, synthetic mono8 cameras on a
timer, and an executor spinning a harness node in a thread (stopped before the node is destroyed)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping, Sequence
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


class Spinner:
    """Spin ``node`` in a thread; ``stop()`` shuts the executor down and joins the thread."""

    def __init__(self, node: Node) -> None:
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.executor.shutdown()
        self.thread.join(5.0)
