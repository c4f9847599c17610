"""The batched online phase of :class:`~daris_ros.core.scheduler.Scheduler` (cross-task stage batching).

Used only when ``SchedulerConfig.batching`` is set: ``Scheduler.dispatch`` and ``Scheduler.complete`` then
come here (one API for both modes, docs/core_api.md). The rule (docs/policy.md, "Cross-task stage
batching"), per idle stream of a context:

1. Keys (model, stage) are visited in the order of their best queued stage (eight levels, then EDF),
   so the batch is led by the stage the unbatched scheduler would have dispatched.
2. Stages of that key that can still meet their virtual deadline (in a batch of ``min_size``) are
   taken in queue order while the batch's predicted finish, ``now + MRET(model, stage, size_for(n))``,
   is no later than the earliest of their deadlines. A stage whose own deadline is too tight for the
   batch is skipped (left queued); the first stage that would push the batch past the deadline of those
   already in ends it. Then late stages (they cannot be saved by going first, and going first would make
   others late too: the EDF domino effect) fill the batch up to the size those deadlines allow.
3. Padding: a batch is padded up to ``size_for(n)`` when the padding is at most ``pad_limit`` of the size,
   else cut down to the largest captured size <= n (the rest stays queued), unless an HP stage cut off
   could then miss its virtual deadline.
4. HP never waits for a batch to fill. Ready LP stages may join an HP batch while it meets the earliest
   virtual deadline in it (``hp_fill_only``: only in the padding slots the HP stages already pay for).
5. An LP-only batch smaller than ``lp_fill`` may wait until ``lp_slack`` after the earliest of its key's
   stages became ready, while no HP stage of the key waits and the deadline check still holds at that
   time (``next_wakeup``).
6. Launch-ahead (``SchedulerConfig.launch_ahead``): a busy stream with room behind its running batch gets its
   next batch near its predicted free time, formed and checked as if it started then.
"""

from __future__ import annotations

from heapq import heappop as _heappop
from heapq import heappush as _heappush
from typing import TYPE_CHECKING, Any

from daris_ros.core.batching import BatchingConfig, BatchQueue, BatchStats, BatchTimes, Raw
from daris_ros.core.job import Dispatch, JobOutcome, new_dispatch
from daris_ros.core.task import Priority

if TYPE_CHECKING:
    from collections.abc import Hashable

_INF = float("inf")
_HP = Priority.HP


class BatchingMixin:
    """The batched ``dispatch`` / ``complete`` on the scheduler's own state."""

    # set by Scheduler.__init__
    _batching: BatchingConfig | None
    _btimes: BatchTimes
    _bstats: BatchStats
    _held: dict[int, float]
    _wake: float
    _qdelay: list[float]
    _qcount: list[int]
    _queues: list[Any]
    _idle: list[list[int]]
    _running: list[list[Any]]
    _lanes: list[list[list[Any]]]
    _tail: list[list[float]]
    _ahead: int
    _ahead_at: float
    _queued: list[int]
    _ready: set[int]

    if TYPE_CHECKING:  # provided by Scheduler (this class is only ever its base)
        def _advance(self, e: Any, now: float, k: int) -> JobOutcome | None: ...

        def _free_stream(self, d: Dispatch, now: float) -> Any: ...

        def _ahead_stream(self, k: int, now: float) -> tuple[int, float, int] | None: ...

        def _refresh_ahead(self) -> None: ...

        @staticmethod
        def _exec_time(d: Dispatch, now: float, exec_time: float | None) -> float: ...

    # ------------------------------------------------------------------ dispatch
    def _batched_dispatch(self, now: float) -> list[Dispatch]:
        """``dispatch`` with batching: start batched stages on idle streams (lowest stream index first), per
        context; with ``launch_ahead``, then queue batches on busy streams whose predicted free time is near."""
        cfg = self._batching
        assert cfg is not None
        ready = self._ready
        if self._held and now >= self._wake:
            ready.update(self._held)
            self._held.clear()
            self._wake = _INF
        ahead = self._ahead
        if ahead and now >= self._ahead_at:  # a busy stream's launch-ahead window opens with time, not an event
            queued = self._queued
            ready.update(k for k in range(len(queued)) if queued[k])
        if not ready:
            return []
        contexts = sorted(ready)
        ready.clear()
        out: list[Dispatch] = []
        for k in contexts:
            idle = self._idle[k]
            q: BatchQueue[Any] = self._queues[k]
            while self._queued[k]:
                if idle:
                    stream, t_start, behind = idle[0], now, 0
                elif ahead:
                    picked = self._ahead_stream(k, now)
                    if picked is None:
                        break
                    stream, t_start, behind = picked
                else:
                    break
                formed = None
                for key in q.keys_in_order():
                    formed = self._form(cfg, q, key, now, k, t_start)
                    if formed is not None:
                        break
                if formed is None:
                    break
                if not behind:
                    _heappop(idle)
                taken, size, pred, minv = formed
                out.append(self._start_batch(taken, size, pred, minv, k, stream, t_start, behind))
        if ahead and out:
            self._refresh_ahead()
        return out

    def _form(self, cfg: BatchingConfig, q: BatchQueue[Any], key: Hashable, now: float, k: int, t0: float
              ) -> tuple[list[Raw], int, float, float] | None:
        """Take the stages of one key that form the next batch (None: the LP batch waits, see lp_slack).

        ``t0`` is when the batch is predicted to start: ``now``, or later for a batch queued behind another
        (launch_ahead); predicted finishes count from it."""
        est = self._btimes.estimate
        size_for = cfg.size_for
        # late: the stage cannot meet its virtual deadline even in a batch of min_size (measured batch times
        # need not grow with the size, so the minimum over those sizes)
        t_late = min(est(key, size) for size in cfg.sizes if size >= cfg.min_size)  # type: ignore[arg-type]
        heap, late_heap = q.heap(key), q.late_heap(key)
        taken: list[Raw] = []
        bound: list[bool] = []  # whether the member's deadline bounds the batch
        from_late: list[bool] = []
        skipped: list[Raw] = []
        minv = _INF
        n_hp = 0
        cap = cfg.max_size
        cur_size, cur_pred = 0, 0.0  # the predicted finish changes only when the size does
        fill_only = cfg.hp_fill_only and not self._config.no_fixed  # type: ignore[attr-defined]
        lp_cap = _INF if cfg.lp_max_time is None else cfg.lp_max_time
        # 1. stages that can still meet their deadline, in queue order, while the batch meets every one of them
        while heap:
            raw = _heappop(heap)
            vdl = raw[1]
            if t0 + t_late > vdl:
                if t0 == now or now + t_late > vdl:
                    _heappush(late_heap, raw)  # late for good: it fills the batch in step 2
                    continue
                # late only behind the stream's running batch (launch_ahead): an idle stream may still save it
                if len(skipped) >= cfg.max_size:
                    _heappush(heap, raw)
                    break
                skipped.append(raw)
                continue
            hp = raw[6].job.priority is _HP
            if not hp and n_hp and fill_only:
                cap = size_for(n_hp)
            if len(taken) >= cap:
                _heappush(heap, raw)
                break
            size = size_for(len(taken) + 1)
            if size != cur_size:
                cur_size, cur_pred = size, t0 + est(key, size)  # type: ignore[arg-type]
            if taken and not n_hp and not hp and cur_pred - t0 > lp_cap:
                _heappush(heap, raw)  # an LP-only batch this long would block an HP stage released meanwhile
                break
            m = vdl if vdl < minv else minv
            if cur_pred <= m:
                taken.append(raw)
                bound.append(True)
                minv = m
            elif not taken:  # the head runs anyway (its deadline is too tight for every batch)
                taken.append(raw)
                bound.append(False)
            elif cur_pred <= minv and len(skipped) < cfg.max_size:
                skipped.append(raw)  # its own deadline is too tight for this batch: leave it queued
                continue
            else:
                _heappush(heap, raw)
                break
            from_late.append(False)
            n_hp += hp
        for raw in skipped:
            _heappush(heap, raw)
        if not taken and not late_heap:
            return None  # (launch_ahead) every stage of the key would be late behind the running batch
        # 2. late stages (they cannot be saved by going first) fill up to the size those deadlines allow
        while late_heap and len(taken) < cap:
            raw = late_heap[0]
            hp = raw[6].job.priority is _HP
            if fill_only and (hp and len(taken) > n_hp):
                break  # an HP stage would join LP stages beyond the HP part's padding
            if not hp and n_hp and fill_only:
                cap = size_for(n_hp)
                if len(taken) >= cap:
                    break
            size = size_for(len(taken) + 1)
            if size != cur_size:
                cur_size, cur_pred = size, t0 + est(key, size)  # type: ignore[arg-type]
            if taken and cur_pred > minv:
                break
            if taken and not n_hp and not hp and cur_pred - t0 > lp_cap:
                break
            taken.append(_heappop(late_heap))
            bound.append(False)
            from_late.append(True)
            n_hp += hp
        n = len(taken)
        size = size_for(n)
        if size > n and size - n > cfg.pad_limit * size:
            floor = cfg.floor_size(n)
            cut = taken[floor:]
            # cut the padding off unless an HP stage left queued could then miss its virtual deadline
            later = t0 + est(key, floor) + est(key, size_for(len(cut)))  # type: ignore[arg-type]
            if all(raw[6].job.priority is not _HP or later <= raw[1] or late
                   for raw, late in zip(cut, from_late[floor:], strict=True)):
                for raw, late in zip(cut, from_late[floor:], strict=True):
                    _heappush(late_heap if late else heap, raw)
                del taken[floor:], bound[floor:], from_late[floor:]
                n = size = floor
                n_hp = sum(raw[6].job.priority is _HP for raw in taken)
                minv = min((raw[1] for raw, b in zip(taken, bound, strict=True) if b), default=_INF)
        if not n_hp:
            fill = min(cfg.lp_fill, cfg.max_size)
            if n < fill and cfg.lp_slack > 0 and not any(r[6].job.priority is _HP for r in (*heap, *late_heap)):
                # (only when no HP stage of the key waits, late or skipped); every stage of the key waits with the
                # batch: the slack counts from the earliest ready one
                until = min(raw[6].ready for raw in (*taken, *heap, *late_heap)) + cfg.lp_slack
                if now < until and until + est(key, size_for(fill)) <= minv:  # type: ignore[arg-type]
                    for raw, late in zip(taken, from_late, strict=True):
                        _heappush(late_heap if late else heap, raw)
                    self._bstats.holds += 1
                    self._held[k] = until
                    if until < self._wake:
                        self._wake = until
                    return None
        pred = t0 + est(key, size)  # type: ignore[arg-type]
        # the deadline the batch was sized against: the earliest among the members it meets (the others
        # are late for it)
        minv = min((raw[1] for raw in taken if raw[1] >= pred), default=_INF)
        self._queued[k] -= n
        q.consumed(n)  # the entries were popped from the key's heaps directly
        return taken, size, pred, minv

    def _start_batch(self, taken: list[Raw], size: int, pred: float, minv: float, k: int, stream: int,
                     now: float, behind: int = 0) -> Dispatch:
        """Place the batch on ``stream``: it runs now (``behind`` = 0), or is queued behind ``behind`` batches
        and starts at ``now`` = the predicted free time of the stream."""
        entries = [raw[6] for raw in taken]
        jobs = tuple(e.job for e in entries)
        for job in jobs:
            if job.start is None:
                job.start = now
        e0 = entries[0]
        stage = e0.stage
        stats = self._bstats
        stats.batches += 1
        stats.jobs += len(entries)
        stats.slots += size
        stats.by_size[size] = stats.by_size.get(size, 0) + 1
        qd, qc = self._qdelay, self._qcount  # [HP, LP]
        for e in entries:
            p = e.job.priority
            qd[p] += now - e.ready
            qc[p] += 1
        bd = new_dispatch(jobs, stage, k, stream, size, e0.state.model, tuple(r[0] for r in taken), minv, pred,
                          e0.state.stage_map[stage], now, behind)
        if behind:
            self._lanes[k][stream].append((bd, entries))
        else:
            self._running[k][stream] = (bd, entries)
        self._tail[k][stream] = pred
        return bd

    # ------------------------------------------------------------------ completion
    def _batched_complete(self, d: Dispatch, now: float, exec_time: float | None) -> list[JobOutcome]:
        """``complete`` with batching: batch ``d`` finished at ``now`` after ``exec_time`` seconds (default
        ``now - d.start``).

        Records the batch time (eq. 1 per (model, stage, size)) and the shared per-job cost, then advances
        every job (next stage enqueued, or the job finished). Returns the outcomes of the finished jobs.
        """
        cfg = self._batching
        assert cfg is not None
        k = d.context
        exec_time = self._exec_time(d, now, exec_time)
        entries = self._free_stream(d, now)
        if self._ahead:
            self._refresh_ahead()
        e0 = entries[0]
        key = e0.state.bkeys[d.stage]
        if self._btimes.record(key, d.size, exec_time):  # eq. 1 per (model, stage, size)
            # the model's per-job capacity cost (shared by its tasks; their u_i follow at their next release)
            e0.state.mret.set_stage(d.stage, self._btimes.best_per_job(key, cfg.sizes))
        out: list[JobOutcome] = []
        advance = self._advance
        for e in entries:
            o = advance(e, now, k)
            if o is not None:
                out.append(o)
        if self._queued[k]:
            self._ready.add(k)
        return out

    # ------------------------------------------------------------------ introspection
    def batch_times(self) -> dict[tuple[str, int, int], float]:
        """The batch-time MRET of every (model, stage, size) known so far (empty with batching off)."""
        if self._batching is None:
            return {}
        return self._btimes.table()
