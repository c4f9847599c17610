"""Validated configuration of a scheduler node: the scheduler hyperparameters and the camera tasks.

ROS-free: the ROS node fills these from its declared parameters, the demo and the bench fill them from
the same YAML parameter files (``ros__parameters``) with :func:`load_parameter_file`. Every validation
error is a :class:`ConfigError` that names the parameter and says what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

POLICIES = ("STR", "MPS", "MPS+STR")
BACKENDS = ("cpu", "str", "mps", "green")
AFET_PROFILES = ("auto", "full_load", "isolated")
PRIORITIES = ("HP", "LP")
INPUT_TYPES = ("image", "compressed")
QOS_RELIABILITY = ("best_effort", "reliable")
PRECISIONS = ("fp32", "fp16", "bf16")
#: What the node does when the profiled HP utilization of a context exceeds N_s (daris_ros.core.feasibility).
FEASIBILITY_MODES = ("refuse", "warn")
#: Backends that run cross-task batched stages (``batching``): in-process models the engine can stack rows for.
BATCHING_BACKENDS = ("cpu", "str", "green")
MAX_BATCH_SIZE = 1024
#: The largest skip_late (deadlines after its release at which an unstarted job is skipped).
MAX_SKIP_LATE = 1000.0


class ConfigError(ValueError):
    """An invalid parameter value. ``parameter`` is the full parameter name."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"parameter '{parameter}': {message}")
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """One camera task: a periodic job releasing the latest frame of ``topic`` every ``period``."""

    name: str
    topic: str
    priority: str  # "HP" | "LP"
    period: float  # T_i, seconds
    deadline: float  # D_i, seconds (defaults to the period)
    model: str
    input_type: str = "image"
    weights: str = ""
    input_size: tuple[int, int] = (224, 224)
    output_topic: str = ""
    qos_reliability: str = "best_effort"  # sensor-data profile by default
    qos_depth: int = 1
    precision: str = "fp32"  # fp32 | fp16 | bf16: converted weights (runtime/models/precision.py)
    channels_last: bool = False  # NHWC weights and inputs

    @property
    def rate(self) -> float:
        return 1.0 / self.period


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Scheduler hyperparameters (paper section III-C) and node options."""

    policy: str = "MPS"
    backend: str = "cpu"
    device: str = "cpu"
    n_contexts: int = 1
    n_streams: int = 1
    oversubscription: float = 1.0
    mret_window: int = 5
    hp_admission: bool = False
    reprobe_after: int = 100  # forget a task's MRET after this many rejected releases in a row (0: never)
    skip_late: float = 2.0  # SchedulerConfig.skip_late: skip a job not started within this many deadlines (0: off)
    no_staging: bool = False
    no_last: bool = False
    no_prior: bool = False
    no_fixed: bool = False
    cuda_graphs: bool = True
    stats_period: float = 1.0
    top_k: int = 5
    profile_runs: int = 5
    afet_profile: str = "auto"  # full_load | isolated | auto (full load on a CUDA device)
    afet_cache: str = ""  # JSON file of profiled AFETs, reused across starts ("": none)
    miss_rate_warn: float = 0.02
    miss_rate_error: float = 0.10
    rejection_rate_warn: float = 0.0
    stale_warn_periods: int = 1
    max_pixels: int = 4096 * 4096
    stamp_future_tolerance: float = 1.0  # s; frames stamped further ahead of the node's clock are dropped
    stamp_past_tolerance: float = 0.0  # s; frames stamped further behind are dropped (0: no check)
    worker_stage_timeout: float = 2.0  # s; a stage running longer means a hung worker (0: no check)
    gpu_decode: bool = True  # JPEG decoded on the GPU (nvJPEG) when the backend's device is CUDA
    mps_pipe_directory: str = ""  # mps: the daemon's pipe directory ("": DARIS_MPS_PIPE_DIRECTORY, ...)
    mps_log_directory: str = ""  # mps: the daemon's log directory ("": DARIS_MPS_LOG_DIRECTORY, ...)
    mps_spares: int = -1  # mps: ready spare worker processes (-1: DARIS_MPS_SPARES, else 0)
    mps_frame_pixels: int = 0  # mps: frames up to this size are preprocessed in the workers (0: on the host)
    batching: bool = False  # cross-task stage batching (docs/policy.md; beyond the paper)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # captured batch sizes (1 included)
    batch_pad_limit: float = 0.1  # BatchingConfig.pad_limit
    batch_lp_admit_margin: float = 0.3  # BatchingConfig.lp_admit_margin (0: off, eq. 12 alone)
    batch_min_size: int = 1  # BatchingConfig.min_size
    release_trigger: str = "frame"  # "frame": a task is released when its new frame arrives (at most 1/T); "clock"
    release_slack: float = 0.25  # frame trigger: the share of a period a frame may come early and still be released
    launch_ahead: int = 0  # SchedulerConfig.launch_ahead: dispatches a stream may hold queued behind its running one
    ahead_lead: float = 0.001  # SchedulerConfig.ahead_lead (s): how early before a stream frees the next is formed
    feasibility: str = "refuse"  # HP utilization over N_s in a context at start-up: refuse (exit 2) | warn (run)
    sm_limit: int = 0  # SMs of the GPU this node may use, eq. 9's N_SM,max (0: the whole device)
    tasks: tuple[TaskSettings, ...] = field(default_factory=tuple)

    def task(self, name: str) -> TaskSettings:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


# Fields of a task in the parameter file: tasks.<name>.<field>.
TASK_FIELDS = ("topic", "priority", "rate", "period", "deadline", "model", "input_type", "weights",
               "input_size", "output_topic", "qos_reliability", "qos_depth", "precision", "channels_last")

#: Scheduler-level parameters (everything but the tasks): the fields of SchedulerSettings, and task_names.
SCHEDULER_FIELDS = tuple(f.name for f in fields(SchedulerSettings) if f.name != "tasks") + ("task_names",)
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


def validate_task(name: str, raw: Mapping[str, Any], known_models: Sequence[str] | None = None) -> TaskSettings:
    """Build one :class:`TaskSettings` from ``tasks.<name>.*`` values."""
    p = f"tasks.{name}"
    _require(bool(name) and name.replace("_", "").isalnum(), "task_names",
             f"task name {name!r} must be non-empty and contain only letters, digits and '_'")
    topic = _str(raw, "topic", "", f"{p}.topic")
    _require(bool(topic), f"{p}.topic", "a camera topic is required (e.g. /camera/front/image_raw)")
    priority = _str(raw, "priority", "LP", f"{p}.priority").upper()
    _require(priority in PRIORITIES, f"{p}.priority", f"{priority!r} is not one of {', '.join(PRIORITIES)}")
    rate = _float(raw, "rate", 0.0, f"{p}.rate")
    period = _float(raw, "period", 0.0, f"{p}.period")
    _require(rate >= 0 and math.isfinite(rate), f"{p}.rate", f"{rate} Hz is not allowed: must be > 0")
    _require(period >= 0 and math.isfinite(period), f"{p}.period", f"{period} s is not allowed: must be > 0")
    _require(not (rate > 0 and period > 0), f"{p}.rate",
             "give either rate (Hz) or period (s), not both")
    _require(rate > 0 or period > 0, f"{p}.rate", "a rate (Hz) or a period (s) > 0 is required")
    period = period if period > 0 else 1.0 / rate
    deadline = _float(raw, "deadline", 0.0, f"{p}.deadline")
    _require(deadline >= 0 and math.isfinite(deadline), f"{p}.deadline",
             f"{deadline} s is not allowed: must be > 0 (0 or unset means: the period)")
    deadline = deadline if deadline > 0 else period
    model = _str(raw, "model", "", f"{p}.model")
    _require(bool(model), f"{p}.model", "a model name is required (e.g. resnet18)")
    if known_models is not None:
        _require(model in known_models, f"{p}.model",
                 f"unknown model {model!r}; available: {', '.join(sorted(known_models))}")
    input_type = _str(raw, "input_type", "image", f"{p}.input_type") or "image"
    _require(input_type in INPUT_TYPES, f"{p}.input_type", f"{input_type!r} is not one of {INPUT_TYPES}")
    weights = _str(raw, "weights", "", f"{p}.weights")
    if weights:
        _require(os.path.isfile(weights), f"{p}.weights", f"weights file {weights!r} does not exist")
    size = raw.get("input_size", [224, 224])
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    size = list(_int_tuple(size, f"{p}.input_size"))
    _require(len(size) == 2 and all(16 <= v <= 4096 for v in size), f"{p}.input_size",
             f"{size} is not allowed: give [height, width], each between 16 and 4096")
    output_topic = _str(raw, "output_topic", "", f"{p}.output_topic") or f"daris/{name}/result"
    reliability = (_str(raw, "qos_reliability", "best_effort", f"{p}.qos_reliability") or "best_effort").lower()
    _require(reliability in QOS_RELIABILITY, f"{p}.qos_reliability",
             f"{reliability!r} is not one of {', '.join(QOS_RELIABILITY)}")
    depth = _int(raw, "qos_depth", 1, f"{p}.qos_depth")
    _require(1 <= depth <= 1000, f"{p}.qos_depth", f"{depth} is not allowed: 1..1000")
    precision = (_str(raw, "precision", "fp32", f"{p}.precision") or "fp32").lower()
    _require(precision in PRECISIONS, f"{p}.precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    return TaskSettings(name=name, topic=topic, priority=priority, period=period, deadline=deadline,
                        model=model, input_type=input_type, weights=weights,
                        input_size=(size[0], size[1]), output_topic=output_topic,
                        qos_reliability=reliability, qos_depth=depth, precision=precision,
                        channels_last=_bool(raw, "channels_last", False, f"{p}.channels_last"))


def validate_settings(raw: Mapping[str, Any], tasks: Sequence[TaskSettings]) -> SchedulerSettings:
    """Build :class:`SchedulerSettings` from scheduler-level values and already validated tasks."""
    s = SchedulerSettings(
        policy=_str(raw, "policy", "MPS").upper(),
        backend=_str(raw, "backend", "cpu").lower(),
        device=_str(raw, "device", "cpu"),
        n_contexts=_int(raw, "n_contexts", 1),
        n_streams=_int(raw, "n_streams", 1),
        oversubscription=_float(raw, "oversubscription", 1.0),
        mret_window=_int(raw, "mret_window", 5),
        hp_admission=_bool(raw, "hp_admission", False),
        reprobe_after=_int(raw, "reprobe_after", 100),
        skip_late=_float(raw, "skip_late", 2.0),
        no_staging=_bool(raw, "no_staging", False),
        no_last=_bool(raw, "no_last", False),
        no_prior=_bool(raw, "no_prior", False),
        no_fixed=_bool(raw, "no_fixed", False),
        cuda_graphs=_bool(raw, "cuda_graphs", True),
        stats_period=_float(raw, "stats_period", 1.0),
        top_k=_int(raw, "top_k", 5),
        profile_runs=_int(raw, "profile_runs", 5),
        afet_profile=_str(raw, "afet_profile", "auto").lower(),
        afet_cache=_str(raw, "afet_cache", ""),
        miss_rate_warn=_float(raw, "miss_rate_warn", 0.02),
        miss_rate_error=_float(raw, "miss_rate_error", 0.10),
        rejection_rate_warn=_float(raw, "rejection_rate_warn", 0.0),
        stale_warn_periods=_int(raw, "stale_warn_periods", 1),
        max_pixels=_int(raw, "max_pixels", 4096 * 4096),
        stamp_future_tolerance=_float(raw, "stamp_future_tolerance", 1.0),
        stamp_past_tolerance=_float(raw, "stamp_past_tolerance", 0.0),
        worker_stage_timeout=_float(raw, "worker_stage_timeout", 2.0),
        gpu_decode=_bool(raw, "gpu_decode", True),
        mps_pipe_directory=_str(raw, "mps_pipe_directory", ""),
        mps_log_directory=_str(raw, "mps_log_directory", ""),
        mps_spares=_int(raw, "mps_spares", -1),
        mps_frame_pixels=_int(raw, "mps_frame_pixels", 0),
        batching=_bool(raw, "batching", False),
        batch_sizes=_int_tuple(raw.get("batch_sizes", (1, 2, 4, 8, 16, 32)), "batch_sizes"),
        batch_pad_limit=_float(raw, "batch_pad_limit", 0.1),
        batch_lp_admit_margin=_float(raw, "batch_lp_admit_margin", 0.3),
        batch_min_size=_int(raw, "batch_min_size", 1),
        release_trigger=_str(raw, "release_trigger", "frame"),
        release_slack=_float(raw, "release_slack", 0.25),
        launch_ahead=_int(raw, "launch_ahead", 0),
        ahead_lead=_float(raw, "ahead_lead", 0.001),
        feasibility=_str(raw, "feasibility", "refuse").lower(),
        sm_limit=_int(raw, "sm_limit", 0),
        tasks=tuple(tasks),
    )
    _require(s.policy in POLICIES, "policy", f"{s.policy!r} is not one of {', '.join(POLICIES)}")
    _require(s.backend in BACKENDS, "backend", f"{s.backend!r} is not one of {', '.join(BACKENDS)}")
    _require(s.release_trigger in ("frame", "clock"), "release_trigger",
             f"{s.release_trigger!r} is not one of frame, clock")
    _require(s.feasibility in FEASIBILITY_MODES, "feasibility",
             f"{s.feasibility!r} is not one of {', '.join(FEASIBILITY_MODES)}")
    _require(0.0 <= s.release_slack < 1.0, "release_slack", f"{s.release_slack} is not allowed: [0, 1)")
    _require(0 <= s.launch_ahead <= 8, "launch_ahead", f"{s.launch_ahead} is not allowed: 0..8")
    _require(0.0 <= s.ahead_lead <= 1.0, "ahead_lead", f"{s.ahead_lead} s is not allowed: 0..1 s")
    _require(s.n_contexts >= 1, "n_contexts", f"{s.n_contexts} is not allowed: must be >= 1")
    _require(s.n_streams >= 1, "n_streams", f"{s.n_streams} is not allowed: must be >= 1")
    _require(s.sm_limit >= 0, "sm_limit", f"{s.sm_limit} is not allowed: >= 0 SMs (0: the whole device)")
    if s.policy == "STR":
        _require(s.n_contexts == 1, "n_contexts", "policy STR uses exactly one context (N_c = 1)")
    if s.policy == "MPS":
        _require(s.n_streams == 1, "n_streams", "policy MPS uses one stream per context (N_s = 1)")
    _require(1.0 <= s.oversubscription <= s.n_contexts, "oversubscription",
             f"OS = {s.oversubscription} is not allowed: 1 <= OS <= n_contexts ({s.n_contexts})")
    _require(s.mret_window >= 1, "mret_window", f"{s.mret_window} is not allowed: must be >= 1")
    _require(s.stats_period > 0, "stats_period", f"{s.stats_period} s is not allowed: must be > 0")
    _require(1 <= s.top_k <= 100, "top_k", f"{s.top_k} is not allowed: 1..100")
    _require(s.profile_runs >= 1, "profile_runs", f"{s.profile_runs} is not allowed: must be >= 1")
    _require(s.afet_profile in AFET_PROFILES, "afet_profile",
             f"{s.afet_profile!r} is not one of {', '.join(AFET_PROFILES)}")
    _require(0 <= s.miss_rate_warn <= s.miss_rate_error <= 1, "miss_rate_warn",
             "need 0 <= miss_rate_warn <= miss_rate_error <= 1")
    _require(0 <= s.rejection_rate_warn <= 1, "rejection_rate_warn", "must be within [0, 1]")
    _require(s.stale_warn_periods >= 1, "stale_warn_periods", f"{s.stale_warn_periods} is not allowed: >= 1")
    _require(s.max_pixels >= 1, "max_pixels", f"{s.max_pixels} is not allowed: >= 1")
    _require(s.reprobe_after >= 0, "reprobe_after", f"{s.reprobe_after} is not allowed: >= 0 (0: never)")
    _require(s.skip_late == 0 or 1 <= s.skip_late <= MAX_SKIP_LATE, "skip_late",
             f"{s.skip_late} is not allowed: 0 (off) or 1..{MAX_SKIP_LATE:g} deadlines (below 1 a job that could "
             "still meet its deadline would be skipped)")
    _require(0 <= s.mps_frame_pixels <= s.max_pixels, "mps_frame_pixels",
             f"{s.mps_frame_pixels} is not allowed: 0 (preprocess on the host) .. max_pixels ({s.max_pixels})")
    _require(-1 <= s.mps_spares <= 16, "mps_spares", f"{s.mps_spares} is not allowed: -1 (from DARIS_MPS_SPARES) "
             "or 0..16 ready spare worker processes")
    for name in ("stamp_future_tolerance", "stamp_past_tolerance", "worker_stage_timeout"):
        v = getattr(s, name)
        _require(math.isfinite(v) and v >= 0, name, f"{v} s is not allowed: >= 0 (0 disables the check)")
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
    return s


def _int_tuple(value: Any, parameter: str) -> tuple[int, ...]:
    if isinstance(value, int | float | str):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise ConfigError(parameter, f"{value!r} is not a list of integers") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(parameter, f"{items!r} is not a list of integers")
    return tuple(items)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _float(raw: Mapping[str, Any], key: str, default: float, parameter: str | None = None) -> float:
    """A number (an integer is taken as a number); None is the default. Strings are refused: ``rate: "fast"``
    names its parameter instead of ending in a ValueError."""
    v = raw.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(parameter or key, f"{v!r} is {_type_name(v)}; expected a number")
    return float(v)


def _int(raw: Mapping[str, Any], key: str, default: int, parameter: str | None = None) -> int:
    v = raw.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(parameter or key, f"{v!r} is {_type_name(v)}; expected an integer")
    return v


def _bool(raw: Mapping[str, Any], key: str, default: bool, parameter: str | None = None) -> bool:
    v = raw.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(parameter or key, f"{v!r} is {_type_name(v)}; expected true or false")
    return v


def _str(raw: Mapping[str, Any], key: str, default: str, parameter: str | None = None) -> str:
    v = raw.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise ConfigError(parameter or key, f"{v!r} is {_type_name(v)}; expected a string")
    return v


def _validate_batching(s: SchedulerSettings) -> None:
    """Batching parameters, and what batching and reduced precision need from the backend."""
    sizes = s.batch_sizes
    _require(len(sizes) > 0 and 1 in sizes, "batch_sizes", f"{list(sizes)} is not allowed: the sizes must include 1")
    _require(all(1 <= v <= MAX_BATCH_SIZE for v in sizes), "batch_sizes",
             f"{list(sizes)} is not allowed: every size must be within 1..{MAX_BATCH_SIZE}")
    _require(math.isfinite(s.batch_pad_limit) and 0.0 <= s.batch_pad_limit < 1.0, "batch_pad_limit",
             f"{s.batch_pad_limit} is not allowed: 0 <= batch_pad_limit < 1")
    _require(math.isfinite(s.batch_lp_admit_margin) and s.batch_lp_admit_margin >= 0.0, "batch_lp_admit_margin",
             f"{s.batch_lp_admit_margin} is not allowed: >= 0 (0: off)")
    _require(1 <= s.batch_min_size <= max(sizes), "batch_min_size",
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
