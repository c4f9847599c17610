"""Synthetic cameras for an :class:`~daris_ros.runtime.engine.Engine` without ROS (tests, GPU runs, engine-load).

The engine releases every task from its own clock; :class:`SyntheticCameras` only gives each task a frame that
every release takes again (a camera that always has a new frame), for as long as it is active.
:class:`FreeRunningCameras` offers new frames the way cameras that are not synchronised do: each at its own rate,
phases spread evenly over the period (for ``release_trigger: frame``).
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

_Cameras = TypeVar("_Cameras", bound="_CamerasWhileActive")


class _CamerasWhileActive(abc.ABC):
    """Feeds an engine between :meth:`start` and :meth:`stop`, or inside a ``with`` block."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin feeding the engine."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop feeding it and forget the frames no release took."""

    def __enter__(self: _Cameras) -> _Cameras:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyntheticCameras(_CamerasWhileActive):
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


class FreeRunningCameras(_CamerasWhileActive):
    """While active, a thread offers ``frames[task]`` to ``engine`` every ``period`` seconds, camera i of n at
    phase ``i / n`` of the period (cameras that are not synchronised), each frame stamped with its offer time."""

    def __init__(self, engine: Any, frames: Mapping[str, Any], period: float) -> None:
        if not frames:
            raise ValueError("no cameras to run")
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.engine = engine
        self.frames = dict(frames)
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="free-running-cameras", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        names = list(self.frames)
        step = self.period / len(names)
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            name = names[k % len(names)]
            due = t0 + k * step
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            now = time.monotonic()
            self.engine.offer(name, self.frames[name], receive_time=now, stamp=now)
            k += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for name in self.frames:
            self.engine.inbox.clear(name)


def drain(engine: Any, timeout: float = 10.0) -> None:
    """Wait until ``engine`` has no job in flight; TimeoutError after ``timeout`` seconds."""
    t0 = time.monotonic()
    while engine.in_flight():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{engine.in_flight()} jobs never finished")
        time.sleep(0.01)
