"""Central admission and migration for drivers whose per-context stage queues run elsewhere.

The ``mps`` backend's worker-side mode (``MpsBackend.send_job``) keeps each context's 8-level EDF stage
queue inside the worker process that owns the context; only admission (eqs. 11-12) and migration are
decided centrally, and a job's stages are accounted when the job completes (its MRET samples arrive with
it). :class:`CentralAdmission` is that central part, built from the policy core's public pieces
(Algorithm 1, eqs. 3/11/12, migration target, eq. 8 stage deadlines, MRET tracker, utilization book)
with the same rules as :meth:`daris_ros.core.Scheduler.release`, minus HP admission (Overload+HPA).

Differences from the core's own accounting, all from job-level bookkeeping: a context's backlog (for the
migration choice) counts a job's whole MRET from admission to completion, not stage by stage; MRET
samples of a job's stages are recorded when the job completes. A core API for this
(``Scheduler.release`` without queueing + ``complete_job(job, now, stage_times)``) would remove this
module; see docs/gpu_runtime.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daris_ros.core import (
    MretTracker,
    Priority,
    PriorityStats,
    SchedulerConfig,
    TaskSpec,
    TaskStats,
    UtilizationBook,
    absolute_stage_deadlines,
    admission_test_eq12,
    effective_layout,
    migration_target,
    populate_contexts_alg1,
    remaining_utilization_eq11,
    task_utilization_eq3,
)
from daris_ros.core.accounting import new_response_times


@dataclass(slots=True, eq=False)
class _State:
    spec: TaskSpec
    context: int
    mret: MretTracker
    u: float
    active: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class CentralJob:
    """An admitted job: where it runs and its absolute virtual stage deadlines."""

    task: str
    job_id: int
    priority: Priority
    context: int
    release: float
    deadlines: tuple[float, ...]
    est: float  # the task's MRET at admission (counted in the context's backlog until completion)
    migrated_from: int | None = None


class CentralAdmission:
    def __init__(self, config: SchedulerConfig, tasks: Sequence[TaskSpec]) -> None:
        if config.hp_admission:
            raise ValueError("CentralAdmission does not implement HP admission (Overload+HPA)")
        layout = effective_layout(config)
        self.n_contexts, self.n_streams = layout.n_contexts, layout.n_streams
        self.config = config
        self._book = UtilizationBook(self.n_contexts)
        self._states: dict[str, _State] = {}
        self._backlog = [0.0] * self.n_contexts
        self.task_stats: dict[str, TaskStats] = {}
        self.priority_stats = {p: PriorityStats(priority=p, response_times=new_response_times()) for p in Priority}
        for spec in tasks:
            afet = (sum(spec.afet),) if config.no_staging else spec.afet
            mret = MretTracker(afet, config.mret_window)
            self._states[spec.name] = _State(spec, 0, mret, task_utilization_eq3(mret.total, spec.period))
            self.task_stats[spec.name] = TaskStats(name=spec.name, priority=spec.priority,
                                                   response_times=new_response_times())
        placement = populate_contexts_alg1([(n, s.spec.priority, s.u) for n, s in self._states.items()],
                                           self.n_contexts)
        for name, st in self._states.items():
            st.context = placement[name]
            self._book.add_task(name, st.context, st.spec.priority, st.u)

    def release(self, task: str, now: float) -> CentralJob | None:
        """Admit (HP always; LP by eq. 12 in its context, else migrated to the context with the earliest
        predicted finish that passes eq. 12) or reject (None)."""
        st = self._states[task]
        prio = st.spec.priority
        ts, ps = self.task_stats[task], self.priority_stats[prio]
        job_id = ts.released
        ts.released += 1
        ps.released += 1
        book, k, n_s = self._book, st.context, self.n_streams
        migrated = None
        if prio is Priority.LP and not admission_test_eq12(book.active_lp(k), st.u,
                                                          remaining_utilization_eq11(n_s, book.hp(k))):
            target = migration_target(k, st.u, st.mret.total, now, n_s,
                                      [book.hp(c) for c in range(self.n_contexts)],
                                      [book.active_lp(c) for c in range(self.n_contexts)], self._backlog)
            if target is None:
                ts.rejected += 1
                ps.rejected += 1
                return None
            book.remove_task(task, k, prio)
            book.add_task(task, target, prio, st.u)
            st.context, migrated, k = target, k, target
            ts.migrations += 1
            ps.migrations += 1
        ts.admitted += 1
        ps.admitted += 1
        count = st.active.get(k, 0)
        st.active[k] = count + 1
        if count == 0:
            book.activate(task, k, prio, st.u)
        est = st.mret.total
        self._backlog[k] += est
        deadlines = absolute_stage_deadlines(now, st.mret.stages(), st.spec.relative_deadline)
        return CentralJob(task, job_id, prio, k, now, deadlines, est, migrated)

    def complete(self, job: CentralJob, now: float, stage_times: Sequence[float] | None) -> bool:
        """Account a finished job (``stage_times``: MRET samples of its stages; None for a failed job).
        Returns whether it met its deadline."""
        st = self._states[job.task]
        if stage_times:
            changed = False
            for j, et in enumerate(stage_times[:st.mret.n_stages]):
                changed = st.mret.record(j, et) or changed  # eq. 1
            if changed:
                u = task_utilization_eq3(st.mret.total, st.spec.period)
                if u != st.u:
                    st.u = u
                    self._book.add_task(job.task, st.context, st.spec.priority, u)
                    for c in st.active:
                        self._book.activate(job.task, c, st.spec.priority, u)
        k = job.context
        self._backlog[k] = max(0.0, self._backlog[k] - job.est)
        count = st.active[k] - 1
        if count:
            st.active[k] = count
        else:
            del st.active[k]
            self._book.deactivate(job.task, k, st.spec.priority)
        met = now <= job.deadlines[-1] and stage_times is not None
        for s in (self.task_stats[job.task], self.priority_stats[job.priority]):
            s.completed += 1
            s.missed += int(not met)
            s.response_times.append(now - job.release)
        return met
