"""Scale-out: two scheduler nodes (namespaces gpu0 and gpu1, one device each; here both on the CPU) share
four cameras by configuration over DDS. Each node serves exactly its own tasks."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CONFIG = """
/**/daris_scheduler:
  ros__parameters:
    backend: cpu
    n_contexts: 1
    stats_period: 0.5
    profile_runs: 1
    task_names: [{a}, {b}]
    tasks:
      {a}: {{topic: /shared/{a}/image_raw, priority: HP, rate: 4.0, model: resnet18, input_size: [32, 32]}}
      {b}: {{topic: /shared/{b}/image_raw, priority: LP, rate: 4.0, model: resnet18, input_size: [32, 32]}}
"""


def test_two_nodes_split_cameras(install_prefix, tmp_path):
    from daris_ros.msg import InferenceResult

    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    split = {"gpu0": ("front", "rear"), "gpu1": ("left", "right")}
    procs = []
    for ns, (a, b) in split.items():
        f = tmp_path / f"{ns}.yaml"
        f.write_text(CONFIG.format(a=a, b=b))
        procs.append(subprocess.Popen([str(exe), "--ros-args", "-r", f"__ns:=/{ns}", "--params-file", str(f)],
                                      start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    rclpy.init()
    node = Node("scale_out_harness")
    got: dict[str, list] = {}
    diags: list[DiagnosticArray] = []
    for names in split.values():
        for other_ns in split:
            for cam in names:
                topic = f"/{other_ns}/daris/{cam}/result"
                node.create_subscription(InferenceResult, topic, lambda m, t=topic: got.setdefault(t, []).append(m), 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    pubs = [node.create_publisher(Image, f"/shared/{c}/image_raw", qos_profile_sensor_data)
            for names in split.values() for c in names]

    def tick() -> None:
        m = Image(height=32, width=32, encoding="mono8", step=32)
        m.header.stamp = node.get_clock().now().to_msg()
        m.data = np.zeros(32 * 32, np.uint8).tobytes()
        for p in pubs:
            p.publish(m)

    node.create_timer(0.05, tick)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        t0 = time.monotonic()
        while sum(len(v) >= 5 for v in got.values()) < 4:
            for p in procs:
                assert p.poll() is None, p.stdout.read()
            if time.monotonic() - t0 > 90:
                for p in procs:
                    p.send_signal(2)
                raise AssertionError(f"results so far: { {k: len(v) for k, v in got.items()} }\n"
                                     + "\n".join(p.communicate(timeout=30)[0] for p in procs))
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(2)
        outs = [p.communicate(timeout=30)[0] for p in procs]
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    assert [p.returncode for p in procs] == [0, 0], outs
    # each camera is served by its own node only
    assert set(got) == {f"/{ns}/daris/{c}/result" for ns, names in split.items() for c in names}
    names = {s.name for d in diags for s in d.status}
    assert {"/gpu0/daris_scheduler: scheduler", "/gpu1/daris_scheduler: scheduler"} <= names
    assert "/gpu0/daris_scheduler: task front" in names and "/gpu1/daris_scheduler: task left" in names
