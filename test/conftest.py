"""Shared test set-up: an isolated DDS domain per test run (so parallel runs and other engineers'
ROS traffic do not mix), set before anything initialises rclpy."""

from __future__ import annotations

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
