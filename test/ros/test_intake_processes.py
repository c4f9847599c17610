"""``intake_processes`` over real DDS: the scheduler node's camera frames are taken and checked by processes of their
own (daris_ros/ros/intake_process.py) and reach the engine through pipes. Every frame is accounted for (released,
superseded, dropped by reason, pending), a malformed frame is dropped with the reason the node's own checks give,
results carry the source stamps, a child that dies is started again and frames flow on, and no child outlives the
node."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for
from sensor_msgs.msg import CompressedImage

NODE_PARAMS = """
daris_scheduler:
  ros__parameters:
    policy: STR
    backend: cpu
    n_contexts: 1
    n_streams: 1
    stats_period: 0.3
    profile_runs: 2
    feasibility: warn
    intake_processes: 2
    task_names: [cam0, cam1, cam2]
    tasks:
      cam0: {topic: /intake_proc/cam0/image_raw, priority: HP, rate: 5.0, model: resnet18, input_size: [32, 32]}
      cam1: {topic: /intake_proc/cam1/image_raw, priority: LP, rate: 5.0, model: resnet18, input_size: [32, 32]}
      cam2: {topic: /intake_proc/cam2/compressed, input_type: compressed, priority: LP, rate: 5.0,
             model: resnet18, input_size: [32, 32], qos_reliability: reliable, qos_depth: 20}
"""
TRUNCATED = 7  # truncated JPEGs sent on cam2


WAIT_S = 60.0  # (child processes start with the node: generous on a loaded machine)


def intake_children(name_prefix: str = "daris_scheduler_intake_") -> dict[str, int]:
    """Running intake processes: their node name -> pid (from /proc)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daris_ros.ros.intake_process" in args and b"--name" in args:
            name = args[args.index(b"--name") + 1].decode()
            if name.startswith(name_prefix):
                found[name] = int(entry.name)
    return found


def truncated_jpeg() -> bytes:
    from io import BytesIO

    from PIL import Image as PILImage

    out = BytesIO()
    PILImage.new("RGB", (32, 32), (200, 10, 10)).save(out, format="JPEG")
    return out.getvalue()[:-2]  # no EOI


def test_the_node_with_intake_processes_accounts_every_frame_and_restarts_a_dead_child(install_prefix,
                                                                                       tmp_path) -> None:
    from ros_helpers import Spinner, mono8_cameras, start_scheduler, stop_scheduler, wait_until_running

    from daris_ros.msg import InferenceResult, SchedulerStats

    params = tmp_path / "params.yaml"
    params.write_text(NODE_PARAMS)
    proc = start_scheduler(install_prefix, params)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("intake_proc_harness", context=context)
    results: dict[str, list] = {"cam0": [], "cam1": []}
    stats: list = []
    for cam in results:
        node.create_subscription(InferenceResult, f"/daris/{cam}/result", results[cam].append, 100)
    node.create_subscription(SchedulerStats, "/daris/stats", stats.append, 50)
    bad = node.create_publisher(CompressedImage, "/intake_proc/cam2/compressed",
                                QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    spinner = Spinner(node)
    out = ""
    children_before: dict[str, int] = {}
    try:
        wait_until_running(proc, lambda: bool(stats))
        assert wait_for(lambda: len(intake_children()) == 2, WAIT_S), intake_children()
        children_before = intake_children()
        assert wait_for(lambda: bad.get_subscription_count() == 1, WAIT_S)
        mono8_cameras(node, ["/intake_proc/cam0/image_raw", "/intake_proc/cam1/image_raw"], 0.05)
        assert wait_for(lambda: all(len(r) >= 5 for r in results.values()), WAIT_S), \
            {cam: len(r) for cam, r in results.items()}
        data = truncated_jpeg()
        for _ in range(TRUNCATED):
            msg = CompressedImage(format="jpeg", data=data)
            msg.header.stamp = node.get_clock().now().to_msg()
            bad.publish(msg)
            time.sleep(0.02)

        def dropped(task: str, reason: str) -> int:
            for t in stats[-1].tasks if stats else ():
                if t.task == task:
                    counts = dict(zip(t.drop_reasons, t.drop_counts, strict=True))
                    return int(counts.get(reason, 0))
            return 0

        assert wait_for(lambda: dropped("cam2", "truncated_compressed") == TRUNCATED, WAIT_S), \
            [(t.frames, t.drop_reasons, t.drop_counts) for t in stats[-1].tasks if t.task == "cam2"]
        assert all(r.header.stamp.sec > 0 for rs in results.values() for r in rs)  # the source stamps

        # a child killed: started again with its subscriptions, frames flow on
        victim_name, victim_pid = sorted(children_before.items())[0]
        os.kill(victim_pid, signal.SIGKILL)
        assert wait_for(lambda: intake_children().get(victim_name, victim_pid) != victim_pid, WAIT_S), \
            intake_children()
        counts = {cam: len(r) for cam, r in results.items()}
        assert wait_for(lambda: all(len(results[cam]) >= counts[cam] + 5 for cam in counts), WAIT_S), \
            ({cam: len(r) for cam, r in results.items()}, counts)

        stats_seen = len(stats)
        assert wait_for(lambda: len(stats) > stats_seen + 1, WAIT_S)
        for t in stats[-1].tasks:  # the accounting holds through the restart
            released = t.frames - t.superseded - t.dropped - t.pending
            assert released >= 0, t
            assert t.dropped == sum(t.drop_counts), t
        frames = {t.task: t.frames for t in stats[-1].tasks}
        assert frames["cam0"] >= 10 and frames["cam1"] >= 10 and frames["cam2"] == TRUNCATED, frames
    finally:
        out = stop_scheduler(proc)
        spinner.stop()
        node.destroy_node()
        context.try_shutdown()
    assert proc.returncode == 0, out
    assert "camera frames are taken by 2 process(es)" in out, out
    assert "stopped with exit code -9; starting it again" in out, out
    assert wait_for(lambda: not intake_children(), timeout=10.0), intake_children()  # none outlives the node
