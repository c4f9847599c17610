"""Periodic releases of every task from one clock (the engine's), not one timer per task.

Task i is released at ``origin + phase_i + k * T_i``. :meth:`ReleaseClock.due` hands out the instants that have
come, in time order. When the caller fell behind by more than a period (a stalled loop), the instants passed
over are not released in a burst: the task's next release is its latest due instant, and the skipped ones are
returned as a count, so the backlog is reported instead of replayed.
"""

from __future__ import annotations

import heapq
import math


class ReleaseClock:
    def __init__(self, origin: float) -> None:
        self._origin = origin
        self._heap: list[tuple[float, int, str]] = []
        self._period: dict[str, float] = {}
        self._seq: dict[str, int] = {}  # a task's current entry (older entries of a changed task are ignored)
        self._next_seq = 0

    def add(self, task: str, period: float, first: float | None = None) -> None:
        """Release ``task`` every ``period`` seconds from ``first`` (default: the clock's origin)."""
        if period <= 0:
            raise ValueError(f"task {task}: period must be > 0, got {period}")
        self._period[task] = period
        self._push(task, self._origin if first is None else first)

    def _push(self, task: str, at: float) -> None:
        self._next_seq += 1
        self._seq[task] = self._next_seq
        heapq.heappush(self._heap, (at, self._next_seq, task))

    def remove(self, task: str) -> None:
        self._period.pop(task, None)
        self._seq.pop(task, None)

    def set_period(self, task: str, period: float, now: float) -> None:
        """A new period from the next release on (the one already scheduled stays, unless the new period would
        come sooner: then the next release is ``now``-aligned)."""
        if task not in self._period:
            raise KeyError(task)
        self._period[task] = period
        at = next((t for t, seq, name in self._heap if name == task and self._seq.get(name) == seq), now)
        self._push(task, min(at, now + period))

    def rebase(self, now: float) -> None:
        """Every task's next release at ``now`` (a clock that jumped: /clock started, or a replayed bag looped)."""
        tasks = list(self._period)
        self._heap.clear()
        for task in tasks:
            self._push(task, now)

    def next_time(self) -> float:
        """The earliest scheduled release (inf without tasks)."""
        heap = self._heap
        while heap and self._seq.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def due(self, now: float, out: list[tuple[str, float, int]]) -> None:
        """Append ``(task, release instant, skipped instants)`` for every release due at ``now``."""
        heap = self._heap
        seqs = self._seq
        while heap and heap[0][0] <= now:
            at, seq, task = heapq.heappop(heap)
            if seqs.get(task) != seq:
                continue
            period = self._period[task]
            skipped = 0
            if now - at >= period:  # fell behind: release at the latest due instant, report the others
                skipped = int((now - at) // period)
                at += skipped * period
            out.append((task, at, skipped))
            heapq.heappush(heap, (at + period, seq, task))
