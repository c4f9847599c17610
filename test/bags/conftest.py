"""Shared fixtures of the bag tool tests: a private DDS domain and spun rclpy nodes.

ROS_DOMAIN_ID is derived from the pid and set at import (unless test/conftest.py already did), before
any rclpy.init, so these tests do not see (or disturb) other DDS traffic on the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))  # same rule as test/conftest.py

import itertools  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from daris_ros.bags.synth import SynthConfig  # noqa: E402
from daris_ros.bags.writer import write_synthetic_bag  # noqa: E402

#: a small bag: 2 cameras, 32x24 rgb8, 20 Hz for 1 s, with jitter and drops
SMALL = SynthConfig(
    cameras=2, width=32, height=24, rate=20.0, duration=1.0, jitter_ms=3.0, drop_prob=0.1, seed=3
)


class RosHarness:
    """One rclpy context with a background executor; nodes made here are spun until teardown."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self._names = itertools.count()
        self._nodes: list[object] = []
        self._thread = threading.Thread(target=self._spin, name="test_executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def node(self, prefix: str = "test", *, spin: bool = True, parameter_overrides: list | None = None):
        node = self.rclpy.create_node(
            f"{prefix}_{next(self._names)}",
            context=self.context,
            parameter_overrides=parameter_overrides or [],
        )
        self._nodes.append(node)
        if spin:
            self.executor.add_node(node)
        return node

    def destroy(self, node) -> None:
        self.executor.remove_node(node)
        node.destroy_node()
        self._nodes.remove(node)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(5.0)
        for node in self._nodes:
            node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="session")
def ros() -> Iterator[RosHarness]:
    harness = RosHarness()
    yield harness
    harness.close()


@pytest.fixture(scope="session")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "small"
    write_synthetic_bag(path, SMALL)
    return path


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, period: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


@pytest.fixture(scope="session")
def small_config() -> SynthConfig:
    return SMALL


@pytest.fixture(name="wait_until", scope="session")
def wait_until_fixture() -> Callable[..., bool]:
    return wait_until
