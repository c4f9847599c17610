"""Stage scheduler, section IV-B2: eight fixed priority levels with EDF inside each level.

Level of a queued stage (0 is served first)::

    level = 4 * [task is LP] + 2 * [stage is not the task's last] + [preceding stage did not miss]

    0  HP  last stage  preceding stage missed its virtual deadline
    1  HP  last stage
    2  HP  not last    preceding stage missed its virtual deadline
    3  HP  not last
    4  LP  last stage  preceding stage missed its virtual deadline
    5  LP  last stage
    6  LP  not last    preceding stage missed its virtual deadline
    7  LP  not last

Task priority dominates, then "last stage", then "preceding stage missed" (the paper: HP first, the
last stage "prioritized higher", a delayed stage "has the next priority level"). A first stage is
never delayed (it has no preceding stage). The level is computed once, at enqueue, by
:func:`stage_level`, stored with the entry and never recomputed at dequeue, so enqueue and dequeue
cannot disagree. Within a level the order is EDF on the absolute virtual deadline; ties are broken
by release time, then task name, then job id (then insertion order), so the order is deterministic.

Ablations (section VI-F): ``no_last`` drops the last-stage raise, ``no_prior`` drops the
missed-predecessor raise, ``no_fixed`` puts every stage in level 0 (plain EDF, no HP/LP split).
"""

from __future__ import annotations

from collections.abc import Iterator
from heapq import heapify
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from typing import Generic, TypeVar

from daris_ros.core.task import Priority

N_LEVELS = 8

T = TypeVar("T")

LEVEL_NAMES: tuple[str, ...] = (
    "HP-last-delayed",
    "HP-last",
    "HP-delayed",
    "HP-normal",
    "LP-last-delayed",
    "LP-last",
    "LP-delayed",
    "LP-normal",
)


def stage_level(
    priority: Priority,
    is_last: bool,
    delayed: bool,
    *,
    no_last: bool = False,
    no_prior: bool = False,
    no_fixed: bool = False,
) -> int:
    """The fixed priority level (0..7, 0 first) of a stage; see the module docstring."""
    if no_fixed:
        return 0
    last = is_last and not no_last
    late = delayed and not no_prior
    return 4 * int(priority) + (0 if last else 2) + (0 if late else 1)


class StageQueue(Generic[T]):
    """One context's ready queue: the eight levels and EDF in one heap.

    Entries are ``(level, virtual_deadline, release, task, job_id, seq, item)``: ordering the tuples
    is exactly "lowest level first, EDF inside a level, then release, task name, job id". ``seq`` is an
    insertion counter that makes keys unique, so ``item`` is never compared.
    """

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, float, str, int, int, T]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(
        self, level: int, virtual_deadline: float, release: float, task: str, job_id: int, item: T
    ) -> None:
        if not 0 <= level < N_LEVELS:
            raise ValueError(f"level must be in 0..{N_LEVELS - 1}, got {level}")
        self._seq += 1
        _heappush(self._heap, (level, virtual_deadline, release, task, job_id, self._seq, item))

    def pop(self) -> tuple[int, T]:
        """Remove and return ``(level, item)`` of the first entry: lowest level, then EDF."""
        if not self._heap:
            raise IndexError("pop from an empty StageQueue")
        entry = _heappop(self._heap)
        return entry[0], entry[6]

    def peek(self) -> tuple[int, T]:
        if not self._heap:
            raise IndexError("peek into an empty StageQueue")
        entry = self._heap[0]
        return entry[0], entry[6]

    def drain(self) -> list[tuple[int, T]]:
        """Remove every entry; return ``(level, item)`` of each in dequeue order."""
        entries = sorted(self._heap, key=lambda e: e[:6])
        self._heap = []
        return [(e[0], e[6]) for e in entries]

    def discard(self, items: set[T]) -> int:
        """Remove the entries whose item is in ``items`` (compared by hash/identity); the others keep their
        order. Returns how many were removed. O(n): for rare removals (``skip_late``)."""
        kept = [e for e in self._heap if e[6] not in items]
        removed = len(self._heap) - len(kept)
        if removed:
            heapify(kept)
            self._heap = kept
        return removed

    def level_len(self, level: int) -> int:
        return sum(1 for e in self._heap if e[0] == level)

    def items(self) -> Iterator[tuple[int, T]]:
        """All entries in dequeue order (does not modify the queue; O(n log n))."""
        for entry in sorted(self._heap, key=lambda e: e[:6]):
            yield entry[0], entry[6]
