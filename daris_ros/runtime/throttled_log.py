"""Warnings that repeat per frame or per stage, throttled per key (a task and a reason, a model stage).

A camera that sends 30 bad frames a second must not write 30 lines a second to the node's log, and one
task's problem must not hide another's: each key (for example ``("front_cam", "truncated_compressed")``)
logs at most once per ``period`` seconds, and the next line it logs says how many of its messages were
held back in between. The counters that the statistics report are kept elsewhere; this only limits lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

DEFAULT_PERIOD_S = 5.0


@dataclass(slots=True)
class _KeyState:
    last_logged: float
    held_back: int = 0


class ThrottledLog:
    """``log(key, level, fmt, *args)``: logs through ``logger`` unless ``key`` logged less than ``period`` ago.

    Thread-safe; ``clock`` (monotonic seconds) is injectable for tests. Without ``logger`` only :meth:`admit`
    serves (the caller logs, e.g. through a ROS node's logger)."""

    def __init__(self, logger: logging.Logger | None = None, period: float = DEFAULT_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if period < 0:
            raise ValueError(f"throttle period must be >= 0 s, got {period}")
        self.logger = logger
        self.period = period
        self._clock = clock
        self._keys: dict[Hashable, _KeyState] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """May ``key`` write a line now? None: no (held back and counted); else how many were held back since its
        last line (for a logger of another kind, e.g. a ROS node's)."""
        now = self._clock()
        with self._lock:
            state = self._keys.get(key)
            if state is not None and now - state.last_logged < self.period:
                state.held_back += 1
                return None
            self._keys[key] = _KeyState(last_logged=now)
            return 0 if state is None else state.held_back

    def suffix(self, held_back: int) -> str:
        """What a line admitted after ``held_back`` others of its key says about them."""
        return f" ({held_back} more like this in the last {self.period:.0f} s not logged)" if held_back else ""

    def log(self, key: Hashable, level: int, fmt: str, *args: object) -> bool:
        """Whether the line was written (False: held back and counted)."""
        held_back = self.admit(key)
        if held_back is None:
            return False
        if self.logger is None:
            raise RuntimeError("ThrottledLog without a logger: use admit()")
        if held_back:
            fmt += " (%d more like this in the last %.0f s not logged)"
            args = (*args, held_back, self.period)
        self.logger.log(level, fmt, *args)
        return True

    def warning(self, key: Hashable, fmt: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, fmt, *args)

    def error(self, key: Hashable, fmt: str, *args: object) -> bool:
        return self.log(key, logging.ERROR, fmt, *args)

    def held_back(self, key: Hashable) -> int:
        """Messages of ``key`` held back since its last line."""
        with self._lock:
            state = self._keys.get(key)
            return 0 if state is None else state.held_back
