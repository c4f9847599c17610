"""The engine's inbox: the newest frame of each camera, and the intake counters that account for every frame.

Producers (the ROS node's subscription callbacks, a bag player, the bench) call :meth:`FrameInbox.offer`; it keeps
only the newest item per task (what a release takes) and counts the one it replaces as *superseded*. The engine's
loop :meth:`FrameInbox.take`\\ s an item at each release of the task (none new since the last release: a *stale*
period). A frame dropped (a malformed header at arrival, a decoding error at release, or left waiting when
releases stop: :meth:`FrameInbox.discard_pending`) is counted by reason.
Per task, always::

    frames == taken + superseded + dropped_at_arrival + pending      (pending: 1 while a frame waits)
    taken  == released + dropped_at_release

A *sticky* item (synthetic frames: the bench, engine-load) is never consumed: every release takes it again.

It also keeps the timing of the intake: the *intake lag* (arrival minus the image stamp: transport and executor
delay) and the *frame age* at release (release time minus the image stamp), with the number of releases whose
frame was older than the task's period (the node cannot keep up, or the camera delivers late). Thread-safe: one
lock, held for a few field updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FrameItem:
    """One frame as it arrived: its payload (raw message bytes, an array...), when (engine clock, seconds), the
    image stamp on the engine clock (None: unknown) and what the producer wants back with the result."""

    payload: Any
    receive_time: float
    stamp: float | None = None
    meta: Any = None


@dataclass(slots=True)
class IntakeCounters:
    """Per task: the accounting of every frame, and the timing of the intake."""

    frames: int = 0
    taken: int = 0
    superseded: int = 0
    stale: int = 0  # releases with no new frame since the previous one (the camera is silent or slow)
    dropped: dict[str, int] = field(default_factory=dict)  # by reason (arrival and release)
    dropped_at_release: int = 0
    frame_id_changes: int = 0
    releases_skipped: int = 0  # release instants the engine passed over because it ran late (backlog)
    lag_sum: float = 0.0  # arrival - stamp, seconds
    lag_max: float = 0.0
    lag_count: int = 0
    age_sum: float = 0.0  # release - stamp, seconds
    age_max: float = 0.0
    age_last: float = 0.0
    age_count: int = 0
    age_over_period: int = 0  # releases whose frame was older than the task's period

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def copy(self) -> IntakeCounters:
        out = IntakeCounters(**{f: getattr(self, f) for f in self.__slots__})  # type: ignore[attr-defined]
        out.dropped = dict(self.dropped)
        return out

    @property
    def lag_mean(self) -> float:
        return self.lag_sum / self.lag_count if self.lag_count else 0.0

    @property
    def age_mean(self) -> float:
        return self.age_sum / self.age_count if self.age_count else 0.0


class FrameInbox:
    """Newest frame per task plus its :class:`IntakeCounters`; ``on_new(task)`` is called after every new frame
    that is not sticky (outside the lock)."""

    def __init__(self, on_new: Callable[[str], None] | None = None) -> None:
        self._on_new = on_new
        self._lock = threading.Lock()
        self._items: dict[str, FrameItem] = {}
        self._sticky: set[str] = set()
        self._counters: dict[str, IntakeCounters] = {}
        self._frame_ids: dict[str, str] = {}

    def add_task(self, task: str) -> None:
        with self._lock:
            self._counters.setdefault(task, IntakeCounters())

    def remove_task(self, task: str) -> None:
        with self._lock:
            self._items.pop(task, None)
            self._sticky.discard(task)

    def clear(self, task: str) -> None:
        """Forget the frame of ``task`` waiting for a release (a synthetic camera stops)."""
        with self._lock:
            self._items.pop(task, None)
            self._sticky.discard(task)

    def counters(self, task: str) -> IntakeCounters:
        """The live counters of ``task`` (the caller holds no lock: read them through :meth:`snapshot`)."""
        return self._counters[task]

    def offer(self, task: str, item: FrameItem, *, sticky: bool = False, frame_id: str | None = None) -> None:
        """A new frame of ``task``; the previous one, if no release took it, is superseded."""
        with self._lock:
            c = self._counters.get(task)
            if c is None:
                c = self._counters[task] = IntakeCounters()
            c.frames += 1
            if task in self._items and task not in self._sticky:
                c.superseded += 1
            self._items[task] = item
            if sticky:
                self._sticky.add(task)
            else:
                self._sticky.discard(task)
            if item.stamp is not None:
                lag = item.receive_time - item.stamp
                c.lag_sum += lag
                c.lag_count += 1
                if lag > c.lag_max:
                    c.lag_max = lag
            if frame_id is not None:
                old = self._frame_ids.get(task)
                if old is not None and old != frame_id:
                    c.frame_id_changes += 1
                self._frame_ids[task] = frame_id
        if not sticky and self._on_new is not None:
            self._on_new(task)

    def drop(self, task: str, reason: str, *, at_release: bool = False) -> None:
        """A frame of ``task`` was dropped (malformed; ``at_release``: found when it was decoded)."""
        with self._lock:
            c = self._counters.get(task)
            if c is None:
                c = self._counters[task] = IntakeCounters()
            if not at_release:
                c.frames += 1
            else:
                c.dropped_at_release += 1
            c.dropped[reason] = c.dropped.get(reason, 0) + 1

    def discard_pending(self, reason: str) -> int:
        """Drop every frame waiting for a release (not the sticky ones), counted by ``reason`` (releases stopped:
        a frame must not be released long after it arrived). Returns how many."""
        with self._lock:
            waiting = [t for t in self._items if t not in self._sticky]
            for task in waiting:
                del self._items[task]
                c = self._counters[task]
                c.dropped[reason] = c.dropped.get(reason, 0) + 1
            return len(waiting)

    def take(self, task: str) -> FrameItem | None:
        """The frame a release of ``task`` runs on (None: nothing new since the previous release, a stale
        period)."""
        with self._lock:
            c = self._counters[task]
            if task in self._sticky:
                item: FrameItem | None = self._items[task]
            else:
                item = self._items.pop(task, None)
            if item is None:
                c.stale += 1
            else:
                c.taken += 1
            return item

    def take_many(self, tasks: list[str]) -> list[FrameItem | None]:
        """:meth:`take` for every task of a release burst, under one lock."""
        out: list[FrameItem | None] = []
        with self._lock:
            items, sticky, counters = self._items, self._sticky, self._counters
            for task in tasks:
                c = counters[task]
                item = items[task] if task in sticky else items.pop(task, None)
                if item is None:
                    c.stale += 1
                else:
                    c.taken += 1
                out.append(item)
        return out

    def released(self, task: str, release_time: float, stamp: float | None, period: float) -> None:
        """Record the age of the frame a release of ``task`` took."""
        self.released_many([(task, release_time, stamp, period)])

    def released_many(self, releases: list[tuple[str, float, float | None, float]]) -> None:
        """Record the frame ages of a release burst ``(task, release time, stamp, period)``, under one lock."""
        with self._lock:
            for task, release_time, stamp, period in releases:
                if stamp is None:
                    continue
                age = release_time - stamp
                c = self._counters[task]
                c.age_sum += age
                c.age_count += 1
                c.age_last = age
                if age > c.age_max:
                    c.age_max = age
                if age > period:
                    c.age_over_period += 1

    def count_stale(self, task: str) -> None:
        """A period of ``task`` passed without a new frame (frame-triggered releases)."""
        with self._lock:
            self._counters[task].stale += 1

    def skipped(self, task: str, n: int) -> None:
        with self._lock:
            self._counters[task].releases_skipped += n

    def pending(self, task: str) -> int:
        """1 while a frame of ``task`` waits for a release (0 for a sticky frame)."""
        with self._lock:
            return int(task in self._items and task not in self._sticky)

    def snapshot(self) -> dict[str, tuple[IntakeCounters, int]]:
        """Copies of every task's counters with its pending flag."""
        with self._lock:
            return {t: (c.copy(), int(t in self._items and t not in self._sticky)) for t, c in self._counters.items()}
