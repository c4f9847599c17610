"""Shared pieces of the tests that drive code on an injected clock: a clock the test moves, and a wait on a
condition the code under test makes true in its own thread (a hang guard, not a timing assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_S = 60.0  # a hang guard only (a loaded CI machine)


class ManualClock:
    """Reads ``now``, which the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(what: str, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds of wall time."""
    t_end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < t_end, f"timed out waiting for {what}"
        time.sleep(0.002)
