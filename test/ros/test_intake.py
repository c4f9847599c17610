"""FrameIntake (daris_ros/ros/intake.py) over real DDS: the camera frames are taken by the intake's thread, never by
the node's executor, which keeps spinning the node; the subscription stays the node's in the ROS graph; after
unsubscribe no frame is handed out and the graph no longer lists it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for
from sensor_msgs.msg import Image

from daris_ros.ros.intake import FrameIntake, intake_supported

RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
FRAMES = 60


@pytest.fixture
def context() -> Iterator[rclpy.Context]:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def test_frames_go_to_the_intake_thread_not_the_executor(context: rclpy.Context) -> None:
    node = rclpy.create_node("intake_under_test", context=context)
    camera = rclpy.create_node("intake_camera", context=context)
    assert intake_supported(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)  # the executor spins the node all along: it must not take the camera frames
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    intake = FrameIntake(node)
    received: list[tuple[bytes, str]] = []
    try:
        sub = intake.subscribe(Image, "/intake_test/image", lambda raw: received.append(
            (raw, threading.current_thread().name)), RELIABLE)
        assert sub not in node.subscriptions  # off the executor's wait set
        names = dict(node.get_subscriber_names_and_types_by_node("intake_under_test", "/"))
        assert "/intake_test/image" in names  # still the node's subscription in the graph
        publisher = camera.create_publisher(Image, "/intake_test/image", RELIABLE)
        assert wait_for(lambda: publisher.get_subscription_count() == 1)
        for i in range(FRAMES):
            publisher.publish(Image(height=1, width=4, encoding="mono8", step=4, data=bytes([i, 1, 2, 3])))
        assert wait_for(lambda: len(received) == FRAMES), f"{len(received)} of {FRAMES} frames"
        assert {thread for _, thread in received} == {"daris-intake"}
        assert all(isinstance(raw, bytes) and bytes([i, 1, 2, 3]) in raw for i, (raw, _) in enumerate(received))

        intake.unsubscribe(sub)
        assert wait_for(lambda: publisher.get_subscription_count() == 0)
        for i in range(5):
            publisher.publish(Image(height=1, width=4, encoding="mono8", step=4, data=bytes([i, 9, 9, 9])))
        time.sleep(0.3)
        assert len(received) == FRAMES  # nothing handed out after unsubscribe
        assert "/intake_test/image" not in dict(node.get_subscriber_names_and_types_by_node("intake_under_test", "/"))
    finally:
        intake.close()
        executor.shutdown()
        spinning.join(5.0)
        camera.destroy_node()
        node.destroy_node()
    assert not intake._thread.is_alive()


def test_close_unsubscribes_every_camera(context: rclpy.Context) -> None:
    node = rclpy.create_node("intake_close", context=context)
    intake = FrameIntake(node)
    for k in range(3):
        intake.subscribe(Image, f"/intake_close/cam{k}", lambda raw: None, RELIABLE)
    assert len(dict(node.get_subscriber_names_and_types_by_node("intake_close", "/"))) >= 3
    intake.close()
    intake.close()  # idempotent
    assert not intake._thread.is_alive()
    left = [t for t in dict(node.get_subscriber_names_and_types_by_node("intake_close", "/")) if "cam" in t]
    assert left == []
    node.destroy_node()


NODE_PARAMS = """
daris_scheduler:
  ros__parameters:
    policy: STR
    backend: cpu
    n_contexts: 1
    n_streams: 1
    stats_period: 0.5
    profile_runs: 2
    feasibility: warn
    intake_thread: true
    task_names: [cam0, cam1]
    tasks:
      cam0: {topic: /intake_node/cam0/image_raw, priority: HP, rate: 5.0, model: resnet18, input_size: [32, 32]}
      cam1: {topic: /intake_node/cam1/image_raw, priority: LP, rate: 5.0, model: resnet18, input_size: [32, 32]}
"""


def test_the_scheduler_node_with_intake_thread_serves_its_cameras(install_prefix, tmp_path) -> None:
    """The node with ``intake_thread: true``: every camera's frames counted and results published, over DDS."""
    from ros_helpers import mono8_cameras, start_scheduler, stop_scheduler, wait_until_running

    from daris_ros.msg import InferenceResult, SchedulerStats

    params = tmp_path / "params.yaml"
    params.write_text(NODE_PARAMS)
    proc = start_scheduler(install_prefix, params)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("intake_node_harness", context=context)
    results: dict[str, list] = {"cam0": [], "cam1": []}
    stats: list = []
    for cam in results:
        node.create_subscription(InferenceResult, f"/daris/{cam}/result", results[cam].append, 100)
    node.create_subscription(SchedulerStats, "/daris/stats", stats.append, 50)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    out = ""
    try:
        wait_until_running(proc, lambda: bool(stats))
        mono8_cameras(node, ["/intake_node/cam0/image_raw", "/intake_node/cam1/image_raw"], 0.05)
        assert wait_for(lambda: all(len(r) >= 5 for r in results.values()), timeout=60.0), \
            {cam: len(r) for cam, r in results.items()}
        frames = {t.task: t.frames for t in stats[-1].tasks}
        assert frames["cam0"] > 0 and frames["cam1"] > 0, frames
    finally:
        out = stop_scheduler(proc)
        executor.shutdown()
        spinning.join(5.0)
        node.destroy_node()
        context.try_shutdown()
    assert proc.returncode == 0, out
    assert "camera frames are taken by the thread daris-intake" in out, out
