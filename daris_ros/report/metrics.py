"""Per-task and per-priority figures of one run, computed from :class:`~daris_ros.report.extract.RunData`.

Where each number comes from:

- **from the results** (one InferenceResult per completed job): ``completed`` (results recorded),
  ``missed`` (``met`` false), response time p50 / p99 / max / mean (nearest rank, seconds),
  execution time, the run window and ``jps``;
- **from the node's counters** (the last SchedulerStats message, cumulative since the node started):
  ``frames``, ``superseded``, ``released``, ``admitted``, ``rejected``, ``dropped``, ``migrations``;
  ``pending`` is the node's own count when its stats carry one (else frames - released - superseded -
  dropped, see below); ``stale_total`` is the node's own stale count, which also counts the periods
  before the first frame and after the last one; ``stale`` is the increase of that count over the
  task's *active* span: from the last stats message before its first frame arrived (or the first stats
  message) to the first one that already shows its final counts (frames, releases, completions). It is
  exact up to the periods within one stats period at either end (use a short ``stats_period``);
- **from the input side** (when known): frames published per camera topic (``daris_ros.replay``
  metadata of a ``daris-replay`` bag) and recorded camera headers (stamp check).

Definitions: DMR = (missed + skipped) / admitted (the paper's "missed deadlines to accepted jobs"; a job
skipped unstarted under overload, ``skip_late``, lost its deadline too and has no result; missed / completed
when the bag has no stats); JPS = completed / window, where the window runs from the first release to
the last finish over all results of the run (the same window for every task); ``skipped`` is the node's
count (0 in bags of nodes that do not publish it); ``in_flight`` = admitted - completed - skipped (node
counters); ``pending`` = 0 or 1 (a frame no release has taken yet). Every frame the node received ends in
exactly one of: met, missed, skipped, rejected, superseded, dropped, in flight, pending.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from daris_ros.core.accounting import percentile

from .extract import ResultRecord, RunData, StatsSnapshot, TaskSnapshot

PRIORITIES: tuple[str, ...] = ("HP", "LP")


@dataclass(slots=True)
class ResponseFigures:
    """Response-time percentiles in seconds (NaN without results)."""

    p50: float = math.nan
    p99: float = math.nan
    max: float = math.nan
    mean: float = math.nan

    @classmethod
    def of(cls, values: Sequence[float]) -> ResponseFigures:
        if not values:
            return cls()
        return cls(percentile(values, 50.0), percentile(values, 99.0), max(values), math.fsum(values) / len(values))


@dataclass(slots=True)
class TaskFigures:
    task: str
    priority: str
    model: str = ""
    topic: str = ""
    period: float = math.nan
    deadline: float = math.nan
    # results
    completed: int = 0
    missed: int = 0
    met: int = 0
    response: ResponseFigures = field(default_factory=ResponseFigures)
    exec_mean: float = math.nan
    exec_max: float = math.nan
    mret_last: float = math.nan
    jps: float = 0.0
    dmr: float = 0.0
    # node counters (None: no stats in the bag)
    frames: int | None = None
    superseded: int | None = None
    released: int | None = None
    admitted: int | None = None
    rejected: int | None = None
    stale: int | None = None
    stale_total: int | None = None
    dropped: int | None = None
    migrations: int | None = None
    node_completed: int | None = None
    node_missed: int | None = None
    skipped: int | None = None
    in_flight: int | None = None
    pending: int | None = None
    drop_reasons: dict[str, int] = field(default_factory=dict)
    # input side (None: unknown)
    input_frames: int | None = None
    stamps_checked: int = 0
    stamps_unmatched: int | None = None
    duplicate_job_ids: int = 0


@dataclass(slots=True)
class PriorityFigures:
    priority: str
    tasks: int = 0
    completed: int = 0
    missed: int = 0
    met: int = 0
    response: ResponseFigures = field(default_factory=ResponseFigures)
    jps: float = 0.0
    dmr: float = 0.0
    frames: int | None = None
    superseded: int | None = None
    released: int | None = None
    admitted: int | None = None
    rejected: int | None = None
    stale: int | None = None
    dropped: int | None = None
    skipped: int | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One consistency check of the run (``ok`` None: not checkable, data missing)."""

    name: str
    task: str
    ok: bool | None
    detail: str


@dataclass(slots=True)
class RunFigures:
    """Everything a report shows, as numbers."""

    bag: str
    window_s: float
    t0_ns: int | None
    config: dict[str, Any]
    tasks: dict[str, TaskFigures]
    priorities: dict[str, PriorityFigures]
    totals: PriorityFigures
    checks: list[Check]
    replay: dict[str, Any] | None = None
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No check failed (checks that could not be made do not count)."""
        return all(c.ok is not False for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bag": self.bag,
            "window_s": self.window_s,
            "t0_ns": self.t0_ns,
            "config": self.config,
            "replay": self.replay,
            "tasks": {name: asdict(t) for name, t in self.tasks.items()},
            "priorities": {name: asdict(p) for name, p in self.priorities.items()},
            "totals": asdict(self.totals),
            "checks": [asdict(c) for c in self.checks],
            "ok": self.ok,
            "diagnostics": self.diagnostics,
        }


# -- helpers --------------------------------------------------------------------------------------------
def run_window(results: Iterable[ResultRecord]) -> tuple[int | None, float]:
    """(first release ns, seconds from the first release to the last finish) over ``results``."""
    rows = list(results)
    if not rows:
        return None, 0.0
    t0 = min(r.release_ns for r in rows)
    t1 = max(r.finish_ns for r in rows)
    return t0, max(0.0, (t1 - t0) * 1e-9)


def _abs_topic(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def _sum_opt(values: Iterable[int | None]) -> int | None:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return int(sum(v for v in vals if v is not None))


def input_counts(run: RunData) -> dict[str, int]:
    """Frames published into the node per camera topic: the replay's player counts, else the recorded
    camera messages."""
    if run.replay and isinstance(run.replay.get("published"), dict):
        return {_abs_topic(str(t)): int(n) for t, n in run.replay["published"].items()}
    return {topic: len(frames) for topic, frames in run.inputs.items()}


# -- per task -------------------------------------------------------------------------------------------
def _final_state(t: TaskSnapshot) -> tuple[int, ...]:
    return (t.frames, t.superseded, t.released, t.admitted, t.rejected, t.completed, t.missed, t.dropped)


def active_stale(snapshots: Sequence[TaskSnapshot]) -> int:
    """Stale periods of one task over its active span (see the module docstring); ``snapshots`` in
    order, the last one final."""
    last = snapshots[-1]
    if last.frames == 0:  # never got a frame: stale over the whole recording
        return last.stale - snapshots[0].stale
    before = [s for s in snapshots if s.frames == 0]
    start = before[-1].stale if before else 0  # frames only grow: these are the first snapshots
    final = _final_state(last)
    end = next(s for s in snapshots if _final_state(s) == final)
    return end.stale - start


def _apply_counters(f: TaskFigures, snapshots: Sequence[TaskSnapshot]) -> None:
    last = snapshots[-1]
    f.model, f.topic, f.period, f.deadline = last.model, last.topic, last.period, last.deadline
    f.frames, f.superseded, f.released = last.frames, last.superseded, last.released
    f.admitted, f.rejected, f.dropped, f.migrations = last.admitted, last.rejected, last.dropped, last.migrations
    f.stale_total = last.stale
    f.stale = active_stale(snapshots)
    f.node_completed, f.node_missed = last.completed, last.missed
    f.skipped = last.skipped or 0
    f.in_flight = last.admitted - last.completed - f.skipped
    f.pending = last.pending if last.pending is not None else (
        last.frames - last.released - last.superseded - last.dropped)
    f.drop_reasons = dict(last.drop_reasons) if last.drop_reasons else {}


def task_figures(name: str, results: Sequence[ResultRecord], stats: Sequence[StatsSnapshot], window_s: float,
                 run: RunData) -> TaskFigures:
    snapshots = [s.tasks[name] for s in stats if name in s.tasks]
    snap = snapshots[-1] if snapshots else None
    priority = snap.priority if snap is not None else (results[0].priority if results else "LP")
    f = TaskFigures(task=name, priority=priority)
    if results:
        f.model = results[0].model
    f.completed = len(results)
    f.missed = sum(1 for r in results if not r.met)
    f.met = f.completed - f.missed
    f.response = ResponseFigures.of([r.response_time for r in results])
    if results:
        execs = [r.exec_time for r in results]
        f.exec_mean, f.exec_max = math.fsum(execs) / len(execs), max(execs)
        f.mret_last = max(results, key=lambda r: r.release_ns).mret
    f.jps = f.completed / window_s if window_s > 0 else 0.0
    f.duplicate_job_ids = len(results) - len({r.job_id for r in results})
    if snapshots:
        _apply_counters(f, snapshots)
    denominator = f.admitted if f.admitted is not None else f.completed
    f.dmr = (f.missed + (f.skipped or 0)) / denominator if denominator else 0.0
    if f.topic:
        counts = input_counts(run)
        topic = _abs_topic(f.topic)
        if topic in counts:
            f.input_frames = counts[topic]
        frames = run.inputs.get(topic)
        if frames is not None:
            known = {(fr.stamp_ns, fr.frame_id) for fr in frames}
            f.stamps_checked = len(results)
            f.stamps_unmatched = sum(1 for r in results if (r.stamp_ns, r.frame_id) not in known)
    return f


# -- per priority ---------------------------------------------------------------------------------------
def priority_figures(priority: str, tasks: Sequence[TaskFigures], results: Sequence[ResultRecord],
                     window_s: float) -> PriorityFigures:
    p = PriorityFigures(priority=priority, tasks=len(tasks))
    p.completed = sum(t.completed for t in tasks)
    p.missed = sum(t.missed for t in tasks)
    p.met = p.completed - p.missed
    p.response = ResponseFigures.of([r.response_time for r in results])
    p.jps = p.completed / window_s if window_s > 0 else 0.0
    for name in ("frames", "superseded", "released", "admitted", "rejected", "stale", "dropped", "skipped"):
        setattr(p, name, _sum_opt(getattr(t, name) for t in tasks) if tasks else 0)
    denominator = p.admitted if p.admitted is not None else p.completed
    p.dmr = (p.missed + (p.skipped or 0)) / denominator if denominator else 0.0
    return p


# -- checks ---------------------------------------------------------------------------------------------
def _check(name: str, task: str, ok: bool | None, detail: str) -> Check:
    return Check(name, task, ok, detail)


def task_checks(f: TaskFigures) -> list[Check]:
    """The accounting identities of one task (see the module docstring)."""
    t = f.task
    out: list[Check] = []
    if f.frames is None:
        return [_check("node counters", t, None, "no SchedulerStats in the bag")]
    assert f.released is not None and f.admitted is not None and f.rejected is not None
    assert f.superseded is not None and f.dropped is not None and f.pending is not None
    assert f.in_flight is not None and f.node_completed is not None
    out.append(_check("frames = released + superseded + dropped + pending", t,
                      f.pending in (0, 1) and f.frames == f.released + f.superseded + f.dropped + f.pending,
                      f"{f.frames} = {f.released} + {f.superseded} + {f.dropped} + {f.pending}"))
    out.append(_check("released = admitted + rejected", t, f.released == f.admitted + f.rejected,
                      f"{f.released} = {f.admitted} + {f.rejected}"))
    out.append(_check("admitted = completed + skipped + in flight", t, f.in_flight >= 0,
                      f"{f.admitted} = {f.node_completed} + {f.skipped} + {f.in_flight}"))
    out.append(_check("results recorded = completed (node)", t, f.completed == f.node_completed,
                      f"{f.completed} recorded, node completed {f.node_completed}"))
    out.append(_check("missed results = missed (node)", t, f.missed == f.node_missed,
                      f"{f.missed} recorded, node missed {f.node_missed}"))
    skipped = f.skipped or 0
    outcome = f.met + f.missed + skipped + f.rejected + f.superseded + f.dropped + f.in_flight + f.pending
    accounted = outcome == f.frames and f.pending in (0, 1) and f.in_flight >= 0
    out.append(_check("frames = met + missed + skipped + rejected + superseded + dropped + in flight + pending", t,
                      accounted, f"{f.frames} = {f.met} + {f.missed} + {skipped} + {f.rejected} + {f.superseded} "
                      f"+ {f.dropped} + {f.in_flight} + {f.pending}"))
    if f.input_frames is None:
        out.append(_check("frames received = frames published", t, None, "input counts unknown"))
    else:
        out.append(_check("frames received = frames published", t, f.input_frames == f.frames,
                          f"published {f.input_frames}, received {f.frames}"))
    if f.stamps_unmatched is not None:
        out.append(_check("result stamps are input stamps", t, f.stamps_unmatched == 0,
                          f"{f.stamps_unmatched} of {f.stamps_checked} results without a matching input"))
    out.append(_check("job ids unique", t, f.duplicate_job_ids == 0, f"{f.duplicate_job_ids} duplicates"))
    return out


# -- the whole run --------------------------------------------------------------------------------------
def config_of(snap: StatsSnapshot | None) -> dict[str, Any]:
    if snap is None:
        return {}
    return {"node": snap.node, "policy": snap.policy, "backend": snap.backend, "device": snap.device,
            "n_contexts": snap.n_contexts, "n_streams": snap.n_streams,
            "oversubscription": snap.oversubscription, "sm_per_context": snap.sm_per_context,
            "sm_limit": snap.sm_limit, "usable_sms": snap.usable_sms}


def compute(run: RunData) -> RunFigures:
    """All figures and checks of one run."""
    t0, window_s = run_window(run.all_results())
    last = run.last_stats
    tasks = {name: task_figures(name, run.results.get(name, []), run.stats, window_s, run)
             for name in run.task_names()}
    priorities: dict[str, PriorityFigures] = {}
    for prio in PRIORITIES:
        members = [t for t in tasks.values() if t.priority == prio]
        results = [r for t in members for r in run.results.get(t.task, [])]
        priorities[prio] = priority_figures(prio, members, results, window_s)
    totals = priority_figures("all", list(tasks.values()), run.all_results(), window_s)
    checks = [c for t in tasks.values() for c in task_checks(t)]
    diagnostics = {name: {"counts": d.counts, "last_level": d.last_level, "last_message": d.last_message}
                   for name, d in sorted(run.diagnostics.items())}
    return RunFigures(bag=str(run.path), window_s=window_s, t0_ns=t0, config=config_of(last), tasks=tasks,
                      priorities=priorities, totals=totals, checks=checks, replay=run.replay,
                      diagnostics=diagnostics)
