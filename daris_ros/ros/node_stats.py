"""One stats period of the scheduler node: its ``daris/stats`` message and its ``/diagnostics`` array, built from
an engine snapshot.

:class:`StatsReport` keeps what a period needs from the one before (completed jobs for JPS, the counters whose
growth a task's diagnostic judges, the worker faults seen); everything else comes from the snapshot, the settings
and the engine's read-only figures (memory, faults, feasibility). The node only publishes what it returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Header

from daris_ros.core import FeasibilityReport
from daris_ros.msg import SchedulerStats
from daris_ros.ros.messages import (
    ContextRow,
    DiagnosticThresholds,
    TaskRow,
    context_stats_msg,
    diagnostic_array,
    priority_stats_msg,
    scheduler_diagnostic,
    scheduler_stats_msg,
    task_diagnostic,
    task_stats_msg,
)
from daris_ros.runtime.backends.base import SmCounts
from daris_ros.runtime.engine import Engine
from daris_ros.runtime.snapshot import EngineSnapshot
from daris_ros.settings import SchedulerSettings, TaskSettings


@dataclass(slots=True)
class _TaskPeriod:
    """A task's figures at the previous stats message."""

    completed: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the counters its diagnostic judges by their growth


def thresholds_of(s: SchedulerSettings) -> DiagnosticThresholds:
    return DiagnosticThresholds(s.miss_rate_warn, s.miss_rate_error, s.rejection_rate_warn, s.stale_warn_periods)


class StatsReport:
    """Builds each stats period's messages; one per configured engine (a new one at every configure)."""

    def __init__(self, settings: SchedulerSettings, started: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.thresholds = thresholds_of(settings)  # settable at run time (miss_rate_warn, ...)
        self._clock = clock
        self._started = clock() if started is None else started  # the node's start: its uptime
        self._last_time = self._started
        self._tasks: dict[str, _TaskPeriod] = {}
        self._worker_faults = 0

    def task_rows(self, snap: EngineSnapshot, tasks: Mapping[str, TaskSettings]) -> list[TaskRow]:
        """Current figures per task; JPS over the time since the previous call."""
        now = self._clock()
        dt = max(now - self._last_time, 1e-9)
        self._last_time = now
        rows = []
        for name, t in tasks.items():
            ts = snap.tasks.get(name)
            intake = snap.intake.get(name)
            if ts is None or intake is None:
                continue
            counters, pending = intake
            period = self._tasks.setdefault(name, _TaskPeriod())
            jps = (ts.completed - period.completed) / dt
            period.completed = ts.completed
            rows.append(TaskRow(
                task=name, topic=t.topic, model=t.model, priority=t.priority,
                context=snap.context_of.get(name, 0), period=t.period, deadline=t.deadline,
                frames=counters.frames, superseded=counters.superseded,
                released=ts.released, admitted=ts.admitted, rejected=ts.rejected,
                completed=ts.completed, missed=ts.missed, stale=counters.stale,
                dropped=counters.dropped_total, migrations=ts.migrations, jps=jps,
                miss_rate=ts.dmr, p50=ts.p50, p99=ts.p99, max=ts.max_response, mret=snap.mret.get(name, 0.0),
                pending=pending, frame_id_changes=counters.frame_id_changes,
                drop_reasons=tuple(sorted(counters.dropped.items())), releases_skipped=counters.releases_skipped,
                frame_age_last=counters.age_last, frame_age_mean=counters.age_mean, frame_age_max=counters.age_max,
                frame_age_over_period=counters.age_over_period, intake_lag_mean=counters.lag_mean,
                intake_lag_max=counters.lag_max, skipped=ts.skipped, rejected_host=ts.rejected_host))
        for gone in set(self._tasks) - set(tasks):
            del self._tasks[gone]
        return rows

    def info(self, snap: EngineSnapshot, engine: Engine, lifecycle_state: str) -> dict[str, object]:
        """The node-wide figures of SchedulerStats and the scheduler's diagnostic."""
        s = self.settings
        mem = engine.memory()
        loop = snap.loop
        return {"lifecycle_state": lifecycle_state,
                "policy": s.policy, "backend": s.backend, "device": s.device, "n_contexts": s.n_contexts,
                "n_streams": s.n_streams, "oversubscription": s.oversubscription,
                "sm_per_context": snap.sm_per_context, "sm_limit": snap.sm_limit, "usable_sms": snap.usable_sms,
                "uptime": self._clock() - self._started,
                # bounded-queue evidence: jobs admitted and unfinished, stages queued (per context) or running
                "in_flight_jobs": snap.in_flight_jobs, "outstanding_stages": snap.outstanding_stages,
                "queued_stages": ",".join(str(q) for q in snap.queued),
                "contexts_down": ",".join(str(k) for k in sorted(snap.contexts_down)) or "none",
                # tasks that forgot stale MRETs after reprobe_after rejections in a row, and how often
                "reprobes": ",".join(f"{t}:{n}" for t, n in sorted(snap.reprobes.items())) or "none",
                **({"mps_daemon_restarts": snap.daemon_restarts} if snap.daemon_restarts is not None else {}),
                "memory_bytes_by_context": ",".join(str(b) for b in mem.bytes),
                "memory_source": mem.source + (" (shared by all contexts)" if mem.shared else ""),
                # the engine loop's own cost: thread CPU time per release (decode, admission, preprocessing,
                # dispatch, launch, completion and post-processing included)
                "engine_releases": loop.releases, "engine_host_us_per_release": round(loop.host_us_per_release, 1),
                # its busy share of wall time over about the last second (lp_host_busy_limit compares with it)
                "engine_loop_busy_share": round(loop.busy_share, 3),
                **(batch_info(snap) if s.batching else {}),
                **engine.faults.summary()}

    @staticmethod
    def context_rows(snap: EngineSnapshot, engine: Engine, task_names: list[str]) -> list[ContextRow]:
        """Per context: state, placement, utilization (eqs. 4, 5, 7), queue and memory."""
        mem = engine.memory()
        backend = engine.backend
        sm = backend.sm_counts() if isinstance(backend, SmCounts) else []
        n_c = len(snap.utilization)
        names: dict[int, list[str]] = {k: [] for k in range(n_c)}
        for name in task_names:
            if name in snap.context_of:
                names[snap.context_of[name]].append(name)
        return [ContextRow(context=k, up=k not in snap.contexts_down, sm_count=sm[k] if k < len(sm) else 0,
                           task_names=tuple(names[k]), hp=u.hp, lp=u.lp, active_lp=u.active_lp,
                           queued=snap.queued[k], memory_bytes=mem.bytes[k] if k < len(mem.bytes) else 0)
                for k, u in enumerate(snap.utilization)]

    def messages(self, snap: EngineSnapshot, engine: Engine, tasks: Mapping[str, TaskSettings], *, node: str,
                 header: Header, lifecycle_state: str, feasibility_at_start: FeasibilityReport | None
                 ) -> tuple[SchedulerStats, DiagnosticArray]:
        """This period's SchedulerStats and /diagnostics (the scheduler's status first, then one per task)."""
        rows = self.task_rows(snap, tasks)
        info = self.info(snap, engine, lifecycle_state)
        percentiles = {p.name: {"p50": ps.p50, "p99": ps.p99, "max": ps.max_response}
                       for p, ps in snap.priorities.items()}
        nan = {"p50": math.nan, "p99": math.nan, "max": math.nan}
        priorities = [priority_stats_msg(prio, [r for r in rows if r.priority == prio], percentiles.get(prio, nan))
                      for prio in ("HP", "LP")]
        mem = engine.memory()
        models = {engine.model_label(k): v for k, v in engine.model_bytes.items()}
        stats = scheduler_stats_msg(header, node, info, [task_stats_msg(r) for r in rows], priorities,
                                    [context_stats_msg(c) for c in self.context_rows(snap, engine, list(tasks))],
                                    mem.source, mem.shared, models)
        device = self.settings.device
        statuses = []
        for r in rows:
            period = self._tasks[r.task]
            counts = {"stale": r.stale, "released": r.released, "rejected": r.rejected, "skipped": r.skipped,
                      "rejected_host": r.rejected_host,
                      "dropped": r.dropped, "frame_id_changes": r.frame_id_changes,
                      "releases_skipped": r.releases_skipped, "frame_age_over_period": r.frame_age_over_period,
                      **{f"dropped.{k}": v for k, v in r.drop_reasons}}
            delta = {k: v - period.counts.get(k, 0) for k, v in counts.items()}
            period.counts = counts
            statuses.append(task_diagnostic(node, device, r, delta, self.thresholds,
                                            skip_late=self.settings.skip_late))
        faults = engine.faults.worker_faults
        scheduler = scheduler_diagnostic(node, device, info, statuses, new_worker_faults=faults - self._worker_faults,
                                         feasibility=engine.feasibility(), feasibility_at_start=feasibility_at_start)
        self._worker_faults = faults
        if lifecycle_state != "active":  # inactive: configured, nothing released
            scheduler.message = f"{lifecycle_state}: no releases" + (
                f"; {scheduler.message}" if scheduler.message != "OK" else "")
        return stats, diagnostic_array(header, [scheduler, *statuses])


def batch_info(snap: EngineSnapshot) -> dict[str, Any]:
    """Cross-task batching since start: batches run, jobs per batch, padded share of the batch slots, and batches per
    size."""
    bs = snap.batch
    return {"batches": bs.batches, "mean_batch": round(bs.mean_batch, 2), "batch_padding": round(bs.padding, 4),
            "batches_by_size": ",".join(f"{k}:{v}" for k, v in sorted(bs.by_size.items())) or "none"}
