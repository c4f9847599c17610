"""Building daris_ros and diagnostic_msgs messages from engine results and scheduler statistics."""

from __future__ import annotations

import array
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from daris_ros.core import FeasibilityReport
from daris_ros.msg import (
    BoundingBox2D,
    ContextStats,
    Detection2D,
    Detection2DArray,
    InferenceResult,
    LabelInfo,
    ObjectHypothesis,
    PriorityStats,
    SchedulerStats,
    StageRecord,
    TaskStats,
    VisionClass,
)
from daris_ros.runtime.engine import JobResult
from daris_ros.runtime.labels import name_of
from daris_ros.runtime.results import Detections

ToRosTime = Callable[[float], Time]


def _prio(p: str) -> int:
    return InferenceResult.PRIORITY_HIGH if p == "HP" else InferenceResult.PRIORITY_LOW


#: InferenceResult.kind per model kind.
KIND_CODES: dict[str, int] = {"classification": InferenceResult.KIND_CLASSIFICATION,
                              "segmentation": InferenceResult.KIND_SEGMENTATION,
                              "detection": InferenceResult.KIND_DETECTION}


def result_msg(r: JobResult, header: Header, to_ros: ToRosTime, *, payload_topic: str = "",
               class_names: Sequence[str] = ()) -> InferenceResult:
    """An InferenceResult whose header is the source image's header; ``payload_topic``: where the job's payload
    was published, ``class_names``: the task's names (index = class id) for a classification's ``class_names``."""
    m = InferenceResult()
    m.kind = KIND_CODES[r.kind]
    m.payload_topic = payload_topic
    if r.source_size is not None:
        m.source_height, m.source_width = int(r.source_size[0]), int(r.source_size[1])
    if class_names and r.class_ids:
        m.class_names = [name_of(class_names, int(c)) for c in r.class_ids]
    if r.detections is not None:
        m.num_detections = len(r.detections)
    m.header = header
    m.task = r.task
    m.job_id = r.job_id
    m.priority = _prio(r.priority)
    m.model = r.model
    m.class_ids = [int(c) for c in r.class_ids]
    m.scores = [float(s) for s in r.scores]
    if r.segmentation is not None:
        h, w, ids, fr = r.segmentation
        m.seg_height, m.seg_width = int(h), int(w)
        m.seg_class_ids = [int(c) for c in ids]
        m.seg_class_fractions = [float(f) for f in fr]
    m.receive_time = to_ros(r.receive_time)
    m.release_time = to_ros(r.release_time)
    m.start_time = to_ros(r.start_time)
    m.finish_time = to_ros(r.finish_time)
    m.deadline = to_ros(r.deadline)
    m.response_time = float(r.response_time)
    m.exec_time = float(r.exec_time)
    m.met = bool(r.met)
    m.context = int(r.context)
    m.stream = int(r.stream)
    m.mret = float(r.mret)
    m.stages = [StageRecord(stage=t.stage, context=t.context, stream=t.stream, level=t.level,
                            start=t.start - r.release_time, finish=t.finish - r.release_time,
                            exec_time=t.exec_time, virtual_deadline=t.virtual_deadline - r.release_time)
                for t in r.stages]
    return m


def detection_array_msg(header: Header, detections: Detections, class_names: Sequence[str]) -> Detection2DArray:
    """A daris_ros Detection2DArray: the source image's header, one Detection2D per detection (best first), its
    box as centre and size in the source image's pixels, one hypothesis (class id as a decimal string, its name,
    the score)."""
    m = Detection2DArray(header=header)
    out = m.detections
    for (x1, y1, x2, y2), score, class_id in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                                 detections.class_ids.tolist(), strict=True):
        out.append(Detection2D(
            header=header, bbox=BoundingBox2D(center_x=(x1 + x2) / 2, center_y=(y1 + y2) / 2, size_x=x2 - x1,
                                              size_y=y2 - y1),
            results=[ObjectHypothesis(class_id=str(class_id), class_name=name_of(class_names, class_id),
                                      score=score)]))
    return m


def mask_msg(header: Header, mask: np.ndarray) -> Image:
    """A class mask (H x W uint8 class ids) as sensor_msgs/Image mono8 with the source image's header."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask is H x W uint8, got {mask.dtype} of shape {mask.shape}")
    height, width = mask.shape
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(mask).tobytes())
    return Image(header=header, height=height, width=width, encoding="mono8", is_bigendian=0, step=width, data=data)


def label_info_msg(header: Header, class_names: Sequence[str], threshold: float) -> LabelInfo:
    """A daris_ros LabelInfo: one VisionClass per class id with a name entry, and the score threshold."""
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(class_names)])


def _nz(x: float) -> float:
    return 0.0 if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task's figures for a stats message / diagnostics / the demo table (seconds)."""

    task: str
    topic: str
    model: str
    priority: str
    context: int
    period: float
    deadline: float
    frames: int
    superseded: int
    released: int
    admitted: int
    rejected: int
    completed: int
    missed: int
    stale: int
    dropped: int
    migrations: int
    jps: float
    miss_rate: float
    p50: float
    p99: float
    max: float
    mret: float
    pending: int = 0  # 1 while the newest good frame waits for a release
    frame_id_changes: int = 0
    drop_reasons: tuple[tuple[str, int], ...] = ()  # (reason, count), sorted by reason
    releases_skipped: int = 0  # release instants passed over because the engine ran late (backlog)
    frame_age_last: float = 0.0  # release time - image stamp of the latest release
    frame_age_mean: float = 0.0
    frame_age_max: float = 0.0
    frame_age_over_period: int = 0  # releases whose frame was older than the period
    intake_lag_mean: float = 0.0  # arrival - image stamp (transport and executor delay)
    intake_lag_max: float = 0.0
    skipped: int = 0  # admitted jobs skipped unstarted (skip_late: not started within x deadlines); in miss_rate
    rejected_host: int = 0  # of rejected: LP releases refused while the engine's loop was overloaded


def task_stats_msg(row: TaskRow) -> TaskStats:
    m = TaskStats()
    m.task, m.topic, m.model = row.task, row.topic, row.model
    m.priority = _prio(row.priority)
    m.context = row.context
    m.period, m.deadline = row.period, row.deadline
    m.frames, m.superseded = row.frames, row.superseded
    m.released, m.admitted, m.rejected = row.released, row.admitted, row.rejected
    m.completed, m.missed, m.stale, m.dropped = row.completed, row.missed, row.stale, row.dropped
    m.migrations = row.migrations
    m.jps, m.miss_rate = row.jps, row.miss_rate
    m.response_p50, m.response_p99, m.response_max = _nz(row.p50), _nz(row.p99), _nz(row.max)
    m.mret = _nz(row.mret)
    m.pending = row.pending
    m.frame_id_changes = row.frame_id_changes
    m.drop_reasons = [r for r, _ in row.drop_reasons]
    m.drop_counts = [n for _, n in row.drop_reasons]
    m.releases_skipped = row.releases_skipped
    m.frame_age_last, m.frame_age_mean, m.frame_age_max = row.frame_age_last, row.frame_age_mean, row.frame_age_max
    m.frame_age_over_period = row.frame_age_over_period
    m.intake_lag_mean, m.intake_lag_max = row.intake_lag_mean, row.intake_lag_max
    m.skipped = row.skipped
    m.rejected_host = row.rejected_host
    return m


def priority_stats_msg(priority: str, rows: list[TaskRow], pct: Mapping[str, float]) -> PriorityStats:
    m = PriorityStats()
    m.priority = _prio(priority)
    m.tasks = len(rows)
    m.frames = sum(r.frames for r in rows)
    m.superseded = sum(r.superseded for r in rows)
    m.released = sum(r.released for r in rows)
    m.admitted = sum(r.admitted for r in rows)
    m.rejected = sum(r.rejected for r in rows)
    m.completed = sum(r.completed for r in rows)
    m.missed = sum(r.missed for r in rows)
    m.skipped = sum(r.skipped for r in rows)
    m.rejected_host = sum(r.rejected_host for r in rows)
    m.stale = sum(r.stale for r in rows)
    m.dropped = sum(r.dropped for r in rows)
    m.jps = float(sum(r.jps for r in rows))
    m.miss_rate = (m.missed + m.skipped) / m.admitted if m.admitted else 0.0  # a skipped job lost its deadline
    m.response_p50, m.response_p99, m.response_max = _nz(pct["p50"]), _nz(pct["p99"]), _nz(pct["max"])
    return m


@dataclass(frozen=True, slots=True)
class ContextRow:
    """One context's figures for ContextStats."""

    context: int
    up: bool
    sm_count: int
    task_names: tuple[str, ...]
    hp: float
    lp: float
    active_lp: float
    queued: int
    memory_bytes: int


def context_stats_msg(row: ContextRow) -> ContextStats:
    m = ContextStats()
    m.context = row.context
    m.up = row.up
    m.sm_count = row.sm_count
    m.task_names = list(row.task_names)
    m.hp_utilization, m.lp_utilization, m.active_lp_utilization = row.hp, row.lp, row.active_lp
    m.queued_stages = row.queued
    m.memory_bytes = max(0, int(row.memory_bytes))
    return m


def scheduler_stats_msg(header: Header, node: str, info: Mapping[str, Any], tasks: list[TaskStats],
                        priorities: list[PriorityStats], contexts: list[ContextStats] | None = None,
                        memory_source: str = "", memory_shared: bool = False,
                        model_bytes: Mapping[str, int] | None = None) -> SchedulerStats:
    m = SchedulerStats()
    m.header = header
    m.node = node
    m.policy = str(info["policy"])
    m.backend = str(info["backend"])
    m.device = str(info["device"])
    m.n_contexts = int(info["n_contexts"])
    m.n_streams = int(info["n_streams"])
    m.oversubscription = float(info["oversubscription"])
    m.sm_per_context = int(info["sm_per_context"])
    m.uptime = float(info["uptime"])
    m.tasks = tasks
    m.priorities = priorities
    m.contexts = list(contexts or ())
    m.memory_source = memory_source
    m.memory_shared = memory_shared
    m.models = list(model_bytes or {})
    m.model_bytes = [int(v) for v in (model_bytes or {}).values()]
    m.sm_limit = int(info.get("sm_limit", 0))
    m.usable_sms = int(info.get("usable_sms", 0))
    m.loop_busy_share = float(info.get("engine_loop_busy_share", 0.0))
    m.host_us_per_release = float(info.get("engine_host_us_per_release", 0.0))
    return m


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return KeyValue(key=key, value=str(value))


@dataclass(frozen=True, slots=True)
class DiagnosticThresholds:
    miss_rate_warn: float = 0.02
    miss_rate_error: float = 0.10
    rejection_rate_warn: float = 0.0
    stale_warn_periods: int = 1


def task_diagnostic(node: str, hardware_id: str, row: TaskRow, period_delta: Mapping[str, int],
                    th: DiagnosticThresholds, skip_late: float = 0.0) -> DiagnosticStatus:
    """One DiagnosticStatus per task. ``period_delta`` holds counter increases since the last report.

    A silent camera ("stale: no new frame") is told apart from a node that cannot keep up: releases the engine
    passed over because it ran late, frames older than a period when a release took them, and jobs skipped
    because they had not started within ``skip_late`` deadlines (bounded staleness under overload)."""
    problems: list[tuple[int, str]] = []
    if row.priority == "HP" and row.missed > 0:
        problems.append((DiagnosticStatus.ERROR, f"{row.missed} HP deadline misses"))
    lost = row.missed + row.skipped  # the miss rate counts skipped jobs as lost deadlines
    if row.miss_rate >= th.miss_rate_error and lost > 0:
        problems.append((DiagnosticStatus.ERROR, f"miss rate {row.miss_rate:.1%}"))
    elif row.miss_rate >= th.miss_rate_warn and lost > 0:
        problems.append((DiagnosticStatus.WARN, f"miss rate {row.miss_rate:.1%}"))
    skipped_jobs = period_delta.get("skipped", 0)
    if skipped_jobs > 0:
        problems.append((DiagnosticStatus.WARN, f"{skipped_jobs} jobs skipped: not started within {skip_late:g} "
                                                "deadlines (overload)"))
    stale = period_delta.get("stale", 0)
    if stale >= th.stale_warn_periods and period_delta.get("released", 0) == 0:
        problems.append((DiagnosticStatus.WARN, "stale: no new frame on " + row.topic))
    elif stale >= th.stale_warn_periods:
        problems.append((DiagnosticStatus.WARN, f"{stale} stale periods"))
    skipped = period_delta.get("releases_skipped", 0)
    if skipped > 0:
        problems.append((DiagnosticStatus.WARN, f"{skipped} releases skipped: the node cannot keep up (backlog)"))
    old = period_delta.get("frame_age_over_period", 0)
    if old > 0:
        problems.append((DiagnosticStatus.WARN, f"{old} frames older than the period at release (last age "
                                                f"{row.frame_age_last * 1e3:.1f} ms, max {row.frame_age_max * 1e3:.1f} "
                                                f"ms, intake lag max {row.intake_lag_max * 1e3:.1f} ms)"))
    rejected, released = period_delta.get("rejected", 0), period_delta.get("released", 0)
    if rejected > 0 and rejected / max(released, 1) > th.rejection_rate_warn:
        by_host = period_delta.get("rejected_host", 0)
        problems.append((DiagnosticStatus.WARN, f"{rejected} of {released} jobs rejected" + (
            f" ({by_host} while the engine's loop was overloaded)" if by_host else "")))
    if period_delta.get("dropped", 0) > 0:
        why = ", ".join(f"{k[len('dropped.'):]}: {v}" for k, v in sorted(period_delta.items())
                        if k.startswith("dropped.") and v > 0)
        problems.append((DiagnosticStatus.WARN, f"{period_delta['dropped']} malformed frames dropped ({why})"))
    if period_delta.get("frame_id_changes", 0) > 0:
        problems.append((DiagnosticStatus.WARN, f"frame_id changed {period_delta['frame_id_changes']} times"))
    st = DiagnosticStatus()
    st.name = f"{node}: task {row.task}"
    st.hardware_id = hardware_id
    st.level = max((lvl for lvl, _ in problems), default=DiagnosticStatus.OK)
    st.message = "; ".join(msg for _, msg in problems) if problems else "OK"
    st.values = [
        _kv("topic", row.topic), _kv("model", row.model), _kv("priority", row.priority),
        _kv("context", row.context), _kv("frames", row.frames), _kv("superseded", row.superseded),
        _kv("released", row.released), _kv("admitted", row.admitted),
        _kv("rejected", row.rejected), _kv("completed", row.completed), _kv("missed", row.missed),
        _kv("skipped", row.skipped), _kv("rejected_host", row.rejected_host),
        _kv("miss_rate", row.miss_rate), _kv("stale", row.stale), _kv("dropped", row.dropped),
        _kv("pending", row.pending), _kv("frame_id_changes", row.frame_id_changes),
        _kv("jps", row.jps), _kv("response_p99_ms", _nz(row.p99) * 1e3), _kv("mret_ms", _nz(row.mret) * 1e3),
        _kv("releases_skipped", row.releases_skipped), _kv("frame_age_ms", row.frame_age_last * 1e3),
        _kv("frame_age_max_ms", row.frame_age_max * 1e3), _kv("frame_age_over_period", row.frame_age_over_period),
        _kv("intake_lag_mean_ms", row.intake_lag_mean * 1e3), _kv("intake_lag_max_ms", row.intake_lag_max * 1e3),
    ] + [_kv(f"dropped.{reason}", n) for reason, n in row.drop_reasons]
    return st


def feasibility_values(report: FeasibilityReport, at_start: FeasibilityReport | None = None) -> dict[str, object]:
    """The feasibility KeyValues: ``feasible`` (HP fits every context, eq. 4 <= N_s), per context k
    ``hp_utilization_k`` (eq. 4), ``lp_utilization_k`` (eq. 5), ``lp_left_k`` (eq. 11: N_s - U_hp) and
    ``lp_expected_rejection_k`` (without migration), the node-wide ``lp_expected_rejection`` (with migration), and
    ``feasible_at_start`` (the figures of the offline phase, AFET-based) when given."""
    out: dict[str, object] = {"feasible": str(report.feasible).lower()}
    if at_start is not None:
        out["feasible_at_start"] = str(at_start.feasible).lower()
    for c in report.contexts:
        k = c.context
        out[f"hp_utilization_{k}"] = round(c.hp_utilization, 4)
        out[f"lp_utilization_{k}"] = round(c.lp_utilization, 4)
        out[f"lp_left_{k}"] = round(c.lp_left, 4)
        out[f"lp_expected_rejection_{k}"] = round(c.lp_expected_rejection, 4)
    out["lp_expected_rejection"] = round(report.lp_expected_rejection, 4)
    return out


def feasibility_problems(report: FeasibilityReport) -> list[tuple[int, str]]:
    """(level, text) of the report's problems: ERROR for HP over N_s in a context (or an HP task whose execution
    time exceeds its deadline), WARN for LP over-subscription with its expected rejection rate."""
    problems: list[tuple[int, str]] = []
    for c in report.contexts:
        if c.hp_over_capacity:
            problems.append((DiagnosticStatus.ERROR, f"infeasible: context {c.context} HP utilization "
                                                     f"{c.hp_utilization:.2f} > {c.n_streams} (N_s)"))
        late = c.hp_late_tasks
        if late:
            problems.append((DiagnosticStatus.ERROR, "infeasible: HP execution time over the deadline: "
                             + ", ".join(t.name for t in late)))
    over = [c for c in report.contexts if c.lp_oversubscribed]
    if over:
        problems.append((DiagnosticStatus.WARN, "LP over-subscribed: " + ", ".join(
            f"context {c.context} {c.lp_utilization:.2f} > {max(c.lp_left, 0.0):.2f} left "
            f"(expected rejection {c.lp_expected_rejection:.0%})" for c in over)))
    return problems


def scheduler_diagnostic(node: str, hardware_id: str, info: Mapping[str, object],
                         task_statuses: list[DiagnosticStatus], new_worker_faults: int = 0,
                         feasibility: FeasibilityReport | None = None,
                         feasibility_at_start: FeasibilityReport | None = None) -> DiagnosticStatus:
    """The scheduler's status: the worst task level, WARN at least when a worker failed (and was replaced)
    during the last stats period, ERROR when ``feasibility`` says HP does not fit a context, WARN at least when LP
    is over-subscribed. ``info`` and the feasibility figures (:func:`feasibility_values`) become the KeyValues."""
    st = DiagnosticStatus()
    st.name = f"{node}: scheduler"
    st.hardware_id = hardware_id
    worst = max((s.level for s in task_statuses), default=DiagnosticStatus.OK)
    n_bad = sum(1 for s in task_statuses if s.level != DiagnosticStatus.OK)
    parts = [] if worst == DiagnosticStatus.OK else [f"{n_bad} task(s) not OK"]
    if new_worker_faults > 0:
        worst = max(worst, DiagnosticStatus.WARN)
        parts.append(f"{new_worker_faults} worker fault(s) detected and recovered")
    values = dict(info)
    if feasibility is not None:
        for level, text in feasibility_problems(feasibility):
            worst = max(worst, level)
            parts.append(text)
        values.update(feasibility_values(feasibility, feasibility_at_start))
    st.level = worst
    st.message = "; ".join(parts) if parts else "OK"
    st.values = [_kv(k, v) for k, v in values.items()]
    return st


def lifecycle_diagnostic(node: str, hardware_id: str, state: str, error: str = "") -> DiagnosticStatus:
    """The scheduler's status while it holds no engine (unconfigured, finalized): OK while it waits for
    configure, ERROR when the last transition failed (``error``: why)."""
    st = DiagnosticStatus()
    st.name = f"{node}: scheduler"
    st.hardware_id = hardware_id
    st.level = DiagnosticStatus.ERROR if error else DiagnosticStatus.OK
    st.message = f"{state}: " + (f"transition failed: {error}" if error else "waiting for configure"
                                  if state == "unconfigured" else "no engine")
    st.values = [_kv("lifecycle_state", state)] + ([_kv("error", error)] if error else [])
    return st


def transition_diagnostic(node: str, hardware_id: str, state: str, phase: str, elapsed: float) -> DiagnosticStatus:
    """The scheduler's status while a lifecycle transition runs (``state``: ``configuring``, ``activating``...; its
    ``phase``, e.g. ``loading`` or ``profiling``; ``elapsed`` seconds since it began): OK, the node is working."""
    st = DiagnosticStatus()
    st.name = f"{node}: scheduler"
    st.hardware_id = hardware_id
    st.level = DiagnosticStatus.OK
    st.message = f"{state}: {phase} ({elapsed:.1f} s)"
    st.values = [_kv("lifecycle_state", state), _kv("phase", phase), _kv("elapsed_s", f"{elapsed:.1f}")]
    return st


def diagnostic_array(header: Header, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    a = DiagnosticArray()
    a.header = header
    a.status = statuses
    return a
