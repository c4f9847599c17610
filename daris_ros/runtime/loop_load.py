"""How busy the engine's loop is: the share of wall time it spent working (not waiting for work), averaged
exponentially over about ``window`` seconds.

The loop is the host's bottleneck when the GPU is not (docs/benchmarks/node_e2e/README.md, session 16: at 48 JPEG
cameras on an H100 the loop waited for work 0.8% of its time while the GPU was busy about a fifth of it). Work in
the loop is done for every job it admits (decode, preprocessing, launches, results), so once it is saturated an
admitted LP job delays the HP jobs behind it on the host, which eqs. 11-12 (the GPU's utilization) do not see.
``lp_host_busy_limit`` uses :meth:`LoopLoad.fraction` to reject LP releases while the loop is over that share
(``Scheduler.release(host_busy=True)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class LoopLoad:
    """Call :meth:`busy` when the loop wakes and :meth:`idle` before it waits; :meth:`fraction` is the busy share.
    One thread (the loop's) calls them all. It starts busy, at a share of 0."""

    __slots__ = ("window", "_clock", "_share", "_since", "_busy")

    def __init__(self, window: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        self.window = window
        self._clock = clock
        self._share = 0.0
        self._since = clock()
        self._busy = True

    def busy(self) -> None:
        self._switch(True)

    def idle(self) -> None:
        self._switch(False)

    def fraction(self) -> float:
        """The busy share of the last ``window`` seconds or so (exponential weights), up to now."""
        self._fold(self._clock())
        return self._share

    def _switch(self, busy: bool) -> None:
        if busy != self._busy:
            self._fold(self._clock())
            self._busy = busy

    def _fold(self, now: float) -> None:
        elapsed = now - self._since
        if elapsed <= 0:
            return
        keep = math.exp(-elapsed / self.window)
        self._share = self._share * keep + (1.0 - keep if self._busy else 0.0)
        self._since = now
