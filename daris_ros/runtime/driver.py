"""Release jobs of an engine at their tasks' periods from a thread: what the node's release timers do,
for tests, GPU runs and tools that drive an :class:`~daris_ros.runtime.engine.Engine` without ROS."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np


class PeriodicDriver:
    """Releases each task of ``periods`` (name -> seconds) every period, on ``frame``, until stopped.

    Periods are multiples of the shortest one (rounded); all tasks release at t = 0. Use as a context
    manager; ``releases`` lists ``(task, job_id, time)`` of every release (``keep_releases=False``: not kept,
    for long runs that measure memory)."""

    def __init__(self, engine: Any, periods: Mapping[str, float], frame: np.ndarray, *,
                 keep_releases: bool = True) -> None:
        if not periods:
            raise ValueError("no tasks to release")
        self.engine = engine
        self.frame = frame
        self.tick = min(periods.values())
        self.every = {name: max(1, round(p / self.tick)) for name, p in periods.items()}
        self.releases: list[tuple[str, int, float]] = []
        self._keep = keep_releases
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daris-driver", daemon=True)

    def _run(self) -> None:
        t0, k = time.monotonic(), 0
        while not self._stop.is_set():
            for name, every in self.every.items():
                if k % every == 0:
                    d = self.engine.release(name, self.frame, receive_time=time.monotonic())
                    if self._keep:
                        self.releases.append((name, d.job_id, time.monotonic()))
            k += 1
            time.sleep(max(0.0, t0 + k * self.tick - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> PeriodicDriver:
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
