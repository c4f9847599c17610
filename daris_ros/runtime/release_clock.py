"""Releases of every task from one clock (the engine's), not one timer per task.

Two triggers:

* ``clock``: task i is released at ``origin + k * T_i`` (all tasks of one period together: a rig).
  :meth:`ReleaseClock.due` hands out the instants that have come, in time order. When the caller fell behind by
  more than a period (a stalled loop), the instants passed over are not released in a burst: the task's next
  release is its latest due instant, and the skipped ones are returned as a count, so the backlog is reported
  instead of replayed.
* ``frame``: the task is released as soon as its camera's new frame is there and the release is *allowed*, by the
  generic cell rate algorithm: a theoretical release time ``tat`` advances by ``T`` at each release
  (``tat = max(tat, a) + T``, ``a`` the released frame's arrival), and a release at ``t`` is allowed when
  ``t >= tat - slack * T``. So a frame that
  arrives up to ``slack * T`` early (jitter) is released on arrival, the number of releases in any window ``W``
  stays within ``W / T + 1 + slack`` (a camera faster than the task is sampled at the task's rate), and the release
  follows the camera's phase instead of waiting up to a period for the next clock instant. The heap then holds
  *checks*: at the allowed time (a frame that arrived before it is released then) and every period after it while
  no frame comes (:meth:`stale_check` tells the caller to count a stale period).

  With a release *window* ``w > 0`` the frame trigger releases on a grid, ``origin + k * w``: a frame is released at
  the first grid point at or after both its arrival and its allowed time (:meth:`on_grid` tells the caller when to
  look at a newly arrived frame; checks are scheduled on grid points). Cameras that are not synchronised then
  share releases, so their jobs of one model share a batch through every stage: the host's work per frame shrinks,
  at up to ``w`` more frame age. ``w = 0``: every frame on arrival.
"""

from __future__ import annotations

import heapq
import math


class ReleaseClock:
    def __init__(self, origin: float, window: float = 0.0) -> None:
        if not window >= 0:
            raise ValueError(f"release window must be >= 0 s, got {window}")
        self._origin = origin
        self._window = window
        self._heap: list[tuple[float, int, str]] = []
        self._period: dict[str, float] = {}
        self._seq: dict[str, int] = {}  # a task's current entry (older entries of a changed task are ignored)
        self._next_seq = 0
        self._tat: dict[str, float] = {}  # frame-triggered tasks: the theoretical next release time
        self._slack: dict[str, float] = {}

    def add(self, task: str, period: float, first: float | None = None, *, on_frame: bool = False,
            slack: float = 0.25) -> None:
        """Release ``task`` every ``period`` seconds from ``first`` (default: the clock's origin), or, ``on_frame``,
        when a new frame is there and the release is allowed (``slack``: the share of a period a frame may come
        early)."""
        if period <= 0:
            raise ValueError(f"task {task}: period must be > 0, got {period}")
        if not 0 <= slack < 1:
            raise ValueError(f"task {task}: slack must be in [0, 1), got {slack}")
        self._period[task] = period
        at = self._origin if first is None else first
        if on_frame:
            self._tat[task] = at
            self._slack[task] = slack
        else:
            self._tat.pop(task, None)
        self._push(task, at)

    @property
    def window(self) -> float:
        """The frame trigger's release grid spacing in seconds (0: no grid)."""
        return self._window

    def on_grid(self, t: float) -> float:
        """The first grid point at or after ``t`` (``t`` itself without a window): when a frame that arrived at
        ``t`` is looked at."""
        window = self._window
        if window <= 0:
            return t
        k = math.ceil((t - self._origin) / window - 1e-9)
        return self._origin + k * window

    def _allowed(self, task: str) -> float:
        return self._tat[task] - self._slack[task] * self._period[task]

    def on_frame(self, task: str) -> bool:
        """Whether ``task`` is frame-triggered."""
        return task in self._tat

    def may_release(self, task: str, now: float) -> bool:
        """A frame-triggered task whose new frame arrived at ``now``: is its release allowed now?"""
        return now >= self._allowed(task)

    def released(self, task: str, now: float, arrival: float | None = None) -> None:
        """A frame-triggered task was released at ``now`` with a frame that arrived at ``arrival`` (default:
        ``now``; taken as at most a period before ``now``): its theoretical release time moves a period on from
        the frame's arrival, and the next check is scheduled at its next allowed time.

        Counting from the arrival, not the release, keeps the camera's phase: a release delayed by the grid or a
        busy loop does not delay the next frame's (were it counted from the release, delays of more than
        ``slack * T`` would add up from frame to frame until a frame is superseded unreleased)."""
        period = self._period[task]
        at = now if arrival is None else min(now, max(arrival, now - period))
        self._tat[task] = max(self._tat[task], at) + period
        self._push(task, self.on_grid(self._allowed(task)))

    def stale_check(self, task: str, at: float) -> bool:
        """For a check of a frame-triggered task at ``at`` that found no frame: whether a whole period has passed
        since its release was allowed (a stale period), rather than the allowed time itself."""
        return at >= self._allowed(task) + self._period[task] * 0.999

    def _push(self, task: str, at: float) -> None:
        self._next_seq += 1
        self._seq[task] = self._next_seq
        heapq.heappush(self._heap, (at, self._next_seq, task))

    def remove(self, task: str) -> None:
        self._period.pop(task, None)
        self._seq.pop(task, None)
        self._tat.pop(task, None)
        self._slack.pop(task, None)

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
        self._origin = now  # (the release grid restarts with the clock)
        self._heap.clear()
        for task in tasks:
            if task in self._tat:
                self._tat[task] = now
            self._push(task, now)

    def next_time(self) -> float:
        """The earliest scheduled release (inf without tasks)."""
        heap = self._heap
        while heap and self._seq.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def due(self, now: float, out: list[tuple[str, float, int]]) -> None:
        """Append ``(task, release instant, skipped instants)`` for every release due at ``now``; for a
        frame-triggered task ``(task, check time, -1)``: release it if its frame is there (then call
        :meth:`released`), else see :meth:`stale_check`; its next check, a period later, is scheduled here."""
        heap = self._heap
        seqs = self._seq
        tat = self._tat
        while heap and heap[0][0] <= now:
            at, seq, task = heapq.heappop(heap)
            if seqs.get(task) != seq:
                continue
            period = self._period[task]
            if task in tat:
                out.append((task, at, -1))
                heapq.heappush(heap, (self.on_grid(max(at + period, now)), seq, task))
                continue
            skipped = 0
            if now - at >= period:  # fell behind: release at the latest due instant, report the others
                skipped = int((now - at) // period)
                at += skipped * period
            out.append((task, at, skipped))
            heapq.heappush(heap, (at + period, seq, task))
