"""Cross-task stage batching (beyond the paper; docs/policy.md, "Cross-task stage batching").

Ready stages of different tasks that share a model and a stage index may run as ONE batched stage.
This module holds the pieces the scheduler uses when ``SchedulerConfig.batching`` is set:

* :class:`BatchingConfig`: the captured batch sizes and the waiting rules;
* :class:`BatchTimes`: eq. 1 per (model, stage, batch size): the max of the last ``ws`` measured
  times of batches of that size, the predicted run time of a batch;
* :class:`SharedStageCost`: the per-job capacity cost of a (model, stage), shared by every task of
  the model (``min over s of MRET(model, stage, s) / s``), which takes the place of the task MRET of
  eqs. 1-3 and 8 under batching;
* :class:`BatchQueue`: one context's ready queue, split by (model, stage): the same eight levels and
  EDF order as :class:`~daris_ros.core.stage_queue.StageQueue` inside each key.

Pure Python, no clock: every event carries ``now``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heapify
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from typing import Any, Generic, TypeVar

from daris_ros.core.stage_queue import N_LEVELS

T = TypeVar("T")

DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256)

BatchKey = tuple[str, int]
"""(model key, scheduling stage index): what may share a batch."""

BatchAfet = Callable[[str, int, int], float | None]
"""Initial batch-time estimate: ``(model key, stage, size) -> seconds`` (None: unknown)."""


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """Opt-in cross-task stage batching (``SchedulerConfig(batching=BatchingConfig(...))``).

    ``sizes``: the batch sizes with a captured CUDA graph (sorted, 1 included); a batch of n jobs
    runs at ``size_for(n)``, the smallest size >= n (the rows above n are padding).
    ``pad_limit``: a batch whose padding would exceed this fraction of its size runs at the largest
    size <= n instead; the rest stays queued, unless an HP stage among them could then miss its virtual
    deadline (then the batch is padded).
    ``hp_fill_only``: LP stages join a batch with HP stages only in the padding slots the HP part
    already pays for, so they never make an HP batch larger (off by default: ready LP stages may join
    an HP batch as long as the batch still meets the earliest virtual deadline in it).
    ``lp_slack``: an LP-only batch smaller than ``lp_fill`` may wait, at most this many seconds after
    its first stage became ready, for more stages (0 = never wait). HP stages never wait.
    ``min_size``: a stage is *late* when it cannot meet its virtual deadline even in a batch of this size
    (1: in the fastest batch). Late stages do not bound a batch's size and yield to stages that can
    still meet their deadlines; a larger ``min_size`` keeps a backlog of nearly-late stages from
    shrinking batches to inefficient sizes when throughput is needed most.
    ``lp_admit_margin``: LP admission guard on top of eq. 12 (None = off): the context's queued and
    running work (per-job costs) divided by N_s, plus the task's own cost, must stay within this
    fraction of D_i. Eq. 12 alone bounds the *active* LP utilization, which under batching lets the
    queue grow until LP response times approach D_i.
    (Launch-ahead, a batch queued behind a busy stream's running one, is ``SchedulerConfig.launch_ahead``:
    it works with batching on and off.)
    ``lp_max_time``: an LP-only batch's predicted run time stays within this many seconds (None = no cap). It
    bounds how long an HP stage released meanwhile waits for a stream (the blocking of non-preemptive
    execution); a batch with an HP stage is bounded by its members' deadlines only.
    """

    sizes: tuple[int, ...] = DEFAULT_SIZES
    pad_limit: float = 0.1
    hp_fill_only: bool = False
    lp_slack: float = 0.0
    lp_fill: int = 0
    lp_admit_margin: float | None = 0.3
    min_size: int = 1
    lp_max_time: float | None = None

    def __post_init__(self) -> None:
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        object.__setattr__(self, "sizes", sizes)
        if not sizes or sizes[0] != 1:
            raise ValueError(f"batch sizes must include 1, got {self.sizes!r}")
        if not 0.0 <= self.pad_limit < 1.0:
            raise ValueError(f"pad_limit must be in [0, 1), got {self.pad_limit!r}")
        if not math.isfinite(self.lp_slack) or self.lp_slack < 0:
            raise ValueError(f"lp_slack must be >= 0 seconds, got {self.lp_slack!r}")
        if self.lp_fill < 0:
            raise ValueError(f"lp_fill must be >= 0, got {self.lp_fill!r}")
        if not 1 <= self.min_size <= sizes[-1]:
            raise ValueError(f"min_size must be in 1..{sizes[-1]}, got {self.min_size!r}")
        if self.lp_max_time is not None and not (math.isfinite(self.lp_max_time) and self.lp_max_time > 0):
            raise ValueError(f"lp_max_time must be > 0 seconds or None, got {self.lp_max_time!r}")
        if self.lp_admit_margin is not None and not 0 < self.lp_admit_margin:
            raise ValueError(f"lp_admit_margin must be > 0, got {self.lp_admit_margin!r}")

    @classmethod
    def parse(cls, value: BatchingConfig | Mapping[str, Any] | None) -> BatchingConfig | None:
        """A config, a mapping of its fields (scenario YAML) or None (batching off)."""
        if value is None or isinstance(value, BatchingConfig):
            return value
        if isinstance(value, Mapping):
            d = dict(value)
            if "sizes" in d:
                d["sizes"] = tuple(d["sizes"])
            return cls(**d)
        raise TypeError(f"batching must be a BatchingConfig, a mapping or None, got {type(value).__name__}")

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def size_for(self, n: int) -> int:
        """The smallest captured size >= n (n <= max_size)."""
        sizes = self.sizes
        return sizes[bisect.bisect_left(sizes, n)]

    def floor_size(self, n: int) -> int:
        """The largest captured size <= n (n >= 1)."""
        sizes = self.sizes
        return sizes[bisect.bisect_right(sizes, n) - 1]


@dataclass(slots=True)
class BatchStats:
    """Counters of the batched path (``Scheduler.batch_stats``)."""

    batches: int = 0
    jobs: int = 0  # stage executions (job-stages) dispatched in batches
    slots: int = 0  # sum of batch sizes (padding included)
    holds: int = 0  # times an LP batch waited for more stages (lp_slack)
    queue_delay: dict[str, float] = field(default_factory=lambda: {"HP": 0.0, "LP": 0.0})
    queue_count: dict[str, int] = field(default_factory=lambda: {"HP": 0, "LP": 0})
    by_size: dict[int, int] = field(default_factory=dict)

    def copy(self) -> BatchStats:
        return BatchStats(self.batches, self.jobs, self.slots, self.holds, dict(self.queue_delay),
                          dict(self.queue_count), dict(self.by_size))

    @property
    def mean_batch(self) -> float:
        return self.jobs / self.batches if self.batches else 0.0

    @property
    def padding(self) -> float:
        """Fraction of batch slots that carried no job."""
        return 1.0 - self.jobs / self.slots if self.slots else 0.0

    def mean_queue_delay(self, priority: str) -> float:
        """Mean time (s) a stage of this priority waited ready in the queue before its batch started."""
        n = self.queue_count[priority]
        return self.queue_delay[priority] / n if n else 0.0


class BatchTimes:
    """Eq. 1 per (model, stage, batch size): max of the last ``ws`` measured batch times.

    Before a size has a measurement its time is the injected estimate (``batch_afet``), else it is
    scaled from the nearest size that has a value: linearly up from a smaller one (pessimistic:
    batching is never worse than linear) or equal to a larger one (a batch is never slower than a
    larger batch), else ``size x`` the task's per-stage AFET.
    """

    __slots__ = ("_afet", "_fallback", "_known", "_windows", "_ws")

    def __init__(self, ws: int, afet: BatchAfet | None = None) -> None:
        self._ws = ws
        self._afet = afet
        self._windows: dict[tuple[BatchKey, int], deque[float]] = {}
        self._known: dict[tuple[BatchKey, int], float] = {}
        self._fallback: dict[BatchKey, float] = {}

    def set_stage_afet(self, key: BatchKey, afet: float) -> None:
        """The batch-1 start value of ``key`` when nothing better is known (first call wins)."""
        self._fallback.setdefault(key, afet)

    def estimate(self, key: BatchKey, size: int) -> float:
        v = self._known.get((key, size))
        if v is not None:
            return v
        if self._afet is not None:
            v = self._afet(key[0], key[1], size)
            if v is not None:
                self._known[(key, size)] = float(v)
                return float(v)
        return self._scaled(key, size)

    def _scaled(self, key: BatchKey, size: int) -> float:
        below = [(s, v) for (k, s), v in self._known.items() if k == key and s < size]
        above = [(s, v) for (k, s), v in self._known.items() if k == key and s > size]
        if below:
            s, v = max(below)
            best = v * size / s
            if above:
                best = min(best, min(above)[1])
            return best
        if above:
            return min(above)[1]
        return self._fallback.get(key, 0.0) * size

    def record(self, key: BatchKey, size: int, et: float) -> bool:
        """Add a measured batch time; return True when the MRET of (key, size) changed."""
        if et < 0:
            raise ValueError(f"execution time must be >= 0, got {et}")
        w = self._windows.get((key, size))
        if w is None:
            w = self._windows[(key, size)] = deque(maxlen=self._ws)
        w.append(et)
        new = max(w)
        if self._known.get((key, size)) == new:
            return False
        self._known[(key, size)] = new
        return True

    def best_per_job(self, key: BatchKey, sizes: Sequence[int]) -> float:
        """``min over sizes of MRET(key, s) / s``: the per-job capacity cost of the stage."""
        return min(self.estimate(key, s) / s for s in sizes)

    def measured(self, key: BatchKey, size: int) -> bool:
        return (key, size) in self._windows

    def set_window(self, ws: int) -> None:
        """Change ws, keeping the most recent ``ws`` batch times of every (key, size)."""
        self._ws = ws
        for ks, w in list(self._windows.items()):
            self._windows[ks] = w = deque(w, maxlen=ws)
            self._known[ks] = max(w)

    def table(self) -> dict[tuple[str, int, int], float]:
        """Every (model, stage, size) with a value, for reports."""
        return {(k[0], k[1], s): v for (k, s), v in sorted(self._known.items())}


class SharedStageCost:
    """The per-job cost of each stage of one model, shared by every task of that model (batching).

    Under batching a stage's time is the batch's, shared by all its jobs, so eqs. 1-3 and 8 use a
    per-job *capacity* cost: for stage j, ``min over sizes s of MRET(model, j, s) / s``, the time one job
    costs when batches are as efficient as the measured (or, before a measurement, estimated) batch
    times allow. It is set by the scheduler whenever a batch-time MRET changes (:meth:`set_stage`).
    Until then a stage's cost is its AFET. The read interface is that of
    :class:`~daris_ros.core.mret.MretTracker`.

    Why not the per-job time of the batches that actually ran: under overload that is a feedback loop.
    Small batches make jobs look expensive, eq. 12 rejects LP work, the queue stays short and batches
    stay small (seen in the simulator: LP starved at ~50% of the GPU's batched throughput).
    """

    __slots__ = ("_afet", "_set", "_stage", "_total", "_ws")

    def __init__(self, afet: Sequence[float], ws: int) -> None:
        if ws < 1:
            raise ValueError(f"window size must be >= 1, got {ws}")
        if len(afet) < 1:
            raise ValueError("a task needs at least one stage")
        self._afet = tuple(float(a) for a in afet)
        self._ws = ws
        self._set = [False] * len(self._afet)
        self._stage = list(self._afet)
        self._total = sum(self._stage)

    @property
    def ws(self) -> int:
        return self._ws

    @property
    def n_stages(self) -> int:
        return len(self._afet)

    @property
    def afet(self) -> tuple[float, ...]:
        return self._afet

    @property
    def total(self) -> float:
        return self._total

    def stage(self, j: int) -> float:
        return self._stage[j]

    def stages(self) -> tuple[float, ...]:
        return tuple(self._stage)

    def has_history(self, j: int) -> bool:
        return self._set[j]

    def measured(self) -> tuple[bool, ...]:
        return tuple(self._set)

    def set_stage(self, j: int, cost: float) -> bool:
        """Stage j's per-job cost is now ``cost``; return True when the task cost (eq. 2) changed."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        self._set[j] = True
        if cost == self._stage[j]:
            return False
        self._stage[j] = cost
        self._total = sum(self._stage)
        return True

    def forget(self) -> bool:
        """Re-probing (``SchedulerConfig.reprobe_after``) keeps the shared cost: it belongs to every task of the
        model, not to the starving one. Always False (nothing changed)."""
        return False

    def record(self, j: int, et: float) -> bool:
        """Not used under batching (the scheduler calls :meth:`set_stage`); kept for the interface."""
        raise RuntimeError("a shared batching cost is set from the batch-time MRET, not recorded per job")

    def set_afet(self, afet: Sequence[float]) -> bool:
        """New start values for the stages that have no cost from batch times yet."""
        if len(afet) != len(self._afet):
            raise ValueError(f"expected {len(self._afet)} AFET values, got {len(afet)}")
        if any(a < 0 for a in afet):
            raise ValueError(f"AFET values must be >= 0, got {tuple(afet)}")
        self._afet = tuple(float(a) for a in afet)
        old = self._total
        self._stage = [c if done else a for c, done, a in zip(self._stage, self._set, self._afet, strict=True)]
        self._total = sum(self._stage)
        return self._total != old

    def set_window(self, ws: int) -> bool:
        """The window belongs to the batch-time MRET; nothing to trim here."""
        if ws < 1:
            raise ValueError(f"window size must be >= 1, got {ws}")
        self._ws = ws
        return False


Raw = tuple[int, float, float, str, int, int, Any]
"""A queue entry: (level, virtual deadline, release, task, job id, seq, item)."""


class BatchQueue(Generic[T]):
    """One context's ready queue, one heap per batch key; each heap has StageQueue's exact order.

    ``push``/``pop``/``peek``/``items``/``len`` behave like :class:`StageQueue` over all keys (``pop``
    takes the global head). The batched dispatch works on single keys: ``keys_in_order`` (keys by their
    head, best first) and the key's heaps themselves: ``heap(key)`` for stages that can still meet their
    virtual deadline, ``late_heap(key)`` where the dispatch moves those that cannot (a stage never becomes
    on time again, so the move is final); both keep the queue order. ``consumed(n)`` accounts for entries
    the caller took out of them directly.
    """

    __slots__ = ("_heaps", "_key_of", "_late", "_n", "_seq")

    def __init__(self, key_of: Callable[[T], Hashable]) -> None:
        self._key_of = key_of
        self._heaps: dict[Hashable, list[Raw]] = {}
        self._late: dict[Hashable, list[Raw]] = {}
        self._seq = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def push(self, level: int, virtual_deadline: float, release: float, task: str, job_id: int, item: T) -> None:
        if not 0 <= level < N_LEVELS:
            raise ValueError(f"level must be in 0..{N_LEVELS - 1}, got {level}")
        self._seq += 1
        key = self._key_of(item)
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = []
            self._late[key] = []
        _heappush(heap, (level, virtual_deadline, release, task, job_id, self._seq, item))
        self._n += 1

    def heap(self, key: Hashable) -> list[Raw]:
        """The key's heap of stages not (yet) found late, for a caller that pops and pushes back in place."""
        return self._heaps[key]

    def late_heap(self, key: Hashable) -> list[Raw]:
        """The key's heap of stages found late."""
        return self._late[key]

    def consumed(self, n: int) -> None:
        """``n`` entries were taken out of a key's heaps directly."""
        self._n -= n

    def _head(self, key: Hashable) -> Raw | None:
        h, lt = self._heaps[key], self._late[key]
        if h and lt:
            return h[0] if h[0][:6] < lt[0][:6] else lt[0]
        return h[0] if h else (lt[0] if lt else None)

    def keys_in_order(self) -> list[Hashable]:
        """Non-empty keys, best head first."""
        heads = [(head[:6], k) for k in self._heaps if (head := self._head(k)) is not None]
        if len(heads) > 1:
            heads.sort(key=lambda x: x[0])
        return [k for _, k in heads]

    def _head_key(self) -> Hashable:
        keys = self.keys_in_order()
        if not keys:
            raise IndexError("empty BatchQueue")
        return keys[0]

    def pop(self) -> tuple[int, T]:
        key = self._head_key()
        head = self._head(key)
        raw = _heappop(self._heaps[key] if self._heaps[key] and self._heaps[key][0] is head else self._late[key])
        self._n -= 1
        return raw[0], raw[6]

    def peek(self) -> tuple[int, T]:
        raw = self._head(self._head_key())
        assert raw is not None
        return raw[0], raw[6]

    def drain(self) -> list[tuple[int, T]]:
        """Remove every entry (late ones included); return ``(level, item)`` of each in dequeue order."""
        every = sorted((e for h in (*self._heaps.values(), *self._late.values()) for e in h), key=lambda e: e[:6])
        self._heaps.clear()
        self._late.clear()
        self._n = 0
        return [(e[0], e[6]) for e in every]

    def discard(self, items: set[T]) -> int:
        """Remove the entries whose item is in ``items`` (compared by hash/identity) from every key's heaps, late
        ones included; the others keep their order. Returns how many were removed. O(n) over the keys of the
        items: for rare removals (``skip_late``)."""
        removed = 0
        for key in {self._key_of(item) for item in items}:
            for heaps in (self._heaps, self._late):
                heap = heaps.get(key)
                if not heap:
                    continue
                kept = [e for e in heap if e[6] not in items]
                if len(kept) != len(heap):
                    removed += len(heap) - len(kept)
                    heapify(kept)
                    heap[:] = kept  # (in place: heap(key) / late_heap(key) hand out these lists)
        self._n -= removed
        return removed

    def key_len(self, key: Hashable) -> int:
        return len(self._heaps.get(key, ())) + len(self._late.get(key, ()))

    def items(self) -> Iterator[tuple[int, T]]:
        """All entries in dequeue order (does not modify the queue)."""
        every = [e for h in (*self._heaps.values(), *self._late.values()) for e in h]
        for entry in sorted(every, key=lambda e: e[:6]):
            yield entry[0], entry[6]
