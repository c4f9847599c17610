"""The releases of a burst that the engine's loop leaves for its next turns, HP first.

The loop takes at most ``RELEASE_CHUNK`` releases a turn and dispatches between turns, so a burst of hundreds of
cameras does not hold the streams idle (``runtime/engine.py``). A stage is not preempted: an LP batch launched from
the first turns of a burst would be in front of the burst's HP jobs on the streams. So the backlog gives its HP
releases first, and each priority's releases in the order they came.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

#: ``(task, release instant, skipped instants)``, as the engine's loop passes releases around.
Release = tuple[str, float, int]


class ReleaseBacklog:
    """Releases waiting for a turn of the loop: HP ones first, then LP; first in, first out within each."""

    def __init__(self, is_hp: Callable[[str], bool]) -> None:
        self._is_hp = is_hp
        self._hp: collections.deque[Release] = collections.deque()
        self._lp: collections.deque[Release] = collections.deque()

    def add(self, releases: Iterable[Release]) -> None:
        for release in releases:
            (self._hp if self._is_hp(release[0]) else self._lp).append(release)

    def take(self, n: int, out: list[Release]) -> None:
        """Move up to ``n`` releases to ``out``: HP ones first."""
        for waiting in (self._hp, self._lp):
            while n > 0 and waiting:
                out.append(waiting.popleft())
                n -= 1

    def clear(self) -> None:
        self._hp.clear()
        self._lp.clear()

    def __len__(self) -> int:
        return len(self._hp) + len(self._lp)
