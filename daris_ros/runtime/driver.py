"""Synthetic cameras for an :class:`~daris_ros.runtime.engine.Engine` without ROS (tests, GPU runs, engine-load).

The engine releases every task from its own clock; :class:`SyntheticCameras` only gives each task a frame that
every release takes again (a camera that always has a new frame), for as long as it is active.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class SyntheticCameras:
    """While active (a context manager), every release of each task in ``tasks`` runs on ``frame``."""

    def __init__(self, engine: Any, tasks: Iterable[str], frame: Any) -> None:
        self.engine = engine
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("no tasks to feed")
        self.frame = frame

    def start(self) -> None:
        for name in self.tasks:
            self.engine.set_frame(name, self.frame)

    def stop(self) -> None:
        for name in self.tasks:
            self.engine.inbox.clear(name)

    def __enter__(self) -> SyntheticCameras:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drain(engine: Any, timeout: float = 10.0) -> None:
    """Wait until ``engine`` has no job in flight; TimeoutError after ``timeout`` seconds."""
    t0 = time.monotonic()
    while engine.in_flight():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{engine.in_flight()} jobs never finished")
        time.sleep(0.01)
