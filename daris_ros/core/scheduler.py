"""The event-driven DARIS scheduler (docs/core_api.md): offline phase + online phase.

The driver (simulator, GPU runtime, ROS node) owns the clock and calls, with batching on or off::

    release(task, now)           -> ReleaseDecision     admission (eqs. 11-12) + migration
    dispatch(now)                -> [Dispatch]          idle streams take the head of the 8-level queue
                                                        (batching: a batch of one model stage)
    complete(dispatch, now, et)  -> [JobOutcome]        MRET update (eq. 1), next stage, accounting
    abort(dispatch, now)                                a dispatch that did not run: its stages re-queued
    next_wakeup()                -> float | None        when to call dispatch without another event

Every event is O(log queue) apart from a migration search, which is O(N_c). Utilization sums
(eqs. 4-7) are kept incrementally in a :class:`UtilizationBook`.

Choices the paper leaves open (see docs/policy.md):

* A job stays in the context it was admitted to for all its stages; migration moves the task, so
  later jobs go to the new context ("zero-delay migration").
* A job whose deadline has already passed keeps running (soft real time) and counts as missed; only
  with ``skip_late`` set (beyond the paper) is a job that has not *started* by ``release + skip_late x D_i``
  skipped instead (docs/policy.md, "Bounded staleness under overload"): checked at ``dispatch``, reported
  by ``take_skipped``, counted in ``TaskStats.skipped``. A started job is never skipped.
* Job ids count releases per task from 0; a rejected release consumes an id too.
* An LP task is active in context k while it has at least one released-but-unfinished job there;
  while active it contributes its current u_i (which follows MRET) to U^{l,a}_k.
* Removing a task lets its queued and running stages finish; they are still accounted.
* Overload+HPA: an admitted HP job holds its task's u_i in U^{h,a}_k from admission until
  max(finish, absolute deadline) (its EDF window), not just until it finishes. Expired windows are
  processed lazily at every ``release``/``complete`` (and by :meth:`Scheduler.expire`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from typing import Any

from daris_ros.core.accounting import PriorityStats, TaskStats, new_response_times
from daris_ros.core.admission import (
    admission_test_eq12,
    hp_admission_test,
    migration_target,
    remaining_utilization_eq11,
)
from daris_ros.core.assignment import min_util_context, populate_contexts_alg1
from daris_ros.core.batch_scheduler import BatchingMixin
from daris_ros.core.batching import BatchAfet, BatchQueue, BatchStats, BatchTimes, SharedStageCost
from daris_ros.core.deadlines import absolute_stage_deadlines
from daris_ros.core.hyperparams import Layout, SchedulerConfig, effective_layout, sm_per_context_eq9
from daris_ros.core.job import (
    Dispatch,
    Job,
    JobOutcome,
    ReleaseDecision,
    new_dispatch,
    new_job_outcome,
    new_release_decision,
)
from daris_ros.core.mret import MretTracker
from daris_ros.core.stage_queue import StageQueue, stage_level
from daris_ros.core.task import Priority, TaskSpec
from daris_ros.core.utilization import (
    ContextUtilization,
    TaskLoad,
    UtilizationBook,
    active_lp_utilization,
    hp_utilization_eq4,
    lp_utilization_eq5,
    task_utilization_eq3,
    total_utilization_eq6,
)

AfetSource = Callable[[TaskSpec], Sequence[float]]
"""Injectable initial estimate: returns the per-stage AFET of a task (len == spec.n_stages)."""

REASON_ADMITTED = "admitted"
REASON_PROBE = "admitted-probe"  # re-probing: one LP job admitted without eq. 12 to measure its MRET again
REASON_HP = "admitted-hp"
REASON_MIGRATED = "migrated"
REASON_REJECTED_LP = "rejected-eq12"
REASON_REJECTED_HPA = "rejected-hpa"
REASON_REJECTED_HOST = "rejected-host"  # an LP release while the host is overloaded (release(host_busy=True))


_INF = math.inf  # the utilization that keeps a context marked down out of every choice

@dataclass(slots=True, eq=False)
class _TaskState:
    spec: TaskSpec
    context: int
    mret: MretTracker | SharedStageCost  # shared by the tasks of a model under batching
    u: float
    stage_map: tuple[tuple[int, ...], ...]
    active: dict[int, int] = field(default_factory=dict)  # context -> unfinished jobs there
    removed: bool = False
    model: str = ""  # the model key: TaskSpec.model, else the task name (Dispatch.model; batching groups by it)
    bkeys: tuple[tuple[str, int], ...] = ()  # batching: the (model, stage) key of each stage
    home: int | None = None  # moved off a failed context: where it goes back to (context_up)
    rejected_in_row: int = 0  # releases rejected since the last admission (reprobe_after)
    probe: bool = False  # re-probing: the next LP release is admitted without eq. 12


# HPA window states of an admitted HP job
_OPEN = 0  # window open, job unfinished
_DONE = 1  # job finished, window still open
_EXPIRED = 2  # window closed, job unfinished


@dataclass(slots=True, eq=False)
class _Entry:
    job: Job
    stage: int
    level: int
    est: float
    state: _TaskState
    ready: float = 0.0  # when the stage became ready (release, or the previous stage's completion)


def _batch_key(e: _Entry) -> tuple[str, int]:
    return e.state.bkeys[e.stage]


class Scheduler(BatchingMixin):
    """DARIS policy core. See docs/core_api.md for the contract and docs/policy.md for the rules.

    One API with batching on and off: :meth:`dispatch` returns :class:`Dispatch` records (one job each with
    batching off; with ``config.batching`` set, ready stages of one (model, stage) of several tasks run as one
    batch, docs/policy.md "Cross-task stage batching"), and :meth:`complete` / :meth:`abort` take them back.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        tasks: Sequence[TaskSpec],
        *,
        afet_source: AfetSource | None = None,
        response_window: int | None = None,
        batch_afet: BatchAfet | None = None,
    ) -> None:
        """Run the offline phase (Algorithm 1) on ``tasks``.

        ``afet_source`` overrides ``TaskSpec.afet`` as the initial per-stage estimate.
        ``response_window`` keeps only the most recent N response times per task and per priority
        (for long-running drivers); the default keeps all of them. Counters are never windowed.
        ``batch_afet(model, stage, size)`` gives the initial batch-time estimates under batching.
        """
        self._config = config
        self._layout: Layout = effective_layout(config)
        n_c, n_s = self._layout.n_contexts, self._layout.n_streams
        self._sm = sm_per_context_eq9(
            self._layout.oversubscription, config.usable_sms, n_c, config.sm_granularity
        )
        self._ws = config.mret_window
        self._afet_source = afet_source
        # level of a stage by [priority][is_last][delayed], from stage_level (computed once)
        def level_of(p: Priority, last: bool, late: bool) -> int:
            return stage_level(p, last, late, no_last=config.no_last,
                               no_prior=config.no_prior, no_fixed=config.no_fixed)

        self._levels: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = tuple(
            (
                (level_of(p, False, False), level_of(p, False, True)),
                (level_of(p, True, False), level_of(p, True, True)),
            )
            for p in Priority
        )
        self._no_staging = config.no_staging
        self._book = UtilizationBook(n_c)
        self._states: dict[str, _TaskState] = {}
        self._stats: dict[str, TaskStats] = {}
        self._response_window = response_window
        self._pstats: dict[Priority, PriorityStats] = {
            p: PriorityStats(priority=p, response_times=new_response_times(response_window)) for p in Priority
        }
        self._batching = config.batching
        self._queues: list[StageQueue[_Entry]] | list[BatchQueue[_Entry]]
        if self._batching is None:
            stage_queues: list[StageQueue[_Entry]] = [StageQueue() for _ in range(n_c)]
            self._queues = stage_queues
        else:
            batch_queues: list[BatchQueue[_Entry]] = [BatchQueue(_batch_key) for _ in range(n_c)]
            self._queues = batch_queues
            self._btimes = BatchTimes(config.mret_window, batch_afet)
            self._shared: dict[str, SharedStageCost] = {}
        self._bstats = BatchStats()  # batching: batches formed, LP holds (batching off: derived, batch_stats)
        self._held: dict[int, float] = {}
        self._wake = float("inf")
        self._qdelay = [0.0, 0.0]  # queueing delay (ready to dispatch start) sum and count per priority (HP, LP)
        self._qcount = [0, 0]
        self._idle: list[list[int]] = [list(range(n_s)) for _ in range(n_c)]
        # per stream: (the dispatch it runs, its entry: one _Entry with batching off, a list of them with batching)
        self._running: list[list[tuple[Dispatch, Any] | None]] = [[None] * n_s for _ in range(n_c)]
        # launch_ahead: the dispatches queued behind the running one, per stream, and the predicted time each
        # stream frees (the predicted finish of its last dispatch)
        self._lanes: list[list[list[tuple[Dispatch, Any]]]] = [[[] for _ in range(n_s)] for _ in range(n_c)]
        self._tail: list[list[float]] = [[0.0] * n_s for _ in range(n_c)]
        self._ahead = config.launch_ahead
        self._ahead_lead = config.ahead_lead
        self._ahead_at = float("inf")  # the earliest tail - ahead_lead of a busy stream with room (launch_ahead)
        self._backlog: list[float] = [0.0] * n_c
        self._outstanding: list[int] = [0] * n_c
        self._queued: list[int] = [0] * n_c
        self._ready: set[int] = set()
        self._hpa = config.hp_admission
        self._down: set[int] = set()  # contexts whose worker is being replaced (context_down / context_up)
        self._reprobes: dict[str, int] = {}
        self._windows: list[tuple[float, int, Job, _TaskState]] = []  # HPA: heap by absolute deadline
        self._window_state: dict[Job, int] = {}
        self._window_seq = 0
        # skip_late (beyond the paper): (skip time, seq, first-stage entry) of admitted jobs, a heap; the jobs
        # skipped since the last take_skipped
        self._skip_late = float(config.skip_late or 0.0)
        self._skips: list[tuple[float, int, _Entry]] = []
        self._skip_seq = 0
        self._skipped_jobs: list[Job] = []

        # offline phase: Algorithm 1 on u_i = afet_i / T_i (eq. 10)
        states: list[_TaskState] = []
        for spec in tasks:
            if spec.name in self._states:
                raise ValueError(f"duplicate task name {spec.name!r}")
            st = self._new_state(spec, context=0)
            self._states[spec.name] = st
            states.append(st)
        placement = populate_contexts_alg1([(s.spec.name, s.spec.priority, s.u) for s in states], n_c)
        for st in states:
            st.context = placement[st.spec.name]
            self._book.add_task(st.spec.name, st.context, st.spec.priority, st.u)
            self._stats.setdefault(st.spec.name, self._new_task_stats(st.spec))

    # ------------------------------------------------------------------ helpers
    def _new_state(self, spec: TaskSpec, context: int) -> _TaskState:
        afet = tuple(float(a) for a in (self._afet_source(spec) if self._afet_source else spec.afet))
        if len(afet) != spec.n_stages:
            raise ValueError(f"{spec.name}: AFET source gave {len(afet)} values for {spec.n_stages} stages")
        if self._no_staging:
            afet = (sum(afet),)
            stage_map: tuple[tuple[int, ...], ...] = (tuple(range(spec.n_stages)),)
        else:
            stage_map = tuple((j,) for j in range(spec.n_stages))
        model = spec.model or spec.name
        if self._batching is None:
            tracker: MretTracker | SharedStageCost = MretTracker(afet, self._ws)
            return _TaskState(spec, context, tracker, task_utilization_eq3(tracker.total, spec.period), stage_map,
                              model=model)
        shared = self._shared.get(model)
        bkeys = tuple((model, j) for j in range(len(afet)))
        if shared is None or shared.n_stages != len(afet):
            shared = self._shared[model] = SharedStageCost(afet, self._ws)
            sizes = self._batching.sizes
            for j, (key, a) in enumerate(zip(bkeys, afet, strict=True)):
                self._btimes.set_stage_afet(key, a)
                cost = self._btimes.best_per_job(key, sizes)
                if cost != a:  # batch-time estimates were given (batch_afet)
                    shared.set_stage(j, cost)
        return _TaskState(spec, context, shared, task_utilization_eq3(shared.total, spec.period), stage_map,
                          model=model, bkeys=bkeys)

    def _new_task_stats(self, spec: TaskSpec) -> TaskStats:
        return TaskStats(
            name=spec.name, priority=spec.priority, response_times=new_response_times(self._response_window)
        )

    def _state(self, task: str) -> _TaskState:
        try:
            return self._states[task]
        except KeyError:
            raise KeyError(f"unknown task {task!r}") from None

    def _set_u(self, st: _TaskState, u: float) -> None:
        if u == st.u:
            return
        st.u = u
        name, p = st.spec.name, st.spec.priority
        self._book.add_task(name, st.context, p, u)
        for k in st.active:
            self._book.activate(name, k, p, u)

    def _release_activity(self, st: _TaskState, k: int) -> None:
        """One job of ``st`` stops counting as active in context k (eq. 7 / HPA bookkeeping)."""
        if st.removed:
            return
        count = st.active[k] - 1
        if count:
            st.active[k] = count
        else:
            del st.active[k]
            self._book.deactivate(st.spec.name, k, st.spec.priority)

    def expire(self, now: float) -> None:
        """HPA only: close the windows of HP jobs whose absolute deadline is ``<= now``.

        A finished job gives its task's utilization back here; an unfinished one gives it back when
        it finishes. ``release`` and ``complete`` call this themselves.
        """
        windows = self._windows
        states = self._window_state
        while windows and windows[0][0] <= now:
            _, _, job, st = _heappop(windows)
            if states[job] == _DONE:
                del states[job]
                self._release_activity(st, job.context)
            else:
                states[job] = _EXPIRED

    def _enqueue(self, job: Job, stage: int, delayed: bool, st: _TaskState) -> _Entry:
        level = self._levels[job.priority][stage == job.n_stages - 1][delayed]
        est = st.mret.stage(stage)
        k = job.context
        e = _Entry(job, stage, level, est, st, job.release)
        self._queues[k].push(level, job.stage_deadlines[stage], job.release, job.task, job.job_id, e)
        self._queued[k] += 1
        self._backlog[k] += est
        self._outstanding[k] += 1
        self._ready.add(k)
        return e

    # ------------------------------------------------------------------ events
    def release(self, task: str, now: float, host_busy: bool = False) -> ReleaseDecision:
        """Online phase for one release of ``task`` at ``now`` (section IV-B1).

        ``host_busy`` (beyond the paper): the driver's host cannot keep up (the runtime: its loop was busy over
        ``lp_host_busy_limit`` of the last second). An LP release is then rejected before eq. 12 (its
        ``REASON_REJECTED_HOST``, counted in ``rejected`` and ``rejected_host``): eqs. 11-12 guard the GPU, and an
        LP job admitted while the host is the bottleneck delays the HP jobs on the host (decode, preprocessing,
        launches) and mostly misses its own deadline. HP releases are not affected; a re-probe waits for a
        release while the host keeps up."""
        st = self._states.get(task)
        if st is None:
            raise KeyError(f"unknown task {task!r}")
        spec = st.spec
        prio = spec.priority
        ts = self._stats[task]
        ps = self._pstats[prio]
        job_id = ts.released
        ts.released += 1
        ps.released += 1
        n_s = self._layout.n_streams
        book = self._book
        k = st.context
        migrated_from: int | None = None
        batching = self._batching
        if batching is not None:  # the shared per-job cost moved since this task's last release
            u = task_utilization_eq3(st.mret.total, spec.period)
            if u != st.u:
                self._set_u(st, u)
        if prio is Priority.HP:
            if self._hpa:
                self.expire(now)
            if self._hpa and not hp_admission_test(book.active_hp(k), st.u, n_s):
                ts.rejected += 1
                ps.rejected += 1
                self._rejected(st)
                return new_release_decision(False, None, k, None, REASON_REJECTED_HPA, job_id)
            reason = REASON_HP
        elif host_busy:
            ts.rejected += 1
            ps.rejected += 1
            ts.rejected_host += 1
            ps.rejected_host += 1
            return new_release_decision(False, None, k, None, REASON_REJECTED_HOST, job_id)
        elif st.probe:
            st.probe = False
            reason = REASON_PROBE
        elif admission_test_eq12(book.active_lp(k), st.u, remaining_utilization_eq11(n_s, book.hp(k))) and (
                batching is None or self._lp_margin_ok(st, k, n_s)):
            reason = REASON_ADMITTED
        else:
            n_c = self._layout.n_contexts
            target = None if n_c == 1 else migration_target(  # one context: nowhere to migrate to
                k, st.u, st.mret.total, now, n_s,
                [book.hp(c) if c not in self._down else _INF for c in range(n_c)],
                [book.active_lp(c) for c in range(n_c)],
                self._backlog,
            )
            if target is not None and batching is not None and not self._lp_margin_ok(st, target, n_s):
                target = None
            if target is None:
                ts.rejected += 1
                ps.rejected += 1
                self._rejected(st)
                return new_release_decision(False, None, k, None, REASON_REJECTED_LP, job_id)
            book.remove_task(task, k, prio)
            book.add_task(task, target, prio, st.u)
            st.context = target
            migrated_from = k
            k = target
            ts.migrations += 1
            ps.migrations += 1
            reason = REASON_MIGRATED
        ts.admitted += 1
        ps.admitted += 1
        st.rejected_in_row = 0
        deadline = spec.relative_deadline
        stage_deadlines = absolute_stage_deadlines(now, st.mret.stages(), deadline)
        job = Job(task, job_id, prio, now, stage_deadlines[-1], k, stage_deadlines, None,
                  len(st.stage_map), spec.n_stages, migrated_from)
        count = st.active.get(k, 0)
        st.active[k] = count + 1
        if count == 0:
            book.activate(task, k, prio, st.u)
        if self._hpa and prio is Priority.HP:
            self._window_seq += 1
            _heappush(self._windows, (job.abs_deadline, self._window_seq, job, st))
            self._window_state[job] = _OPEN
        e = self._enqueue(job, 0, False, st)
        if self._skip_late:
            self._watch_start(e)
        return new_release_decision(True, job, k, migrated_from, reason, job_id)

    def _rejected(self, st: _TaskState) -> None:
        """Re-probing (beyond the paper; ``SchedulerConfig.reprobe_after``): a task rejected on its MRET
        never runs, so eq. 1 never sees a new execution time and the rejection can last for ever. After
        ``reprobe_after`` rejections in a row the task forgets its measurements (eq. 10 tests it on its
        AFET again; the runtime may have refreshed that, Scheduler.refresh_afet), and an LP task's next
        release is admitted as a *probe* without eq. 12, so it is measured afresh even when its AFET is
        the inflated figure (a start-up profile under load): at most one job in ``reprobe_after + 1``
        of a starving task. An HP task (rejected by HPA) only forgets: HPA stays in force for HP. Under
        batching the probe is admitted the same way, but nothing is forgotten: the per-job cost is the
        model's, shared by its tasks (``SharedStageCost.forget``)."""
        n = self._config.reprobe_after
        if not n:
            return
        st.rejected_in_row += 1
        if st.rejected_in_row >= n:
            st.rejected_in_row = 0
            self._reprobes[st.spec.name] = self._reprobes.get(st.spec.name, 0) + 1
            st.probe = st.spec.priority is Priority.LP
            if st.mret.forget():
                self._set_u(st, task_utilization_eq3(st.mret.total, st.spec.period))

    def reprobes(self) -> dict[str, int]:
        """How many times each task forgot its MRET after ``reprobe_after`` rejections in a row."""
        return dict(self._reprobes)

    def _lp_margin_ok(self, st: _TaskState, k: int, n_s: int) -> bool:
        """Batching's optional LP guard: queued + running work / N_s + own cost within a share of D_i."""
        margin = self._batching.lp_admit_margin if self._batching is not None else None
        if margin is None:
            return True
        return self._backlog[k] / n_s + st.mret.total <= margin * st.spec.relative_deadline

    def dispatch(self, now: float) -> list[Dispatch]:
        """Start queued stages on idle streams (lowest stream index first), per context; with
        ``launch_ahead``, then queue the next one behind a busy stream whose predicted free time is near.

        Batching off: each idle stream takes the head of its context's eight-level queue (EDF inside), one
        job per :class:`Dispatch`. Batching on: each takes a batch of one (model, stage) (BatchingMixin).
        Call it after every release / complete / abort, and at :meth:`next_wakeup`.

        With ``skip_late`` set, jobs never dispatched by ``release + skip_late x D_i`` are skipped first
        (:meth:`take_skipped`).
        """
        skips = self._skips
        if skips and skips[0][0] <= now:
            self._skip_due(now)
        if self._batching is not None:
            return self._batched_dispatch(now)
        ready = self._ready
        ahead = self._ahead
        queued = self._queued
        if ahead and now >= self._ahead_at:  # a busy stream's launch-ahead window opens with time, not an event
            ready.update(k for k in range(len(queued)) if queued[k])
        if not ready:
            return []
        if len(ready) == 1:
            contexts: Sequence[int] = (ready.pop(),)
        else:
            contexts = sorted(ready)
            ready.clear()
        out: list[Dispatch] = []
        qdelay, qcount = self._qdelay, self._qcount
        for k in contexts:
            n = queued[k]
            if not n:
                continue
            idle = self._idle[k]
            if idle:
                m = n if n < len(idle) else len(idle)
                queued[k] = n - m
                pop = self._queues[k].pop
                running = self._running[k]
                tails = self._tail[k]
                while m:
                    m -= 1
                    stream = _heappop(idle)
                    level, e = pop()
                    job = e.job
                    stage = e.stage
                    st = e.state
                    if job.start is None:
                        job.start = now
                    pred = now + st.mret.stage(stage)
                    d = new_dispatch((job,), stage, k, stream, 1, st.model, (level,), job.stage_deadlines[stage],
                                     pred, st.stage_map[stage], now, 0)
                    running[stream] = (d, e)
                    tails[stream] = pred
                    p = job.priority
                    qdelay[p] += now - e.ready
                    qcount[p] += 1
                    out.append(d)
            if ahead and queued[k]:
                self._queue_behind(k, now, out)
        if ahead and out:
            self._refresh_ahead()
        return out

    def _queue_behind(self, k: int, now: float, out: list[Dispatch]) -> None:
        """Launch-ahead with batching off: queue the head of context k's queue behind a busy stream of k whose
        predicted free time is at most ``ahead_lead`` away (the earliest such stream), checked against the
        stage's virtual deadline from that predicted start. Only the head is considered, so the paper's order
        is kept: a head that would miss its virtual deadline behind the busy stream but could meet it on a
        stream that frees now stays queued (for that stream), and nothing ranked lower overtakes it."""
        q = self._queues[k]
        queued = self._queued
        while queued[k]:
            picked = self._ahead_stream(k, now)
            if picked is None:
                return
            stream, t_start, behind = picked
            level, e = q.peek()
            job = e.job
            stage = e.stage
            st = e.state
            est = st.mret.stage(stage)
            vdl = job.stage_deadlines[stage]
            if t_start + est > vdl and now + est <= vdl:
                return  # late only behind the busy stream
            q.pop()
            queued[k] -= 1
            if job.start is None:
                job.start = t_start
            pred = t_start + est
            d = new_dispatch((job,), stage, k, stream, 1, st.model, (level,), vdl, pred, st.stage_map[stage],
                             t_start, behind)
            self._lanes[k][stream].append((d, e))
            self._tail[k][stream] = pred
            p = job.priority
            self._qdelay[p] += t_start - e.ready
            self._qcount[p] += 1
            out.append(d)

    def _ahead_stream(self, k: int, now: float) -> tuple[int, float, int] | None:
        """The busy stream of context k with room behind its running dispatch whose predicted free time is
        earliest and at most ``ahead_lead`` away: (stream, that time (or ``now`` if overdue), dispatches on
        it); None if there is none."""
        best: tuple[int, float, int] | None = None
        ahead, lead = self._ahead, self._ahead_lead
        tails = self._tail[k]
        lanes = self._lanes[k]
        for s, run in enumerate(self._running[k]):
            if run is None or len(lanes[s]) >= ahead:
                continue
            t = tails[s]
            if t - lead <= now and (best is None or t < best[1]):
                best = (s, t if t > now else now, 1 + len(lanes[s]))
        return best

    def _refresh_ahead(self) -> None:
        """Recompute the earliest time a busy stream with room behind its running dispatch opens for
        launch-ahead."""
        at = _INF
        ahead, lead = self._ahead, self._ahead_lead
        for running, lanes, tails in zip(self._running, self._lanes, self._tail, strict=True):
            for s, run in enumerate(running):
                if run is not None and len(lanes[s]) < ahead:
                    t = tails[s] - lead
                    if t < at:
                        at = t
        self._ahead_at = at

    def _free_stream(self, d: Dispatch, now: float) -> Any:
        """Free the stream running ``d`` and return its entry (entries with batching); the next dispatch
        queued behind it (launch_ahead) runs from ``now``, and the stream's predicted free time moves up by
        as much as that one starts early. ValueError if the stream does not run ``d``."""
        k, s = d.context, d.stream
        try:
            running = self._running[k]
            run = running[s]
        except (IndexError, TypeError):
            raise ValueError(f"no stream ({k}, {s})") from None
        if run is None or run[0] is not d:
            raise ValueError(f"stream ({k}, {s}) is not running this dispatch"
                             + (" (it is queued behind another: complete a stream's dispatches in order)"
                                if run is not None and any(x[0] is d for x in self._lanes[k][s]) else ""))
        lane = self._lanes[k][s]
        if lane:  # launch_ahead: the next dispatch queued on the stream runs now
            nxt = lane.pop(0)
            running[s] = nxt
            early = nxt[0].start - now
            if early > 0:
                self._tail[k][s] -= early
        else:
            running[s] = None
            _heappush(self._idle[k], s)
        return run[1]

    @staticmethod
    def _exec_time(d: Dispatch, now: float, exec_time: float | None) -> float:
        if exec_time is None:
            return max(0.0, now - d.start)
        if exec_time < 0:
            raise ValueError(f"exec_time must be >= 0, got {exec_time}")
        return exec_time

    def complete(self, d: Dispatch, now: float, exec_time: float | None = None) -> list[JobOutcome]:
        """Dispatch ``d`` finished at ``now`` after ``exec_time`` seconds (default: ``now - d.start``).

        Frees its stream, records the execution time (eq. 1: per task with batching off, per (model, stage,
        size) with batching), enqueues each job's next stage (raised when this one missed its virtual
        deadline) and returns the outcomes of the jobs that finished: with batching off ``[]`` or one.
        Report a stream's dispatches in order (launch_ahead queues several on one stream).
        """
        if self._batching is not None:
            return self._batched_complete(d, now, exec_time)
        k = d.context
        if exec_time is None or exec_time < 0:
            exec_time = self._exec_time(d, now, exec_time)
        e = self._free_stream(d, now)
        if self._ahead:
            self._refresh_ahead()
        if self._queued[k]:
            self._ready.add(k)
        st = e.state
        if not st.removed and st.mret.record(e.stage, exec_time):  # eq. 1
            self._set_u(st, task_utilization_eq3(st.mret.total, st.spec.period))
        outcome = self._advance(e, now, k)
        return [] if outcome is None else [outcome]

    def abort(self, d: Dispatch, now: float) -> None:
        """Dispatch ``d`` did not run (its worker died with it): take it off its stream (running, or queued
        behind another with launch_ahead) and queue every job's stage again, with its level and virtual
        deadline, in its job's context (another one after :meth:`context_down`). Nothing is measured (MRET
        unchanged). Works with batching on and off. Not in the paper: it is how a lost stage is retried."""
        k, s = d.context, d.stream
        try:
            run = self._running[k][s]
        except (IndexError, TypeError):
            raise ValueError(f"no stream ({k}, {s})") from None
        if run is not None and run[0] is d:
            entry = self._free_stream(d, now)
        else:
            lane = self._lanes[k][s]
            for i, queued in enumerate(lane):
                if queued[0] is d:
                    del lane[i]
                    entry = queued[1]
                    self._tail[k][s] -= d.predicted_finish - d.start  # the dispatches after it move up
                    break
            else:
                raise ValueError(f"stream ({k}, {s}) is not running this dispatch")
        if self._ahead:
            self._refresh_ahead()
        entries: list[_Entry] | tuple[_Entry] = entry if self._batching is not None else (entry,)
        outstanding, backlog = self._outstanding, self._backlog
        for e in entries:
            job = e.job
            kq = job.context
            if kq != k:  # the job was moved off k (context_down) while this ran: its stage goes where it is now
                outstanding[k] -= 1
                backlog[k] = backlog[k] - e.est if outstanding[k] else 0.0
                outstanding[kq] += 1
                backlog[kq] += e.est
            self._queues[kq].push(e.level, job.stage_deadlines[e.stage], job.release, job.task, job.job_id, e)
            self._queued[kq] += 1
            self._ready.add(kq)
        if self._queued[k]:
            self._ready.add(k)
        del now  # (an event like the others; re-queueing does not depend on the time)

    def _advance(self, e: _Entry, now: float, k: int) -> JobOutcome | None:
        """Stage ``e`` of its job finished at ``now``: enqueue the next stage, or finish the job."""
        outstanding = self._outstanding
        left = outstanding[k] - 1
        outstanding[k] = left
        self._backlog[k] = self._backlog[k] - e.est if left else 0.0
        st = e.state
        stage = e.stage
        job = e.job
        nxt = stage + 1
        if nxt < job.n_stages:
            # the next stage is raised when this one missed its virtual deadline (same as _enqueue)
            level = self._levels[job.priority][nxt == job.n_stages - 1][now > job.stage_deadlines[stage]]
            est = st.mret.stage(nxt)
            kq = job.context  # k, unless the job was moved off k while this stage ran (context_down)
            self._queues[kq].push(level, job.stage_deadlines[nxt], job.release, job.task, job.job_id,
                                  _Entry(job, nxt, level, est, st, now))
            self._queued[kq] += 1
            self._backlog[kq] += est
            outstanding[kq] += 1
            self._ready.add(kq)
            return None
        # last stage: the job is finished
        self._job_ended(job, st, now)
        response = now - job.release
        met = now <= job.abs_deadline
        ts = self._stats[job.task]
        ps = self._pstats[job.priority]
        ts.completed += 1
        ps.completed += 1
        if not met:
            ts.missed += 1
            ps.missed += 1
        ts.response_times.append(response)
        ps.response_times.append(response)
        return new_job_outcome(job, now, response, met)

    def _job_ended(self, job: Job, st: _TaskState, now: float) -> None:
        """``job`` finished or was skipped at ``now``: it stops counting as active in its context (eq. 7), or
        under HPA when its window closes (its absolute deadline), whichever is later."""
        if job in self._window_state:  # HPA: the job keeps its utilization until its deadline
            self.expire(now)
            if self._window_state[job] == _EXPIRED:
                del self._window_state[job]
                self._release_activity(st, job.context)
            else:
                self._window_state[job] = _DONE
        else:
            self._release_activity(st, job.context)

    # ------------------------------------------------------------------ bounded staleness (skip_late)
    def _watch_start(self, e: _Entry) -> None:
        """skip_late: watch the first-stage entry ``e`` of an admitted job until its skip time
        ``release + skip_late x D_i`` (D_i as frozen at release: ``abs_deadline - release``)."""
        job = e.job
        self._skip_seq += 1
        _heappush(self._skips, (job.release + self._skip_late * (job.abs_deadline - job.release), self._skip_seq, e))

    def _skip_due(self, now: float) -> None:
        """skip_late (beyond the paper; docs/policy.md, "Bounded staleness under overload"): every job never
        dispatched by its skip time ``release + skip_late x D_i <= now`` is skipped: taken out of its
        context's queue, its queued-work bookkeeping and its activity (eqs. 4-7, HPA window) released as at a
        completion, counted in ``TaskStats.skipped`` / ``PriorityStats.skipped`` (not completed, not missed) and
        handed to the driver by :meth:`take_skipped`. A started job (its first stage dispatched once: ``Job.start``
        set, also when that dispatch was aborted and the stage is queued again) is never skipped. An unstarted
        job's first stage is in its context's queue, never in a dispatch: a skipped job is in no queue, lane or
        stream afterwards."""
        skips = self._skips
        due: dict[int, list[_Entry]] = {}
        while skips and skips[0][0] <= now:
            e = _heappop(skips)[2]  # (each job is watched once, from its release)
            if e.job.start is None:  # never dispatched: queued, in its job's (current) context
                due.setdefault(e.job.context, []).append(e)
        outstanding, backlog, queued = self._outstanding, self._backlog, self._queued
        for k, entries in due.items():
            removed = self._queues[k].discard(set(entries))
            if removed != len(entries):  # (a never-dispatched job's first stage is in its job's context's queue)
                raise AssertionError(f"skip_late: {len(entries)} entries due in context {k}, {removed} queued")
            queued[k] -= removed
            for e in entries:
                left = outstanding[k] - 1
                outstanding[k] = left
                backlog[k] = backlog[k] - e.est if left else 0.0
                job = e.job
                self._job_ended(job, e.state, now)
                self._stats[job.task].skipped += 1
                self._pstats[job.priority].skipped += 1
                self._skipped_jobs.append(job)

    def take_skipped(self) -> list[Job]:
        """The jobs skipped (``skip_late``) since the last call, in the order they were skipped; the driver drops
        what it holds for them (a skipped job has no result). Always empty with ``skip_late`` off. A driver that
        sets ``skip_late`` calls this after ``dispatch`` (the list grows until it does)."""
        out = self._skipped_jobs
        if not out:
            return []
        self._skipped_jobs = []
        return out

    # ------------------------------------------------------------------ task set changes
    def add_task(self, spec: TaskSpec) -> None:
        """Add a task at run time; it goes to the context with the least total utilization (minUtil)."""
        if spec.name in self._states:
            raise ValueError(f"duplicate task name {spec.name!r}")
        n_c = self._layout.n_contexts
        st = self._new_state(spec, context=0)
        st.context = min_util_context([self._book.total(k) if k not in self._down else _INF for k in range(n_c)])
        self._states[spec.name] = st
        self._book.add_task(spec.name, st.context, spec.priority, st.u)
        ts = self._stats.setdefault(spec.name, self._new_task_stats(spec))
        ts.priority = spec.priority

    def remove_task(self, name: str) -> None:
        """Remove a task. Its queued and running stages still run and are accounted."""
        st = self._state(name)
        del self._states[name]
        st.removed = True
        p = st.spec.priority
        self._book.remove_task(name, st.context, p)
        for k in st.active:
            self._book.deactivate(name, k, p)
        st.active.clear()

    def update_task(
        self,
        name: str,
        *,
        period: float | None = None,
        priority: Priority | None = None,
        deadline: float | None = None,
    ) -> None:
        """Change T_i, p_i or D_i. Jobs already released keep their deadlines and priority."""
        st = self._state(name)
        old = st.spec
        new = replace(  # validates
            old,
            period=old.period if period is None else period,
            priority=old.priority if priority is None else Priority.parse(priority),
            deadline=old.deadline if deadline is None else deadline,
        )
        if new.priority is not old.priority:
            self._book.remove_task(name, st.context, old.priority)
            for k in st.active:
                self._book.deactivate(name, k, old.priority)
            st.spec = new
            self._book.add_task(name, st.context, new.priority, st.u)
            for k in st.active:
                self._book.activate(name, k, new.priority, st.u)
            self._stats[name].priority = new.priority
        st.spec = new
        self._set_u(st, task_utilization_eq3(st.mret.total, new.period))

    # ------------------------------------------------------------------ context faults
    def context_down(self, k: int, now: float) -> dict[str, int]:
        """Context ``k`` lost its worker (it is being replaced): move its work to the other contexts.

        Not in the paper (its contexts never fail); the rules reuse its own. HP tasks of k are
        reassigned first, each to ``minUtil`` of the surviving contexts (Algorithm 1, lines 3-7); then
        LP tasks migrate, each to the surviving context that passes eq. 12 with the earliest predicted
        finish (the migration rule of section IV-B1), or to ``minUtil`` when none passes (its next
        releases are then admitted or rejected there as usual). Every move counts as a migration.
        Stages queued on k move to their job's new context with their level and virtual deadline;
        a stage running on k stays accounted there until ``complete`` (its next stage goes to the new
        context). Until :meth:`context_up`, no release, migration or new task goes to k.

        With a single context (or every other context down too) nothing can move: the work waits for
        the replacement. Returns ``{task: new context}`` of the tasks moved. Works with batching on and off
        (with batching, an LP target must also pass the queue guard ``lp_admit_margin``, as at a release;
        a batch running or queued behind another on k keeps its accounting there until ``complete`` or
        ``abort``).
        """
        n_c = self._layout.n_contexts
        if not 0 <= k < n_c:
            raise ValueError(f"no context {k} (there are {n_c})")
        if k in self._down:
            return {}
        self._down.add(k)
        return self._evacuate(k, now)

    def _evacuate(self, k: int, now: float) -> dict[str, int]:
        """Move the tasks, queued stages and running jobs of the down context k to the contexts that are up."""
        n_c = self._layout.n_contexts
        if len(self._down) == n_c:
            return {}
        book = self._book
        moves: dict[str, int] = {}
        on_k = [st for st in self._states.values() if st.context == k]
        totals = [book.total(c) if c not in self._down else _INF for c in range(n_c)]
        n_s = self._layout.n_streams
        for st in sorted(on_k, key=lambda s: s.spec.priority):  # HP (0) before LP (1), given order kept
            if st.spec.priority is Priority.HP:
                target = min_util_context(totals)
            else:
                lp_target = migration_target(
                    k, st.u, st.mret.total, now, n_s,
                    [book.hp(c) if c not in self._down else _INF for c in range(n_c)],
                    [book.active_lp(c) for c in range(n_c)], self._backlog)
                if lp_target is not None and self._batching is not None and not self._lp_margin_ok(st, lp_target, n_s):
                    lp_target = None
                target = min_util_context(totals) if lp_target is None else lp_target
            self._move_task(st, target)
            totals[target] += st.u
            moves[st.spec.name] = target
            if st.home is None:
                st.home = k
        # queued stages follow their job's task; a running stage's job moves too (its next stage goes there)
        for level, e in self._queues[k].drain():
            self._queued[k] -= 1
            self._outstanding[k] -= 1
            self._backlog[k] -= e.est
            target = self._job_target(e.state, k)
            self._move_job(e.job, e.state, target)
            self._queues[target].push(level, e.job.stage_deadlines[e.stage], e.job.release, e.job.task,
                                      e.job.job_id, e)
            self._queued[target] += 1
            self._outstanding[target] += 1
            self._backlog[target] += e.est
            self._ready.add(target)
        if not self._outstanding[k]:
            self._backlog[k] = 0.0
        # (a job may run on another context and still belong to k)
        for e in self._entries_on_streams():
            if e.job.context == k:
                self._move_job(e.job, e.state, self._job_target(e.state, k))
        return moves

    def _entries_on_streams(self) -> list[_Entry]:
        """The entries of every dispatch running or queued behind another (launch_ahead) on a stream."""
        runs = [run for running in self._running for run in running if run is not None]
        runs += [x for lanes in self._lanes for lane in lanes for x in lane]
        if self._batching is None:
            return [run[1] for run in runs]
        return [e for run in runs for e in run[1]]

    def context_up(self, k: int, now: float) -> dict[str, int]:
        """Context ``k`` serves again: the tasks moved off it by :meth:`context_down` go back (their
        jobs in flight finish where they are); work stranded on contexts that are still down (when every
        context was down) moves as in :meth:`context_down`. Returns ``{task: context}`` of the moves."""
        if k not in self._down:
            return {}
        self._down.discard(k)
        moves: dict[str, int] = {}
        for st in self._states.values():
            if st.home == k:
                st.home = None
                if st.context != k:
                    self._move_task(st, k)
                    moves[st.spec.name] = k
        if self._queued[k]:
            self._ready.add(k)
        for c in sorted(self._down):  # work stranded while every context was down
            moves.update(self._evacuate(c, now))
        return moves

    @property
    def contexts_down(self) -> frozenset[int]:
        """Contexts marked down by :meth:`context_down` and not yet back."""
        return frozenset(self._down)

    def _job_target(self, st: _TaskState, k: int) -> int:
        """Where a job of ``st`` caught on the failing context k goes: its task's context, if that is up."""
        if st.context not in self._down:
            return st.context
        n_c = self._layout.n_contexts
        return min_util_context([self._book.total(c) if c not in self._down else _INF for c in range(n_c)])

    def _move_task(self, st: _TaskState, target: int) -> None:
        """Assign ``st`` to ``target`` for its future releases (its jobs in flight are not moved here)."""
        name, p = st.spec.name, st.spec.priority
        if st.removed or st.context == target:
            return
        self._book.remove_task(name, st.context, p)
        self._book.add_task(name, target, p, st.u)
        st.context = target
        self._stats[name].migrations += 1
        self._pstats[p].migrations += 1

    def _move_job(self, job: Job, st: _TaskState, target: int) -> None:
        """Move one unfinished job (its activity, eq. 7 / HPA) from its context to ``target``."""
        old = job.context
        if old == target:
            return
        job.context = target
        if st.removed:
            return
        self._release_activity(st, old)
        count = st.active.get(target, 0)
        st.active[target] = count + 1
        if count == 0:
            self._book.activate(st.spec.name, target, st.spec.priority, st.u)

    def set_mret_window(self, ws: int) -> None:
        """Change ws (eqs. 1-2) for every task; each keeps its most recent ``ws`` measurements."""
        if ws < 1:
            raise ValueError(f"window size ws must be >= 1, got {ws}")
        self._ws = ws
        if self._batching is not None:
            self._btimes.set_window(ws)
        for st in self._states.values():
            if st.mret.set_window(ws):
                self._set_u(st, task_utilization_eq3(st.mret.total, st.spec.period))

    # ------------------------------------------------------------------ introspection
    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def layout(self) -> Layout:
        """Effective N_c x N_s after the policy (STR: 1 context; MPS: 1 stream per context)."""
        return self._layout

    @property
    def mret_window(self) -> int:
        return self._ws

    def sm_per_context(self) -> int:
        """Eq. 9, from ``config.usable_sms`` (``sm_limit`` SMs, or the whole device)."""
        return self._sm

    def context_of(self, task: str) -> int:
        """ctx_i(t)."""
        return self._state(task).context

    def mret(self, task: str) -> float:
        """Eq. 2: mret_i(t)."""
        return self._state(task).mret.total

    def measured_stages(self, task: str) -> tuple[bool, ...]:
        """Per (scheduling) stage: True once eq. 1 is based on the task's own measurements."""
        return self._state(task).mret.measured()

    def refresh_afet(self, task: str, afet: Sequence[float]) -> None:
        """Replace a task's initial estimate for the stages it has not measured yet (eq. 10 with a newer AFET).

        An LP task rejected from the start never runs, so eq. 1 never replaces its start-up AFET; a runtime
        that knows better (the same model's stages measured in other tasks) hands it in here, and the task's
        utilization (eq. 3) and its context's sums (eqs. 4-7) follow.
        """
        st = self._state(task)
        if self._no_staging and len(afet) != 1:
            afet = (sum(afet),)
        if st.mret.set_afet(afet):
            self._set_u(st, task_utilization_eq3(st.mret.total, st.spec.period))

    def stage_mrets(self, task: str) -> tuple[float, ...]:
        """Eq. 1 for every (scheduling) stage of the task."""
        return self._state(task).mret.stages()

    def task_utilization(self, task: str) -> float:
        """Eq. 3 (eq. 10 before any measurement)."""
        return self._state(task).u

    def tasks(self) -> list[TaskSpec]:
        return [st.spec for st in self._states.values()]

    def spec(self, task: str) -> TaskSpec:
        return self._state(task).spec

    def utilization(self, context: int) -> ContextUtilization:
        """Eqs. 4-7 for ``context`` from the incremental sums."""
        return self._book.context(context)

    def utilization_from_scratch(self, context: int) -> ContextUtilization:
        """Eqs. 4-7 recomputed from every task's state (O(N)); equals :meth:`utilization`."""
        loads = [TaskLoad(st.context, st.spec.priority, st.u) for st in self._states.values()]
        active = [TaskLoad(k, st.spec.priority, st.u) for st in self._states.values() for k in st.active]
        hp = hp_utilization_eq4(loads, context)
        lp = lp_utilization_eq5(loads, context)
        return ContextUtilization(
            total=total_utilization_eq6(hp, lp),
            hp=hp,
            lp=lp,
            active_lp=active_lp_utilization(active, context),
            active_hp=hp_utilization_eq4(active, context),
        )

    def backlog(self, context: int) -> float:
        """Estimated work (sum of stage MRETs) queued or running in ``context``."""
        return self._backlog[context]

    def queue_length(self, context: int) -> int:
        return len(self._queues[context])

    def queued(self, context: int) -> list[tuple[int, Job, int]]:
        """``(level, job, stage)`` of every queued stage of ``context`` in dequeue order."""
        return [(level, e.job, e.stage) for level, e in self._queues[context].items()]

    def running(self, context: int) -> list[Dispatch]:
        """The dispatches running on the streams of ``context`` (not those queued behind them)."""
        return [r[0] for r in self._running[context] if r is not None]

    def queued_behind(self, context: int) -> list[Dispatch]:
        """The dispatches queued behind a running one on the streams of ``context`` (launch_ahead), per stream
        in order."""
        return [x[0] for lane in self._lanes[context] for x in lane]

    def idle_streams(self, context: int) -> int:
        return len(self._idle[context])

    def next_wakeup(self) -> float | None:
        """When :meth:`dispatch` must be called next without another event (None: not before one): a waiting
        LP batch must be dispatched (batching, ``lp_slack``), or (``launch_ahead``) a busy stream's window for
        queueing the next dispatch behind its running one opens while stages are queued in its context."""
        wake = self._wake if self._held else None
        ahead = self._ahead
        if ahead:
            lead = self._ahead_lead
            for k, n in enumerate(self._queued):
                if not n or self._idle[k]:
                    continue
                lanes, tails = self._lanes[k], self._tail[k]
                for s, run in enumerate(self._running[k]):
                    if run is not None and len(lanes[s]) < ahead:
                        t = tails[s] - lead
                        if wake is None or t < wake:
                            wake = t
        return wake

    def batch_stats(self) -> BatchStats:
        """Dispatches as batches: counts, sizes, padding, LP holds and the mean queueing delay per priority
        (ready to dispatch start). With batching off every dispatch is a batch of 1."""
        out = self._bstats.copy()
        if self._batching is None:
            n = sum(self._qcount)
            out.batches = out.jobs = out.slots = n
            out.by_size = {1: n} if n else {}
        for p in Priority:
            out.queue_delay[p.name] = self._qdelay[p]
            out.queue_count[p.name] = self._qcount[p]
        return out

    def outstanding_stages(self) -> int:
        """Stages queued or running, over all contexts."""
        return sum(self._outstanding)

    def task_stats(self) -> dict[str, TaskStats]:
        """Copies of the per-task counters (tasks removed at run time included)."""
        return {name: ts.copy() for name, ts in self._stats.items()}

    def priority_stats(self) -> dict[Priority, PriorityStats]:
        """Copies of the per-priority counters."""
        return {p: ps.copy() for p, ps in self._pstats.items()}
