"""Read an output bag of a daris_ros run into plain records (no ROS needed: rosbags + the type store).

Topics are recognised by their message type, not their name, so a bag recorded by ``daris-replay``,
``daris-record`` or ``ros2 bag record`` reads the same:

- ``daris_ros/msg/InferenceResult``  -> :class:`ResultRecord` per job, grouped by task;
- ``daris_ros/msg/SchedulerStats``   -> :class:`StatsSnapshot` per message, in log-time order;
- ``diagnostic_msgs/msg/DiagnosticArray`` -> :class:`DiagnosticSummary` per status name;
- ``sensor_msgs/msg/Image`` / ``CompressedImage`` (recorded camera inputs) -> :class:`InputFrame` per
  message, only the header (read from the CDR bytes, the pixels are not decoded);
- the perception payloads a result names in ``payload_topic`` (``daris_ros/msg/Detection2DArray``, the mono8
  mask ``sensor_msgs/msg/Image``) -> :class:`InputFrame` headers in ``RunData.payloads`` (a mask topic is
  not a camera); ``daris_ros/msg/LabelInfo`` -> class names per labels topic.

``daris_ros.report.pictures`` reads the pixels and boxes of the few jobs it draws in a second pass.

``custom_data`` written by the daris_ros tools (``daris_ros.replay``, ``daris_ros.recorder``) comes along
as parsed JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from daris_ros.bags.ament_types import with_bag_types
from daris_ros.bags.info import daris_info
from daris_ros.bags.typestore import get_typestore

RESULT_TYPE = "daris_ros/msg/InferenceResult"
STATS_TYPE = "daris_ros/msg/SchedulerStats"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: the detections and labels types the node publishes (``perception_msgs``: its own, or vision_msgs 4.x)
DETECTIONS_TYPES = ("daris_ros/msg/Detection2DArray", "vision_msgs/msg/Detection2DArray")
LABELS_TYPES = ("daris_ros/msg/LabelInfo", "vision_msgs/msg/LabelInfo")

#: InferenceResult.kind (KIND_CLASSIFICATION, KIND_SEGMENTATION, KIND_DETECTION)
KIND_NAMES = {0: "classification", 1: "segmentation", 2: "detection"}

#: InferenceResult.PRIORITY_HIGH / PRIORITY_LOW
PRIORITY_NAMES = {0: "HP", 1: "LP"}
#: diagnostic_msgs/DiagnosticStatus levels
LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def time_ns(t: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def priority_name(value: int) -> str:
    return PRIORITY_NAMES.get(int(value), str(value))


@dataclass(frozen=True, slots=True)
class StageRow:
    """One executed stage of a job; times in seconds relative to the job's release."""

    stage: int
    context: int
    stream: int
    level: int
    start: float
    finish: float
    exec_time: float
    virtual_deadline: float


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One InferenceResult. ``*_ns`` are absolute times on the node's clock (ROS time)."""

    topic: str
    log_ns: int
    task: str
    job_id: int
    priority: str
    model: str
    stamp_ns: int
    frame_id: str
    receive_ns: int
    release_ns: int
    start_ns: int
    finish_ns: int
    deadline_ns: int
    response_time: float
    exec_time: float
    met: bool
    mret: float
    context: int
    stream: int
    stages: tuple[StageRow, ...] = ()
    #: perception outputs (defaults: a bag of a node from before them)
    kind: str = "classification"
    payload_topic: str = ""  # where the job's mask or detections went ("" for classification or none)
    source_height: int = 0  # the camera frame's size (0: unknown)
    source_width: int = 0
    class_ids: tuple[int, ...] = ()  # classification: top-k, best first
    scores: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()  # names of class_ids (empty when none are known)
    num_detections: int = 0

    @property
    def deadline_s(self) -> float:
        """The relative deadline D_i of the job (absolute deadline - release), seconds."""
        return (self.deadline_ns - self.release_ns) * 1e-9


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """One TaskStats entry of a SchedulerStats message (counters are cumulative since node start)."""

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
    response_p50: float
    response_p99: float
    response_max: float
    mret: float
    #: newer TaskStats fields (None in bags of nodes that do not publish them)
    pending: int | None = None
    drop_reasons: dict[str, int] | None = None
    skipped: int | None = None  # admitted jobs skipped unstarted (skip_late)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """One SchedulerStats message."""

    log_ns: int
    stamp_ns: int
    node: str
    policy: str
    backend: str
    device: str
    n_contexts: int
    n_streams: int
    oversubscription: float
    sm_per_context: int
    uptime: float
    tasks: dict[str, TaskSnapshot]
    sm_limit: int | None = None  # the node's sm_limit (0: the whole device); None: a bag from before the field
    usable_sms: int | None = None  # eq. 9's N_SM,max (sm_limit, else the device's SMs)


@dataclass(slots=True)
class DiagnosticSummary:
    """All messages of one DiagnosticStatus name: how often each level was seen, and the last one."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)  # level name -> messages
    last_level: str = "OK"
    last_message: str = ""
    last_values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputFrame:
    """A recorded camera message: its topic, bag log time and header."""

    topic: str
    log_ns: int
    stamp_ns: int
    frame_id: str


@dataclass(slots=True)
class RunData:
    """Everything a report needs from one output bag."""

    path: Path
    topics: dict[str, str] = field(default_factory=dict)  # topic -> msgtype
    counts: dict[str, int] = field(default_factory=dict)  # topic -> messages
    results: dict[str, list[ResultRecord]] = field(default_factory=dict)  # task -> by job id
    stats: list[StatsSnapshot] = field(default_factory=list)
    diagnostics: dict[str, DiagnosticSummary] = field(default_factory=dict)
    inputs: dict[str, list[InputFrame]] = field(default_factory=dict)  # camera topic -> frames
    payloads: dict[str, list[InputFrame]] = field(default_factory=dict)  # mask / detections topic -> headers
    labels: dict[str, dict[int, str]] = field(default_factory=dict)  # labels topic -> class id -> name
    replay: dict[str, Any] | None = None  # custom_data daris_ros.replay
    recorder: dict[str, Any] | None = None  # custom_data daris_ros.recorder

    @property
    def last_stats(self) -> StatsSnapshot | None:
        return self.stats[-1] if self.stats else None

    @property
    def first_stats(self) -> StatsSnapshot | None:
        return self.stats[0] if self.stats else None

    def all_results(self) -> list[ResultRecord]:
        return [r for rows in self.results.values() for r in rows]

    def task_names(self) -> list[str]:
        """Tasks in the order of the last stats message, then any task seen only in results."""
        names: list[str] = []
        for snap in self.stats[-1:]:
            names.extend(snap.tasks)
        names.extend(t for t in sorted(self.results) if t not in names)
        return names


# -- message conversion ----------------------------------------------------------------------------------
def stage_row(m: Any) -> StageRow:
    return StageRow(int(m.stage), int(m.context), int(m.stream), int(m.level), float(m.start),
                    float(m.finish), float(m.exec_time), float(m.virtual_deadline))


def result_record(m: Any, topic: str = "", log_ns: int = 0) -> ResultRecord:
    """An InferenceResult (rosbags or rclpy object) -> :class:`ResultRecord`."""
    return ResultRecord(
        topic=topic, log_ns=int(log_ns), task=str(m.task), job_id=int(m.job_id),
        priority=priority_name(m.priority), model=str(m.model), stamp_ns=time_ns(m.header.stamp),
        frame_id=str(m.header.frame_id), receive_ns=time_ns(m.receive_time), release_ns=time_ns(m.release_time),
        start_ns=time_ns(m.start_time), finish_ns=time_ns(m.finish_time), deadline_ns=time_ns(m.deadline),
        response_time=float(m.response_time), exec_time=float(m.exec_time), met=bool(m.met), mret=float(m.mret),
        context=int(m.context), stream=int(m.stream), stages=tuple(stage_row(s) for s in m.stages),
        kind=KIND_NAMES.get(int(getattr(m, "kind", 0)), "classification"),
        payload_topic=str(getattr(m, "payload_topic", "")), source_height=int(getattr(m, "source_height", 0)),
        source_width=int(getattr(m, "source_width", 0)), class_ids=tuple(int(c) for c in m.class_ids),
        scores=tuple(float(x) for x in m.scores), class_names=tuple(str(n) for n in getattr(m, "class_names", ())),
        num_detections=int(getattr(m, "num_detections", 0)),
    )


def label_names(m: Any) -> dict[int, str]:
    """A LabelInfo (daris_ros or vision_msgs layout) -> class id -> name."""
    return {int(c.class_id): str(c.class_name) for c in m.class_map}


def _optional_int(m: Any, name: str) -> int | None:
    value = getattr(m, name, None)
    return None if value is None else int(value)


def _drop_reasons(m: Any) -> dict[str, int] | None:
    reasons, counts = getattr(m, "drop_reasons", None), getattr(m, "drop_counts", None)
    if reasons is None or counts is None:
        return None
    return {str(r): int(c) for r, c in zip(reasons, counts, strict=False)}


def task_snapshot(m: Any) -> TaskSnapshot:
    return TaskSnapshot(
        task=str(m.task), topic=str(m.topic), model=str(m.model), priority=priority_name(m.priority),
        context=int(m.context), period=float(m.period), deadline=float(m.deadline), frames=int(m.frames),
        superseded=int(m.superseded), released=int(m.released), admitted=int(m.admitted),
        rejected=int(m.rejected), completed=int(m.completed), missed=int(m.missed), stale=int(m.stale),
        dropped=int(m.dropped), migrations=int(m.migrations), jps=float(m.jps), miss_rate=float(m.miss_rate),
        response_p50=float(m.response_p50), response_p99=float(m.response_p99),
        response_max=float(m.response_max), mret=float(m.mret), pending=_optional_int(m, "pending"),
        drop_reasons=_drop_reasons(m), skipped=_optional_int(m, "skipped"),
    )


def stats_snapshot(m: Any, log_ns: int = 0) -> StatsSnapshot:
    return StatsSnapshot(
        log_ns=int(log_ns), stamp_ns=time_ns(m.header.stamp), node=str(m.node), policy=str(m.policy),
        backend=str(m.backend), device=str(m.device), n_contexts=int(m.n_contexts), n_streams=int(m.n_streams),
        oversubscription=float(m.oversubscription), sm_per_context=int(m.sm_per_context),
        uptime=float(m.uptime), tasks={str(t.task): task_snapshot(t) for t in m.tasks},
        sm_limit=_optional_int(m, "sm_limit"), usable_sms=_optional_int(m, "usable_sms"),
    )


def add_diagnostics(summaries: dict[str, DiagnosticSummary], m: Any) -> None:
    """Fold one DiagnosticArray into ``summaries``."""
    for st in m.status:
        name = str(st.name)
        s = summaries.setdefault(name, DiagnosticSummary(name))
        level = LEVEL_NAMES.get(int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level),
                                str(st.level))
        s.counts[level] = s.counts.get(level, 0) + 1
        s.last_level = level
        s.last_message = str(st.message)
        s.last_values = {str(kv.key): str(kv.value) for kv in st.values}


def cdr_header(data: bytes | memoryview) -> tuple[int, str] | None:
    """``(header.stamp ns, header.frame_id)`` of CDR bytes whose message starts with a Header."""
    raw = bytes(data[:4096])
    if len(raw) < 16 or raw[:2] not in (b"\x00\x01", b"\x00\x00"):
        return None
    order = "<" if raw[:2] == b"\x00\x01" else ">"
    sec, nsec, length = struct.unpack_from(order + "iII", raw, 4)
    text = raw[16:16 + length]
    if len(text) < length:  # a frame_id longer than what was read: decode the whole message
        text = bytes(data[16:16 + length])
    return sec * 1_000_000_000 + nsec, text.rstrip(b"\x00").decode("utf-8", "replace")


# -- reading a bag ---------------------------------------------------------------------------------------
def read_run(bag: Path | str, *, store: Typestore | None = None, inputs: bool = True) -> RunData:
    """Read an output bag. ``inputs=False`` skips recorded camera topics."""
    path = Path(bag)
    store = store or get_typestore()
    run = RunData(path=path)
    with Reader(path) as reader:
        store = with_bag_types(store, reader.connections)  # (vision_msgs: from the definitions in the bag)
        wanted = []
        for conn in reader.connections:
            run.topics[conn.topic] = conn.msgtype
            run.counts[conn.topic] = run.counts.get(conn.topic, 0) + int(conn.msgcount)
            if conn.msgtype in (RESULT_TYPE, STATS_TYPE, DIAGNOSTICS_TYPE, *DETECTIONS_TYPES, *LABELS_TYPES) or (
                    inputs and conn.msgtype in IMAGE_TYPES):
                wanted.append(conn)
        _read_messages(run, reader.messages(connections=wanted), store)
    for rows in run.results.values():
        rows.sort(key=lambda r: (r.job_id, r.log_ns))
    _separate_payloads(run)
    run.stats.sort(key=lambda s: (s.log_ns, s.uptime))
    run.replay = _safe_info(path, "replay")
    run.recorder = _safe_info(path, "recorder")
    return run


def _read_messages(run: RunData, messages: Iterable[tuple[Any, int, bytes]], store: Typestore) -> None:
    for conn, log_ns, raw in messages:
        msgtype = conn.msgtype
        if msgtype == RESULT_TYPE:
            rec = result_record(store.deserialize_cdr(raw, msgtype), conn.topic, log_ns)
            run.results.setdefault(rec.task, []).append(rec)
        elif msgtype == STATS_TYPE:
            run.stats.append(stats_snapshot(store.deserialize_cdr(raw, msgtype), log_ns))
        elif msgtype == DIAGNOSTICS_TYPE:
            add_diagnostics(run.diagnostics, store.deserialize_cdr(raw, msgtype))
        elif msgtype in LABELS_TYPES:
            run.labels[conn.topic] = label_names(store.deserialize_cdr(raw, msgtype))
        else:
            header = cdr_header(raw)
            if header is not None:
                run.inputs.setdefault(conn.topic, []).append(InputFrame(conn.topic, log_ns, *header))


def _separate_payloads(run: RunData) -> None:
    """Move the topics results name as their payload (masks are Images too; detections) from ``inputs`` to
    ``payloads``; a detections topic no result names stays among the payloads (it is no camera either)."""
    named = {r.payload_topic for r in run.all_results() if r.payload_topic}
    for topic in list(run.inputs):
        if topic in named or run.topics.get(topic) in DETECTIONS_TYPES:
            run.payloads[topic] = run.inputs.pop(topic)


def _safe_info(path: Path, key: str) -> dict[str, Any] | None:
    try:
        value = daris_info(path, key)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
