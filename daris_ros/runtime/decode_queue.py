"""The engine's decode pool: the frames of release bursts decoded off the loop, HP frames first.

At a release burst the loop hands the frames it took to a :class:`DecodeQueue` in :class:`DecodePart`\\ s (a few
frames of one priority each). The pool's threads take the waiting part of the highest priority first (HP before
LP, first come first served within a priority), so an HP frame never waits behind LP frames released before it:
on a host that cannot decode every frame in time (too many cameras for its CPU, or for Python's GIL), the HP
cameras keep their latency and the LP ones wait. This is DARIS's priority order (HP stages before LP stages,
section IV-B2) applied to the host work before the first stage.

Bounded staleness (the core's ``skip_late``): a frame whose *skip time* (its release plus ``skip_late`` x D_i) has
passed when its part starts is not decoded. The core would skip its job unstarted anyway; decoding it would only
take CPU time from frames that can still make their deadlines. It comes back as :data:`LATE`, and the loop still
releases it to the core, which counts the release and then the skip (``TaskStats.skipped``, a lost deadline in the
miss rate): the accounting stays the core's, nothing disappears uncounted.

The loop gets the parts back per priority in the order it submitted them (:meth:`DecodeQueue.take_done`), so the
releases of one task reach the core in order. Threads are started at the first use and are daemons.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HP_FIRST", "LATE", "LP_AFTER", "DecodePart", "DecodeQueue", "LateFrame", "skip_time"]

#: Priorities of a part in the queue (lower first).
HP_FIRST = 0
LP_AFTER = 1
_IN_EACH_THREAD = -1  # warm-up calls: before any part


class LateFrame:
    """The marker of a frame left undecoded: its skip time had passed when its part started."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LATE"


#: The one :class:`LateFrame`.
LATE = LateFrame()

#: decode(tasks, payloads) -> one decoded frame or error per payload (it never raises: Engine._decode catches).
DecodeFn = Callable[[Sequence[Any], Sequence[Any]], list[Any]]


@dataclass(slots=True, eq=False)
class DecodePart:
    """Frames of one priority from one release burst: what the loop took (``taken``: (task, scheduled instant,
    FrameItem)), their TaskSettings, when the burst was taken (the jobs' release time) and each frame's skip time
    (``math.inf``: never left undecoded). ``frames`` is set by the pool thread, then ``done``."""

    priority: int
    taken: list[Any]
    tasks: list[Any]
    released_at: float
    skip_times: list[float]
    frames: list[Any] = field(default_factory=list)
    late: int = 0
    done: bool = False


class DecodeQueue:
    """A pool of ``threads`` threads decoding :class:`DecodePart`\\ s with ``decode``, HP first; ``clock`` (the
    engine's) tells when a frame is past its skip time; ``on_done`` is called (in the pool thread) after each part.

    :meth:`submit`, :meth:`take_done` and :meth:`pending_frames` belong to one thread (the engine's loop)."""

    def __init__(self, threads: int, decode: DecodeFn, clock: Callable[[], float],
                 on_done: Callable[[], None] | None = None, name: str = "daris-decode") -> None:
        if threads < 1:
            raise ValueError(f"a decode pool needs at least one thread, got {threads}")
        self.threads = threads
        self._decode = decode
        self._clock = clock
        self._on_done = on_done
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._workers: list[threading.Thread] = []
        self._closed = False
        # loop thread only: parts submitted and not yet handed back, per priority, in submission order
        self._order: dict[int, collections.deque[DecodePart]] = {HP_FIRST: collections.deque(),
                                                                 LP_AFTER: collections.deque()}
        self.frames_late = 0  # frames left undecoded (past their skip time when their part started)

    # -- the loop's side ------------------------------------------------------------------------------------------
    def submit(self, part: DecodePart) -> None:
        """Queue ``part`` for the pool (HP parts before every waiting LP part)."""
        self._order[part.priority].append(part)
        self._push(part.priority, lambda: self._run_part(part))

    def take_done(self) -> list[DecodePart]:
        """The parts decoded since the last call, HP first, each priority's in the order submitted (a part done
        before an earlier one of its priority waits for it)."""
        out: list[DecodePart] = []
        for queue in self._order.values():
            while queue and queue[0].done:
                out.append(queue.popleft())
        return out

    def pending_frames(self) -> int:
        """Frames submitted and not yet handed back by :meth:`take_done`."""
        return sum(len(part.taken) for queue in self._order.values() for part in queue)

    def __bool__(self) -> bool:
        return any(self._order.values())

    # -- any thread -----------------------------------------------------------------------------------------------
    def run_in_each_thread(self, fn: Callable[[], None], timeout: float = 60.0) -> None:
        """Run ``fn`` once in every thread of the pool, before any part (a decoder's per-thread warm-up)."""
        barrier = threading.Barrier(self.threads)
        futures: list[Future[None]] = []

        def call(future: Future[None]) -> None:
            try:
                barrier.wait(10.0)  # each thread holds one call until all have one: one call per thread
                fn()
                future.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
        for _ in range(self.threads):
            future: Future[None] = Future()
            futures.append(future)
            self._push(_IN_EACH_THREAD, lambda f=future: call(f))  # type: ignore[misc]
        for future in futures:
            future.result(timeout)

    def close(self) -> None:
        """Stop the threads after the part each is decoding; parts still waiting are never decoded."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()

    # -- the pool's side ------------------------------------------------------------------------------------------
    def _push(self, priority: int, work: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (priority, next(self._seq), work))
            self._cond.notify()
            if len(self._workers) < self.threads:
                self._start_workers()

    def _start_workers(self) -> None:
        while len(self._workers) < self.threads:
            worker = threading.Thread(target=self._work, name=f"{self._name}_{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _work(self) -> None:
        cond, heap = self._cond, self._heap
        while True:
            with cond:
                while not heap and not self._closed:
                    cond.wait()
                if self._closed:
                    return
                work = heapq.heappop(heap)[2]
            work()

    def _run_part(self, part: DecodePart) -> None:
        now = self._clock()
        keep = [i for i, skip_time in enumerate(part.skip_times) if skip_time > now]
        if len(keep) == len(part.taken):
            frames = self._decode(part.tasks, [item.payload for _, _, item in part.taken])
        else:
            frames = [LATE] * len(part.taken)
            if keep:
                decoded = self._decode([part.tasks[i] for i in keep], [part.taken[i][2].payload for i in keep])
                for i, frame in zip(keep, decoded, strict=True):
                    frames[i] = frame
            part.late = len(part.taken) - len(keep)
            with self._cond:
                self.frames_late += part.late
        part.frames = frames
        part.done = True  # (after frames: the loop reads done, then frames)
        if self._on_done is not None:
            self._on_done()


def skip_time(released_at: float, skip_late: float, deadline: float) -> float:
    """When a job released at ``released_at`` with relative deadline ``deadline`` is skipped unstarted by the core
    (``release + skip_late x D_i``); ``math.inf`` with ``skip_late`` off (0)."""
    return released_at + skip_late * deadline if skip_late else math.inf
