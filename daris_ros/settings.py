"""Validated configuration of a scheduler node: the scheduler hyperparameters and the camera tasks.

ROS-free: the ROS node fills these from its declared parameters, the demo and the bench fill them from
the same YAML parameter files (``ros__parameters``) with :func:`load_parameter_file`. Every validation
error is a :class:`ConfigError` that names the parameter and says what is allowed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daris_ros.parameter_table import (
    AFET_PROFILES,
    BACKENDS,
    BATCHING_BACKENDS,
    FEASIBILITY_MODES,
    INPUT_TYPES,
    MASK_RESOLUTIONS,
    MAX_BATCH_SIZE,
    MAX_SKIP_LATE,
    MODEL_FILE_SUFFIXES,
    PERCEPTION_MSGS,
    POLICIES,
    PRECISIONS,
    PRIORITIES,
    QOS_RELIABILITY,
    SCHEDULER_BY_NAME,
    SCHEDULER_FIELDS,
    SCHEDULER_PARAMETERS,
    TASK_BY_NAME,
    TASK_FIELDS,
    ConfigError,
    check_dataclass,
    default_of,
    parse_value,
)
from daris_ros.runtime.labels import read_labels_file

__all__ = [
    "AFET_PROFILES", "BACKENDS", "BATCHING_BACKENDS", "FEASIBILITY_MODES", "INPUT_TYPES", "MASK_RESOLUTIONS",
    "MAX_BATCH_SIZE", "MAX_SKIP_LATE", "PERCEPTION_MSGS", "POLICIES", "PRECISIONS", "PRIORITIES", "QOS_RELIABILITY",
    "ROS_NODE_PARAMETERS", "SCHEDULER_FIELDS", "TASK_FIELDS", "ConfigError", "SchedulerSettings", "TaskSettings",
    "check_parameter_names", "did_you_mean", "flatten_parameters", "load_parameter_file", "settings_from_mapping",
    "unknown_parameter", "validate_settings", "validate_task",
]

_TASK = TASK_BY_NAME
_SCHED = SCHEDULER_BY_NAME


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """One camera task: a periodic job releasing the latest frame of ``topic`` every ``period``. The fields are the
    task parameters of :mod:`daris_ros.parameter_table` (``rate`` becomes ``period``), with its defaults."""

    name: str
    topic: str
    priority: str  # "HP" | "LP"
    period: float  # T_i, seconds
    deadline: float  # D_i, seconds (defaults to the period)
    model: str
    input_type: str = default_of(_TASK, "input_type")
    weights: str = default_of(_TASK, "weights")
    input_size: tuple[int, int] = default_of(_TASK, "input_size")
    output_topic: str = default_of(_TASK, "output_topic")
    qos_reliability: str = default_of(_TASK, "qos_reliability")  # sensor-data profile by default
    qos_depth: int = default_of(_TASK, "qos_depth")
    precision: str = default_of(_TASK, "precision")  # converted weights (runtime/models/precision.py)
    channels_last: bool = default_of(_TASK, "channels_last")  # NHWC weights and inputs
    stage_boundaries: tuple[str, ...] = default_of(_TASK, "stage_boundaries")  # .pt2/.onnx model files
    score_threshold: float = default_of(_TASK, "score_threshold")  # detection: published at this score or above
    max_detections: int = default_of(_TASK, "max_detections")  # detection: at most this many published per frame
    labels_file: str = default_of(_TASK, "labels_file")  # class names, one per line ("": the model's, else none)
    detections_topic: str = default_of(_TASK, "detections_topic")  # "" -> daris/<task>/detections
    mask_topic: str = default_of(_TASK, "mask_topic")  # "" -> daris/<task>/mask
    mask_resolution: str = default_of(_TASK, "mask_resolution")  # "source" | "model"
    labels_topic: str = default_of(_TASK, "labels_topic")  # "" -> daris/<task>/labels

    def output_topics(self) -> dict[str, str]:
        """The task's output topics by parameter (result, detections, mask, labels)."""
        return {"output_topic": self.output_topic, "detections_topic": self.detections_topic,
                "mask_topic": self.mask_topic, "labels_topic": self.labels_topic}

    @property
    def rate(self) -> float:
        return 1.0 / self.period


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Scheduler hyperparameters (paper section III-C) and node options: the scheduler parameters of
    :mod:`daris_ros.parameter_table` (``task_names`` becomes ``tasks``), with its defaults."""

    policy: str = default_of(_SCHED, "policy")
    backend: str = default_of(_SCHED, "backend")
    device: str = default_of(_SCHED, "device")
    n_contexts: int = default_of(_SCHED, "n_contexts")
    n_streams: int = default_of(_SCHED, "n_streams")
    oversubscription: float = default_of(_SCHED, "oversubscription")
    mret_window: int = default_of(_SCHED, "mret_window")
    hp_admission: bool = default_of(_SCHED, "hp_admission")
    reprobe_after: int = default_of(_SCHED, "reprobe_after")  # forget MRETs after this many rejections (0: never)
    skip_late: float = default_of(_SCHED, "skip_late")  # skip a job not started within this many deadlines (0: off)
    no_staging: bool = default_of(_SCHED, "no_staging")
    no_last: bool = default_of(_SCHED, "no_last")
    no_prior: bool = default_of(_SCHED, "no_prior")
    no_fixed: bool = default_of(_SCHED, "no_fixed")
    cuda_graphs: bool = default_of(_SCHED, "cuda_graphs")
    stats_period: float = default_of(_SCHED, "stats_period")
    top_k: int = default_of(_SCHED, "top_k")
    profile_runs: int = default_of(_SCHED, "profile_runs")
    afet_profile: str = default_of(_SCHED, "afet_profile")  # full_load | isolated | auto (full load on a CUDA device)
    afet_cache: str = default_of(_SCHED, "afet_cache")  # JSON file of profiled AFETs, reused across starts ("": none)
    miss_rate_warn: float = default_of(_SCHED, "miss_rate_warn")
    miss_rate_error: float = default_of(_SCHED, "miss_rate_error")
    rejection_rate_warn: float = default_of(_SCHED, "rejection_rate_warn")
    stale_warn_periods: int = default_of(_SCHED, "stale_warn_periods")
    max_pixels: int = default_of(_SCHED, "max_pixels")
    stamp_future_tolerance: float = default_of(_SCHED, "stamp_future_tolerance")  # s; frames further ahead: dropped
    stamp_past_tolerance: float = default_of(_SCHED, "stamp_past_tolerance")  # s; further behind: dropped (0: off)
    worker_stage_timeout: float = default_of(_SCHED, "worker_stage_timeout")  # s; longer: a hung worker (0: off)
    gpu_decode: bool = default_of(_SCHED, "gpu_decode")  # JPEG decoded on the GPU (nvJPEG) on a CUDA device
    decode_threads: int = default_of(_SCHED, "decode_threads")  # decode pool threads (0: the loop decodes)
    intake_thread: bool = default_of(_SCHED, "intake_thread")  # frames taken by a thread of their own
    intake_processes: int = default_of(_SCHED, "intake_processes")  # frames taken by processes of their own
    lp_host_busy_limit: float = default_of(_SCHED, "lp_host_busy_limit")  # loop busy share over which LP: rejected
    mps_pipe_directory: str = default_of(_SCHED, "mps_pipe_directory")  # "": DARIS_MPS_PIPE_DIRECTORY, ...
    mps_log_directory: str = default_of(_SCHED, "mps_log_directory")  # "": DARIS_MPS_LOG_DIRECTORY, ...
    mps_spares: int = default_of(_SCHED, "mps_spares")  # ready spare worker processes (-1: DARIS_MPS_SPARES, else 0)
    mps_frame_pixels: int = default_of(_SCHED, "mps_frame_pixels")  # frames up to this size: preprocessed in workers
    batching: bool = default_of(_SCHED, "batching")  # cross-task stage batching (docs/policy.md; beyond the paper)
    batch_sizes: tuple[int, ...] = default_of(_SCHED, "batch_sizes")  # captured batch sizes (1 included)
    batch_pad_limit: float = default_of(_SCHED, "batch_pad_limit")  # BatchingConfig.pad_limit
    batch_lp_admit_margin: float = default_of(_SCHED, "batch_lp_admit_margin")  # BatchingConfig.lp_admit_margin
    batch_min_size: int = default_of(_SCHED, "batch_min_size")  # BatchingConfig.min_size
    release_trigger: str = default_of(_SCHED, "release_trigger")  # "frame" (new frame, at most 1/T) | "clock"
    release_slack: float = default_of(_SCHED, "release_slack")  # frame trigger: share of a period a frame may be early
    release_window: float = default_of(_SCHED, "release_window")  # frame trigger: release grid in s (0: on arrival)
    launch_ahead: int = default_of(_SCHED, "launch_ahead")  # dispatches a stream may hold queued behind its running one
    ahead_lead: float = default_of(_SCHED, "ahead_lead")  # s: how early before a stream frees the next is formed
    feasibility: str = default_of(_SCHED, "feasibility")  # HP utilization over N_s at start-up: refuse | warn
    autostart: bool = default_of(_SCHED, "autostart")  # configure and activate at start (False: a lifecycle manager)
    perception_msgs: str = default_of(_SCHED, "perception_msgs")  # detections/labels: auto|vision_msgs|daris_ros
    sm_limit: int = default_of(_SCHED, "sm_limit")  # SMs of the GPU this node may use, eq. 9's N_SM,max (0: all)
    tasks: tuple[TaskSettings, ...] = field(default_factory=tuple)

    def task(self, name: str) -> TaskSettings:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


# The dataclasses and the table agree (names, defaults), or this module does not import.
check_dataclass(TaskSettings, tuple(_TASK.values()), extra_fields=("name",), extra_parameters=("rate",))
check_dataclass(SchedulerSettings, SCHEDULER_PARAMETERS, extra_fields=("tasks",), extra_parameters=("task_names",))

#: Parameters every ROS 2 node has (rclpy declares them); accepted in a parameter file.
ROS_NODE_PARAMETERS = ("use_sim_time", "start_type_description_service")
ROS_NODE_PARAMETER_PREFIXES = ("qos_overrides.",)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'rate'?)`` for the closest of ``choices``, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_parameter(name: str) -> ConfigError | None:
    """The error for a parameter name that is neither a scheduler parameter, nor ``tasks.<task>.<field>``
    with a known field, nor a parameter every ROS node has; None for a known name."""
    if name in SCHEDULER_FIELDS or name in ROS_NODE_PARAMETERS or name.startswith(ROS_NODE_PARAMETER_PREFIXES):
        return None
    if name.startswith("tasks."):
        task, _, fld = name[len("tasks."):].partition(".")
        if not fld:
            return ConfigError(name, f"tasks.{task} must be a block of task fields ({', '.join(TASK_FIELDS)})")
        if fld in TASK_FIELDS:
            return None
        return ConfigError(name, f"unknown task field {fld!r}{did_you_mean(fld, TASK_FIELDS)}; task fields: "
                                 f"{', '.join(TASK_FIELDS)}")
    hint = did_you_mean(name, SCHEDULER_FIELDS + ROS_NODE_PARAMETERS) or did_you_mean(name.split(".")[0], ("tasks",))
    return ConfigError(name, f"unknown parameter{hint}; see the parameter table in README.md")


def check_parameter_names(names: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` for the first unknown name (a misspelt field is not silently ignored)."""
    for name in names:
        err = unknown_parameter(name)
        if err is not None:
            raise err



def _require(cond: bool, parameter: str, message: str) -> None:
    if not cond:
        raise ConfigError(parameter, message)


def read_task_parameters(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every task parameter of task ``name`` from ``raw`` (``<field>: value``), typed and checked against the table
    (type, choices, range); unset ones are the table's defaults. A ConfigError names ``tasks.<name>.<field>``."""
    values = dict(raw)
    size = values.get("input_size")
    if isinstance(size, int) and not isinstance(size, bool):
        values["input_size"] = [size, size]  # a square input: input_size: 224
    return {p.name: parse_value(p, values.get(p.name), f"tasks.{name}.{p.name}") for p in _TASK.values()}


def read_scheduler_parameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every scheduler-level parameter but ``task_names`` from ``raw``, typed and checked against the table; unset
    ones are the table's defaults."""
    return {p.name: parse_value(p, raw.get(p.name)) for p in SCHEDULER_PARAMETERS if p.name != "task_names"}


def validate_task(name: str, raw: Mapping[str, Any], known_models: Sequence[str] | None = None) -> TaskSettings:
    """Build one :class:`TaskSettings` from ``tasks.<name>.*`` values: each checked against the parameter table,
    then the rules between them (a rate or a period, the deadline's default, the default output topic)."""
    p = f"tasks.{name}"
    _require(bool(name) and name.replace("_", "").isalnum(), "task_names",
             f"task name {name!r} must be non-empty and contain only letters, digits and '_'")
    v = read_task_parameters(name, raw)
    _require(bool(v["topic"]), f"{p}.topic", "a camera topic is required (e.g. /camera/front/image_raw)")
    rate, period = v["rate"], v["period"]
    _require(not (rate > 0 and period > 0), f"{p}.rate", "give either rate (Hz) or period (s), not both")
    _require(rate > 0 or period > 0, f"{p}.rate", "a rate (Hz) or a period (s) > 0 is required")
    period = period if period > 0 else 1.0 / rate
    deadline = v["deadline"] if v["deadline"] > 0 else period  # 0 or unset: the period
    model = v["model"]
    _require(bool(model), f"{p}.model", "a model name is required (e.g. resnet18)")
    if known_models is not None:
        _require(model in known_models, f"{p}.model",
                 f"unknown model {model!r}; available: {', '.join(sorted(known_models))}")
    weights = v["weights"]
    if weights:
        _require(os.path.isfile(weights), f"{p}.weights", f"weights file {weights!r} does not exist")
    model_file = os.path.splitext(model)[1].lower() in MODEL_FILE_SUFFIXES
    if model_file:
        _require(os.path.isfile(os.path.expanduser(model)), f"{p}.model", f"model file {model!r} does not exist")
        _require(not weights, f"{p}.weights", "a .pt2/.onnx model file carries its weights; leave weights empty")
    _require(model_file or not v["stage_boundaries"], f"{p}.stage_boundaries",
             "stage boundaries apply to .pt2/.onnx model files only")
    height, width = v["input_size"]
    if v["labels_file"]:
        read_labels_file(v["labels_file"], f"{p}.labels_file")  # exists, readable, UTF-8, names a class
    topics = {f: v[f] or f"daris/{name}/{suffix}" for f, suffix in (("output_topic", "result"),
              ("detections_topic", "detections"), ("mask_topic", "mask"), ("labels_topic", "labels"))}
    seen: dict[str, str] = {}
    for fld, topic in topics.items():
        other = seen.setdefault(topic, fld)
        if other != fld:  # named: the field given explicitly (the later one when both are)
            named, also = (fld, other) if v[fld] else (other, fld)
            raise ConfigError(f"{p}.{named}", f"topic {topic!r} is also the task's {also}; output topics must differ")
    return TaskSettings(name=name, topic=v["topic"], priority=v["priority"], period=period, deadline=deadline,
                        model=model, input_type=v["input_type"], weights=weights, input_size=(height, width),
                        output_topic=topics["output_topic"],
                        qos_reliability=v["qos_reliability"], qos_depth=v["qos_depth"], precision=v["precision"],
                        channels_last=v["channels_last"], stage_boundaries=v["stage_boundaries"],
                        score_threshold=v["score_threshold"],
                        max_detections=v["max_detections"], labels_file=v["labels_file"],
                        detections_topic=topics["detections_topic"], mask_topic=topics["mask_topic"],
                        mask_resolution=v["mask_resolution"], labels_topic=topics["labels_topic"])


def validate_settings(raw: Mapping[str, Any], tasks: Sequence[TaskSettings]) -> SchedulerSettings:
    """Build :class:`SchedulerSettings` from scheduler-level values and already validated tasks: each value
    checked against the parameter table, then the rules between parameters."""
    s = SchedulerSettings(**read_scheduler_parameters(raw), tasks=tuple(tasks))
    if s.policy == "STR":
        _require(s.n_contexts == 1, "n_contexts", "policy STR uses exactly one context (N_c = 1)")
    if s.policy == "MPS":
        _require(s.n_streams == 1, "n_streams", "policy MPS uses one stream per context (N_s = 1)")
    _require(s.oversubscription <= s.n_contexts, "oversubscription",
             f"OS = {s.oversubscription} is not allowed: 1 <= OS <= n_contexts ({s.n_contexts})")
    _require(s.miss_rate_warn <= s.miss_rate_error, "miss_rate_warn",
             "need 0 <= miss_rate_warn <= miss_rate_error <= 1")
    _require(s.skip_late == 0 or s.skip_late >= 1, "skip_late",
             f"{s.skip_late} is not allowed: 0 (off) or 1..{MAX_SKIP_LATE:g} deadlines (below 1 a job that could "
             "still meet its deadline would be skipped)")
    _require(s.mps_frame_pixels <= s.max_pixels, "mps_frame_pixels",
             f"{s.mps_frame_pixels} is not allowed: 0 (preprocess on the host) .. max_pixels ({s.max_pixels})")
    _validate_batching(s)
    if s.backend == "cpu":
        _require(s.device == "cpu" or s.device.startswith("cuda"), "device",
                 f"{s.device!r} is not allowed: 'cpu' or 'cuda[:N]'")
    seen: dict[str, str] = {}
    for t in s.tasks:
        _require(t.topic not in seen, f"tasks.{t.name}.topic",
                 f"topic {t.topic!r} is already used by task {seen.get(t.topic)!r}; topics must be unique")
        seen[t.topic] = t.name
    outs = [t.output_topic for t in s.tasks]
    _require(len(set(outs)) == len(outs), "output_topic", "output topics must be unique per task")
    owners: dict[str, str] = {}
    for t in s.tasks:
        for fld, topic in t.output_topics().items():
            if not topic:  # unset (settings built in code, e.g. by the bench): daris/<task>/..., unique per task
                continue
            owner = owners.setdefault(topic, t.name)
            _require(owner == t.name, f"tasks.{t.name}.{fld}",
                     f"topic {topic!r} is already an output topic of task {owner!r}; output topics must be unique")
    return s


def _validate_batching(s: SchedulerSettings) -> None:
    """Batching parameters, and what batching and reduced precision need from the backend."""
    sizes = s.batch_sizes
    _require(len(sizes) > 0 and 1 in sizes, "batch_sizes", f"{list(sizes)} is not allowed: the sizes must include 1")
    _require(s.batch_min_size <= max(sizes), "batch_min_size",
             f"{s.batch_min_size} is not allowed: 1..{max(sizes)} (the largest batch size)")
    if s.batching:
        _require(s.backend in BATCHING_BACKENDS, "batching",
                 f"backend {s.backend!r} cannot run batched stages; use one of {', '.join(BATCHING_BACKENDS)} "
                 "(or batching: false)")
    if s.backend == "mps":
        for t in s.tasks:
            _require(t.precision == "fp32", f"tasks.{t.name}.precision",
                     f"{t.precision!r} is not supported by the mps backend (its workers run fp32); use str or green")
            _require(not t.channels_last, f"tasks.{t.name}.channels_last",
                     "not supported by the mps backend (its workers run NCHW); use str or green")


def settings_from_mapping(params: Mapping[str, Any], known_models: Sequence[str] | None = None
                          ) -> SchedulerSettings:
    """Validate a flat or nested ``ros__parameters`` mapping (as a YAML parameter file holds it)."""
    flat = flatten_parameters(params)
    check_parameter_names(flat)
    names = flat.get("task_names", [])
    _require(isinstance(names, list | tuple), "task_names", "must be a list of task names")
    _require(len(set(names)) == len(names), "task_names", "task names must be unique")
    tasks = []
    for name in names:
        prefix = f"tasks.{name}."
        raw = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        tasks.append(validate_task(str(name), raw, known_models))
    return validate_settings(flat, tasks)


def flatten_parameters(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted names, as ROS 2 does for YAML parameter files."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_parameters(value, name + "."))
        else:
            out[name] = value
    return out


def load_parameter_file(path: str | Path, node_name: str = "daris_scheduler") -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` (or of ``/**``) in a ROS 2 YAML parameter file, flattened."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}", f"/**/{node_name}"):
        section = doc.get(key)
        if isinstance(section, Mapping) and isinstance(section.get("ros__parameters"), Mapping):
            merged.update(flatten_parameters(section["ros__parameters"]))
    if not merged:
        raise ConfigError("ros__parameters", f"{path}: no '{node_name}: ros__parameters:' section")
    return merged
