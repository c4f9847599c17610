"""A reliable replay reaches a subscriber that was held off the CPU, frame for frame.

A reliable DDS writer re-sends a lost sample only while the sample is still in its keep-last history. A
subscriber process that is not scheduled for a while (a loaded CI machine, a node busy at start-up) stops
draining its shared-memory queue; the writer's samples pile up and, with a history of 10, the oldest are gone
before the subscriber asks for them again. Here a real subscriber process is stopped (SIGSTOP) for 0.6 s in the
middle of a 30 Hz replay of 112x112 rgb8 frames; with the player's reliable default every frame still arrives.
(With ``PlayOptions(depth=10)`` the same run lost 5 of 60 frames on this machine.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daris_ros.bags.player import BagPlayer, PlayOptions
from daris_ros.bags.qos import RELIABLE_REPLAY_DEPTH, to_rclpy
from daris_ros.bags.synth import SynthConfig
from daris_ros.bags.writer import write_synthetic_bag

CAMERA = SynthConfig(cameras=1, width=112, height=112, rate=30.0, duration=2.0, jitter_ms=0.0, drop_prob=0.0,
                     seed=5)
STALL_AT_S = 0.5
STALL_S = 0.6

#: The subscriber process: reliable, keep-last 1000 (its own history never overflows here); prints READY once
#: created, and at the end (stdin closed) the number of frames it received.
SUBSCRIBER = """
import sys, threading
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("stall_subscriber")
count = [0]
def on_image(msg):
    count[0] += 1
node.create_subscription(Image, sys.argv[1], on_image, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
threading.Thread(target=rclpy.spin, args=(node,), daemon=True).start()
print("READY", flush=True)
sys.stdin.read()
print(count[0], flush=True)
"""


def test_reliable_replay_depth_default() -> None:
    assert to_rclpy(None, reliable=True).depth == RELIABLE_REPLAY_DEPTH >= 100
    assert to_rclpy(None, reliable=False).depth == 10  # best effort: nothing is re-sent, a deep history buys nothing
    assert to_rclpy(None, reliable=True, depth=7).depth == 7  # an explicit depth is kept


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP (POSIX) to hold the subscriber")
def test_a_subscriber_held_off_the_cpu_gets_every_frame(ros, tmp_path: Path, wait_until) -> None:
    bag = tmp_path / "camera"
    write_synthetic_bag(bag, CAMERA)
    topic = CAMERA.topic(0)
    sent = CAMERA.expected_counts()[topic]
    child = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, topic], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "READY"
        node = ros.node("player", spin=False)
        player = BagPlayer(node, bag, PlayOptions(reliable=True, wait_for_subscribers=1, wait_timeout=30.0))
        player.start()
        time.sleep(STALL_AT_S)
        os.kill(child.pid, signal.SIGSTOP)
        try:
            time.sleep(STALL_S)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        stats = player.join(timeout=30.0)
        assert stats.published[topic] == sent
        assert player.flush(timeout=20.0), "the subscriber did not acknowledge every frame"
        player.close()
        ros.destroy(node)
        received = int(child.communicate(input="", timeout=30)[0].strip())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert received == sent, f"the subscriber received {received} of {sent} frames"
