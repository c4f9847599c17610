"""stopped_by_signal: an error raised once the default context is shut down is the requested stop (rclpy's
shutdown race), one raised while it is valid is a failure."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (the ROS wheels)")

from daris_ros.ros.shutdown_race import stopped_by_signal  # noqa: E402


def test_an_error_after_shutdown_is_the_requested_stop() -> None:
    rclpy.init()
    try:
        assert not stopped_by_signal(RuntimeError("bad output path"))  # the context is valid: a failure
    finally:
        rclpy.shutdown()
    assert stopped_by_signal(RuntimeError("failed to initialize wait set: the given context is not valid"))
