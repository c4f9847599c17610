"""The scheduler node's parameters, each defined once: name, type, default, range or choices, what a change at run
time does, and the description.

Pure Python (no rclpy, no torch). Everything else is derived from these two tables:

* :mod:`daris_ros.settings`: the dataclasses' defaults and the per-parameter validation (:func:`parse_value`: type,
  range, choices), used by the node, the bench, the demo and the replay tools alike;
* :mod:`daris_ros.ros.parameters`: the ROS declarations (``ParameterDescriptor`` with type, range, read-only);
* :mod:`daris_ros.ros.param_file`: the check of parameter files before ``rclpy.init`` (file:line:parameter);
* the parameter table in README.md (:func:`parameter_reference_markdown`)::

    .venv/bin/python -m daris_ros.parameter_table --readme README.md    # rewrite the table in README.md
    .venv/bin/python -m daris_ros.parameter_table --check README.md     # exit 1 when it is out of date

Cross-field rules (a rate or a period, OS <= N_c, batching needs a batching backend, ...) are code in
:mod:`daris_ros.settings`, not table entries.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: A parameter's value once validated (lists are tuples).
Value = bool | int | float | str | tuple[int, ...] | tuple[str, ...]

POLICIES: tuple[str, ...] = ("STR", "MPS", "MPS+STR")
BACKENDS: tuple[str, ...] = ("cpu", "str", "mps", "green")
AFET_PROFILES: tuple[str, ...] = ("auto", "full_load", "isolated")
#: What the node does when the profiled HP utilization of a context exceeds N_s (daris_ros.core.feasibility).
FEASIBILITY_MODES: tuple[str, ...] = ("refuse", "warn")
RELEASE_TRIGGERS: tuple[str, ...] = ("frame", "clock")
PRIORITIES: tuple[str, ...] = ("HP", "LP")
INPUT_TYPES: tuple[str, ...] = ("image", "compressed")
QOS_RELIABILITY: tuple[str, ...] = ("best_effort", "reliable")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: A task's ``model`` ending in one of these is a model file with a graph (daris_ros/runtime/models/graph_file.py).
MODEL_FILE_SUFFIXES: tuple[str, ...] = (".pt2", ".onnx")
#: Where a segmentation task's class mask is published: at the source frame's size or at the model's.
MASK_RESOLUTIONS: tuple[str, ...] = ("source", "model")
#: The message types of the detections and labels topics (README.md, Perception outputs).
PERCEPTION_MSGS: tuple[str, ...] = ("auto", "vision_msgs", "daris_ros")
#: The largest max_detections of a task.
MAX_DETECTIONS = 1000
#: Backends that run cross-task batched stages (``batching``): in-process models the engine can stack rows for.
BATCHING_BACKENDS: tuple[str, ...] = ("cpu", "str", "green")
MAX_BATCH_SIZE = 1024
#: The largest skip_late (deadlines after its release at which an unstarted job is skipped).
MAX_SKIP_LATE = 1000.0
_LARGEST_COUNT = 1 << 30


class ConfigError(ValueError):
    """An invalid parameter value. ``parameter`` is the full parameter name."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"parameter '{parameter}': {message}")
        self.parameter = parameter


class Kind(enum.Enum):
    """A parameter's type, as ROS declares it (a number also takes an integer: dynamic typing)."""

    BOOL = "bool"
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    INTEGER_LIST = "integer list"
    STRING_LIST = "string list"


class Runtime(enum.Enum):
    """What ``ros2 param set`` does with a parameter of a running node (the README's Runtime column)."""

    READ_ONLY = "read-only"  # declared read-only: a change needs a node restart
    LIVE = "settable"  # applied at once
    TASK_RESTART = "task restart"  # tasks.<name>.*: refused while the task runs (remove it, set, add it again)


@dataclasses.dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of the scheduler node (a task field: ``tasks.<name>.<name>``)."""

    name: str
    kind: Kind
    default: Value
    description: str
    runtime: Runtime = Runtime.READ_ONLY
    bounds: tuple[float, float] | None = None  # inclusive; of every item for a list
    choices: tuple[str, ...] = ()
    case: str = ""  # "upper" | "lower": how a string is normalised before the choice check
    blank_is_default: bool = False  # "" stands for the default (a ROS string parameter cannot be unset)
    length: int | None = None  # the number of items of a list
    unit: str = ""

    def __post_init__(self) -> None:
        if self.case not in ("", "upper", "lower"):
            raise ValueError(f"{self.name}: case {self.case!r} is not one of '', 'upper', 'lower'")
        if self.choices and self.default not in self.choices:
            raise ValueError(f"{self.name}: default {self.default!r} is not one of its choices {self.choices}")
        if self.bounds is not None and not self.kind.name.endswith("LIST"):
            low, high = self.bounds
            if not low <= self.default <= high:  # type: ignore[operator]
                raise ValueError(f"{self.name}: default {self.default!r} is outside {low}..{high}")

    @property
    def ros_default(self) -> bool | int | float | str | list[int] | list[str]:
        """The default as ROS declares it (a list, not a tuple)."""
        # ([*t], not list(t): mypy keeps list[int] | list[str] for it, where list() joins the items to object)
        return [*self.default] if isinstance(self.default, tuple) else self.default

    def range_text(self) -> str:
        """``1..64``, ``0..1 s``, ``STR, MPS, MPS+STR`` or ""."""
        if self.choices:
            return ", ".join(self.choices)
        if self.bounds is None:
            return ""
        low, high = self.bounds
        return f"{_number_text(low)}..{_number_text(high)}" + (f" {self.unit}" if self.unit else "")


def _number_text(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


_P = Parameter
_B, _I, _N, _S, _IL, _SL = Kind.BOOL, Kind.INTEGER, Kind.NUMBER, Kind.STRING, Kind.INTEGER_LIST, Kind.STRING_LIST
_LIVE, _TASK_RESTART = Runtime.LIVE, Runtime.TASK_RESTART

#: Scheduler-level parameters, in the README's order.
SCHEDULER_PARAMETERS: tuple[Parameter, ...] = (
    _P("policy", _S, "MPS", "Spatial policy (paper section V): STR (1 context, N_s streams, one global queue), MPS "
       "(N_c contexts x 1 stream) or MPS+STR (N_c x N_s).", choices=POLICIES, case="upper"),
    _P("backend", _S, "cpu", "Execution backend: cpu (worker threads), str (CUDA streams), mps (one MPS client "
       "process per context) or green (green contexts).", choices=BACKENDS, case="lower"),
    _P("device", _S, "cpu", "Device of this node: cpu or cuda:N (one scheduler node per GPU)."),
    _P("n_contexts", _I, 1, "N_c: number of contexts (eq. 9).", bounds=(1, 64)),
    _P("n_streams", _I, 1, "N_s: streams per context; N_p = N_c x N_s stages run concurrently.", bounds=(1, 64)),
    _P("oversubscription", _N, 1.0, "OS: SM oversubscription, 1 <= OS <= N_c (eq. 9).", bounds=(1.0, 64.0)),
    _P("mret_window", _I, 5, "ws: MRET window in stage executions (eqs. 1-2).", runtime=_LIVE, bounds=(1, 1000)),
    _P("hp_admission", _B, False, "Overload+HPA: HP jobs also pass the admission test (section VI-I)."),
    _P("reprobe_after", _I, 100, "Beyond the paper: after this many rejected releases in a row a task forgets its "
       "measured MRETs (eq. 1) and, if LP, its next release is admitted as a probe without eq. 12, so a task "
       "rejected on stale or inflated estimates is measured again (at most one job in reprobe_after + 1; 0: never, "
       "the paper's behaviour).", bounds=(0, _LARGEST_COUNT)),
    _P("skip_late", _N, 2.0, "Beyond the paper, bounded staleness under overload: a job that has not started within "
       "this many deadlines of its release (release + skip_late x D_i) is skipped instead of run: no result, counted "
       "as skipped in TaskStats and /diagnostics (WARN), and as a lost deadline in the miss rate, so a task's "
       "backlog and the age of its results stay bounded when the device falls behind (a slower clock, another "
       "process on the GPU). A started job always finishes. 0: off (the paper's behaviour: every admitted job "
       "runs, however late); else 1..1000.", bounds=(0.0, MAX_SKIP_LATE)),
    _P("no_staging", _B, False, "Ablation: run each DNN as one stage (section VI-F)."),
    _P("no_last", _B, False, "Ablation: do not raise the priority of a task's last stage."),
    _P("no_prior", _B, False, "Ablation: do not raise a stage whose predecessor missed its virtual deadline."),
    _P("no_fixed", _B, False, "Ablation: EDF only, no fixed priority levels."),
    _P("cuda_graphs", _B, True, "Capture a CUDA graph per stage, context and stream (GPU backends)."),
    _P("stats_period", _N, 1.0, "Seconds between stats and /diagnostics messages.", runtime=_LIVE,
       bounds=(0.01, 3600.0), unit="s"),
    _P("top_k", _I, 5, "Classes reported per classification result.", bounds=(1, 100)),
    _P("profile_runs", _I, 5, "Runs per model stage when profiling the initial AFET at start-up.", bounds=(1, 1000)),
    _P("afet_profile", _S, "auto", "Initial AFET profiling (paper IV-A1): full_load (each model's stages on one "
       "stream while random stages keep every other stream busy), isolated (nothing else runs) or auto (full_load "
       "on a CUDA device, isolated on the CPU).", choices=AFET_PROFILES, case="lower"),
    _P("afet_cache", _S, "", "JSON file of profiled AFETs, read at start-up and written after profiling, keyed by "
       "device, torch, backend, layout, graphs, profiling mode and model ('': no cache)."),
    _P("miss_rate_warn", _N, 0.02, "Deadline miss rate at which a task's diagnostic turns WARN.", runtime=_LIVE,
       bounds=(0.0, 1.0)),
    _P("miss_rate_error", _N, 0.10, "Deadline miss rate at which a task's diagnostic turns ERROR.", runtime=_LIVE,
       bounds=(0.0, 1.0)),
    _P("rejection_rate_warn", _N, 0.0, "Fraction of a task's releases rejected during one stats period above which "
       "its diagnostic turns WARN (0: any rejection).", runtime=_LIVE, bounds=(0.0, 1.0)),
    _P("stale_warn_periods", _I, 1, "Stale release periods (no new frame) within one stats period from which a "
       "task's diagnostic turns WARN.", runtime=_LIVE, bounds=(1, 100000)),
    _P("gpu_decode", _B, True, "Decode JPEG CompressedImage frames on the GPU (nvJPEG, torchvision) when the "
       "backend runs in this process on a CUDA device (str, green); PNG and the cpu/mps backends decode on the CPU "
       "(mps workers get host frames through shared memory)."),
    _P("decode_threads", _I, 4, "Threads that decode the camera frames of a release burst (nvJPEG or Pillow), off "
       "the engine's loop (0: the loop decodes them itself); HP frames are decoded before waiting LP frames, and a "
       "frame still waiting at its skip time is not decoded. Each is one more thread wanting the interpreter (GIL).",
       bounds=(0, 16)),
    _P("intake_thread", _B, False, "Camera frames are taken off their subscriptions by a thread of the node with one "
       "wait set (true) instead of the node's executor, whose every wake walks all the node's entities in Python "
       "(false). Off by default: at 48 cameras on an H100 it did not serve more HP frames and lost more frames in "
       "transport (docs/benchmarks/node_e2e/README.md, session 13)."),
    _P("intake_processes", _I, 0, "Processes that take the camera frames off their subscriptions and check them "
       "(header, size, format, stamp), then hand them to the node through a pipe, so that the node's interpreter "
       "(GIL) is left to the engine's loop: rclpy's executor runs Python over every entity of the node at each "
       "received message. 0: the node's process takes them (its executor, or intake_thread). Meant for many "
       "cameras: at 48 JPEG cameras at 30 Hz on an H100 the executor held the GIL about four fifths of the time, "
       "and 4 intake processes took the HP frames served within two periods from 0.03% to 69-71% "
       "(docs/benchmarks/node_e2e/README.md, session 15). Each process is an rclpy node <name>_intake_<k>.",
       bounds=(0, 16)),
    _P("lp_host_busy_limit", _N, 1.0, "LP releases are rejected (counted in rejected and rejected_host) while the "
       "engine's loop was busy more than this share of the last second or so, before their frames are decoded, so "
       "that a host that cannot keep up spends itself on HP jobs (eqs. 11-12 guard the GPU only). 1: off.",
       bounds=(0.05, 1.0)),
    _P("mps_pipe_directory", _S, "", "mps backend: the MPS control daemon's pipe directory. Empty: "
       "DARIS_MPS_PIPE_DIRECTORY, else CUDA_MPS_PIPE_DIRECTORY, else /tmp/nvidia-mps. A running daemon there is "
       "used; otherwise the node starts one and stops it on shutdown."),
    _P("mps_log_directory", _S, "", "mps backend: the MPS daemon's log directory (empty: DARIS_MPS_LOG_DIRECTORY, "
       "else CUDA_MPS_LOG_DIRECTORY, else /var/log/nvidia-mps)."),
    _P("mps_spares", _I, -1, "mps backend: worker processes kept started and ready to replace a dead one (a "
       "replacement without a spare takes seconds). -1: DARIS_MPS_SPARES, else 0.", bounds=(-1, 16)),
    _P("mps_frame_pixels", _I, 0, "mps backend: camera frames of up to this many pixels go to the worker processes "
       "as uint8 (shared memory, 3 bytes a pixel per slot) and are resized and normalised there, on the GPU; larger "
       "frames, and 0 (the default), are preprocessed on the host by the node.", bounds=(0, _LARGEST_COUNT)),
    _P("batching", _B, False, "Beyond the paper: cross-task stage batching (docs/policy.md). Ready stages of tasks "
       "that share a model (model, input size, weights, precision, layout) and a stage run as one batched stage, "
       "sized so that its predicted finish (batch-time MRET) meets the earliest virtual deadline in it; HP stages "
       "never wait for a batch to fill. Backends: cpu, str, green."),
    _P("batch_sizes", _IL, (1, 2, 4, 8, 16, 32), "batching: the batch sizes (1 included); on str/green each gets a "
       "CUDA graph per stage and stream, captured at start-up. A batch of n jobs runs at the smallest size >= n.",
       bounds=(1, MAX_BATCH_SIZE)),
    _P("batch_pad_limit", _N, 0.1, "batching: a batch is padded up to the next size only while the padding is at "
       "most this fraction of it; else it runs at the size below and the rest waits (an HP stage that could then "
       "miss its deadline is padded in). 0: never pad LP stages.", bounds=(0.0, 0.99)),
    _P("batch_lp_admit_margin", _N, 0.3, "batching: LP admission guard on top of eq. 12: the context's queued and "
       "running work per stream plus the task's own cost must stay within this fraction of the deadline (0: off).",
       bounds=(0.0, 100.0)),
    _P("batch_min_size", _I, 1, "batching: a stage is late when it cannot meet its virtual deadline even in a batch "
       "of this size; late stages yield to stages that still can.", bounds=(1, MAX_BATCH_SIZE)),
    _P("release_trigger", _S, "frame", "When a task is released: 'frame' = when its camera's new frame arrives, at "
       "most once per period on average (a frame up to release_slack of a period early is released at once), so a "
       "frame never waits for a clock instant and none is superseded by camera jitter; 'clock' = at the engine's "
       "clock instants, every task of one period together (a rig).", choices=RELEASE_TRIGGERS),
    _P("release_slack", _N, 0.25, "release_trigger frame: the share of a period a frame may arrive early and still "
       "be released on arrival (the long-run release rate stays at most 1/T).", bounds=(0.0, 0.99)),
    _P("release_window", _N, 0.0, "release_trigger frame: new frames are released together on a grid of this many "
       "seconds (0: each on arrival). Cameras that are not synchronised then share releases and their jobs share "
       "batches through every stage: less host work per frame, at up to this much more frame age (with batching, "
       "a batch_pad_limit that lets the gathered jobs run as one batch keeps most of the gain).",
       bounds=(0.0, 1.0), unit="s"),
    _P("launch_ahead", _I, 0, "Beyond the paper: how many dispatches a busy stream may hold queued behind the one it "
       "runs (0: a stage is dispatched only to an idle stream). The next dispatch is formed ahead_lead before the "
       "stream's predicted free time and checked against deadlines from then, so the device starts it without "
       "waiting for the host to see the completion.", bounds=(0, 8)),
    _P("ahead_lead", _N, 0.001, "launch_ahead: how many seconds before a stream's predicted free time its next "
       "dispatch is formed.", bounds=(0.0, 1.0), unit="s"),
    _P("feasibility", _S, "refuse", "What the node does when, after profiling and the offline phase, a context's HP "
       "utilization (eq. 4, sum of u_i = AFET / T_i) exceeds its N_s streams, or an HP task's AFET exceeds its "
       "deadline: refuse (stop with exit code 2 and one line naming the context, the tasks and the figures) or warn "
       "(log a WARN and run; HP deadlines will be missed). LP over-subscription (LP utilization over eq. 11's N_s - "
       "U_hp) is always a WARN with the expected rejection rate. The figures are on /diagnostics.",
       choices=FEASIBILITY_MODES, case="lower"),
    _P("autostart", _B, True, "Managed (lifecycle) node: at start-up the node configures and activates itself, so "
       "one command runs it; false: it starts unconfigured and waits for the configure and activate transitions "
       "(ros2 lifecycle set, a lifecycle manager). README.md, Lifecycle."),
    _P("perception_msgs", _S, "auto", "Message types of the detections and labels topics (README.md, Perception "
       "outputs): vision_msgs (vision_msgs/Detection2DArray and LabelInfo, 4.x; configure fails when vision_msgs is "
       "not installed), daris_ros (the package's own daris_ros/Detection2DArray and LabelInfo, the same fields), or "
       "auto (vision_msgs when it is importable, else daris_ros).", choices=PERCEPTION_MSGS, case="lower"),
    _P("sm_limit", _I, 0, "Beyond the paper, a node that shares its GPU (with lidar, planning, display): the number "
       "of SMs the node may use; eq. 9 sizes its contexts from it (N_SM,max = sm_limit). green: the contexts are "
       "carved from the device's first sm_limit / 8 granules of 8 SMs (Hopper), the rest stays free; str: its "
       "streams run in one green context of sm_limit SMs; mps: each client's CUDA_MPS_ACTIVE_THREAD_PERCENTAGE is "
       "its eq. 9 share of sm_limit over the device's SMs (how many SMs, not which); cpu: eq. 9's arithmetic only "
       "(SMs per context in the stats). At start a GPU backend refuses a limit above the device's SMs or not a "
       "multiple of its granularity (8 for str and green, 2 for mps). 16 = a Jetson AGX Orin's SM count. Reported "
       "in SchedulerStats (sm_limit, usable_sms). 0: the whole device.", bounds=(0, 1 << 16)),
    _P("max_pixels", _I, 4096 * 4096, "Largest accepted frame (width x height); larger frames are dropped and "
       "counted as too_large.", bounds=(1, _LARGEST_COUNT)),
    _P("stamp_future_tolerance", _N, 1.0, "Frames whose header.stamp is more than this many seconds ahead of the "
       "node's clock are dropped and counted as stamp_future (0: no check).", runtime=_LIVE, bounds=(0.0, 3600.0),
       unit="s"),
    _P("stamp_past_tolerance", _N, 0.0, "Frames whose header.stamp is more than this many seconds behind the node's "
       "clock are dropped and counted as stamp_past (0: no check; the default, because a bag replayed on the wall "
       "clock carries its recorded stamps). On a vehicle e.g. 1.0.", runtime=_LIVE, bounds=(0.0, 1e9), unit="s"),
    _P("worker_stage_timeout", _N, 2.0, "A stage running longer than this (seconds) marks its worker as hung: the "
       "worker is replaced and the stage retried once (0: no hang check; dead workers are always detected).",
       bounds=(0.0, 3600.0), unit="s"),
    _P("task_names", _SL, (), "Names of the camera tasks; each has parameters tasks.<name>.*. Settable: removing a "
       "name stops that task, adding one declares tasks.<name>.* and starts the task once they are valid (values "
       "from the parameter file are used when present).", runtime=_LIVE),
)

#: The fields of a task: parameters ``tasks.<task>.<field>``.
TASK_PARAMETERS: tuple[Parameter, ...] = (
    _P("topic", _S, "", "Camera topic (sensor_msgs/msg/Image or CompressedImage).", runtime=_TASK_RESTART),
    _P("priority", _S, "LP", "HP (always admitted, fixed context) or LP (admission test, may migrate).",
       runtime=_LIVE, choices=PRIORITIES, case="upper"),
    _P("rate", _N, 0.0, "Release rate in Hz (give rate or period).", runtime=_LIVE, bounds=(0.0, 10000.0), unit="Hz"),
    _P("period", _N, 0.0, "Release period T_i in seconds (give rate or period).", runtime=_LIVE,
       bounds=(0.0, 3600.0), unit="s"),
    _P("deadline", _N, 0.0, "Relative deadline D_i in seconds; 0 means the period.", runtime=_LIVE,
       bounds=(0.0, 3600.0), unit="s"),
    _P("model", _S, "", "Model: a built-in staged model (resnet18, resnet50, inception_v3, unet; the torchvision "
       "segmentation models deeplabv3_resnet50, deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large, "
       "fcn_resnet50; the torchvision detectors ssdlite320_mobilenet_v3_large, retinanet_resnet50_fpn, "
       "fcos_resnet50_fpn, fasterrcnn_resnet50_fpn, fasterrcnn_mobilenet_v3_large_fpn: docs/models.md), a torchvision "
       "classification model name, the path of a .pt2 (torch.export) or .onnx model file (README.md, Bring your "
       "own model), or the path of a TorchScript file (.pt, .ts, .torchscript; docs/models.md).",
       runtime=_TASK_RESTART),
    _P("input_type", _S, "image", "image (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage).",
       runtime=_TASK_RESTART, choices=INPUT_TYPES, blank_is_default=True),
    _P("weights", _S, "", "Path to a state_dict file; empty means random weights (a warning is logged).",
       runtime=_TASK_RESTART),
    _P("input_size", _IL, (224, 224), "Model input [height, width]; frames are resized to it.",
       runtime=_TASK_RESTART, bounds=(16, 4096), length=2),
    _P("output_topic", _S, "", "Result topic; empty means daris/<task>/result (relative to the namespace).",
       runtime=_TASK_RESTART),
    _P("qos_reliability", _S, "best_effort", "Camera subscription reliability: best_effort (sensor-data profile) or "
       "reliable (e.g. lossless bag replay).", runtime=_TASK_RESTART, choices=QOS_RELIABILITY, case="lower",
       blank_is_default=True),
    _P("qos_depth", _I, 1, "Camera subscription history depth (keep last N); only the newest frame is used.",
       runtime=_TASK_RESTART, bounds=(1, 1000)),
    _P("precision", _S, "fp32", "Model precision: fp32, fp16 or bf16 (converted weights; GPU backends str and green; "
       "the outputs' difference against fp32 is in docs/benchmarks/batching.md).", runtime=_TASK_RESTART,
       choices=PRECISIONS, case="lower", blank_is_default=True),
    _P("stage_boundaries", _SL, (), "A .pt2/.onnx model file's stage boundaries: the graph node (.pt2) or tensor "
       "(.onnx) names after which a stage ends (N names: N + 1 stages; empty: one stage). Checked at start-up: the "
       "staged output must equal the whole model's.", runtime=_TASK_RESTART),
    _P("channels_last", _B, False, "Run the model in channels-last (NHWC) memory format (faster convolutions on "
       "tensor-core GPUs).", runtime=_TASK_RESTART),
    _P("score_threshold", _N, 0.5, "Detection: detections scoring below this are not published.",
       runtime=_TASK_RESTART, bounds=(0.0, 1.0)),
    _P("max_detections", _I, 100, "Detection: at most this many detections per frame are published (the best).",
       runtime=_TASK_RESTART, bounds=(1, MAX_DETECTIONS)),
    _P("labels_file", _S, "", "Class names, one per line (line i names class id i); empty: the model's own names "
       "(torchvision detectors and segmenters), else none. The file must exist and be UTF-8 text.",
       runtime=_TASK_RESTART),
    _P("detections_topic", _S, "", "Detection: the detections topic; empty means daris/<task>/detections.",
       runtime=_TASK_RESTART),
    _P("mask_topic", _S, "", "Segmentation: the class mask topic (sensor_msgs/Image mono8, class id per pixel); "
       "empty means daris/<task>/mask.", runtime=_TASK_RESTART),
    _P("mask_resolution", _S, "source", "Segmentation: the mask at the source frame's size (source: resized on the "
       "device, nearest) or at the model's input size (model: scale by the source size in InferenceResult).",
       runtime=_TASK_RESTART, choices=MASK_RESOLUTIONS, case="lower", blank_is_default=True),
    _P("labels_topic", _S, "", "The class names (LabelInfo, latched: transient-local, depth 1); empty means "
       "daris/<task>/labels.", runtime=_TASK_RESTART),
)

SCHEDULER_BY_NAME: dict[str, Parameter] = {p.name: p for p in SCHEDULER_PARAMETERS}
TASK_BY_NAME: dict[str, Parameter] = {p.name: p for p in TASK_PARAMETERS}
#: Scheduler-level parameter names (everything but the tasks' fields), task_names included.
SCHEDULER_FIELDS: tuple[str, ...] = tuple(SCHEDULER_BY_NAME)
#: Fields of a task in the parameter file: tasks.<name>.<field>.
TASK_FIELDS: tuple[str, ...] = tuple(TASK_BY_NAME)
#: Task fields that change a running task through ``ros2 param set``; the others need the task restarted.
RUNTIME_TASK_FIELDS: tuple[str, ...] = tuple(p.name for p in TASK_PARAMETERS if p.runtime is Runtime.LIVE)


def parameter_of(name: str) -> Parameter | None:
    """The table entry of a full parameter name (``policy``, ``tasks.front.rate``), or None."""
    if name.startswith("tasks."):
        task, _, field = name[len("tasks."):].partition(".")
        return TASK_BY_NAME.get(field) if task and field else None
    return SCHEDULER_BY_NAME.get(name)


def default_of(table: Mapping[str, Parameter], name: str) -> Any:
    """The default of ``name`` in ``table``, for a dataclass field (``policy: str = default_of(...)``)."""
    return table[name].default


def type_name(value: Any) -> str:
    """``a string``, ``an integer``, ...: what a value is, for messages."""
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


_EXPECTED = {Kind.BOOL: "true or false", Kind.INTEGER: "an integer", Kind.NUMBER: "a number",
             Kind.STRING: "a string", Kind.INTEGER_LIST: "a list of integers", Kind.STRING_LIST: "a list of strings"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_value(parameter: Parameter, value: Any, full_name: str | None = None) -> Value:
    """``value`` as the table says it must be: type (an integer is a number too), normalised case, choices, range
    and list length; None (unset) is the default. Raises :class:`ConfigError` naming ``full_name`` (default: the
    parameter's own name). The value returned is typed: a float for a number, a tuple for a list."""
    name = full_name or parameter.name
    if value is None or (parameter.blank_is_default and value == ""):
        return parameter.default
    kind = parameter.kind
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{value!r} is {type_name(value)}; expected {_EXPECTED[kind]}")
        return value
    if kind is Kind.INTEGER or kind is Kind.NUMBER:
        if not (_is_int(value) or (kind is Kind.NUMBER and isinstance(value, float))):
            raise ConfigError(name, f"{value!r} is {type_name(value)}; expected {_EXPECTED[kind]}")
        _check_bounds(parameter, name, value, value)
        return float(value) if kind is Kind.NUMBER else value
    if kind is Kind.STRING:
        if not isinstance(value, str):
            raise ConfigError(name, f"{value!r} is {type_name(value)}; expected {_EXPECTED[kind]}")
        text = value.upper() if parameter.case == "upper" else value.lower() if parameter.case == "lower" else value
        if parameter.choices and text not in parameter.choices:
            raise ConfigError(name, f"{text!r} is not one of {', '.join(parameter.choices)}")
        return text
    item_ok = _is_int if kind is Kind.INTEGER_LIST else (lambda item: isinstance(item, str))
    if not isinstance(value, list | tuple) or not all(item_ok(item) for item in value):
        raise ConfigError(name, f"{value!r} is not {_EXPECTED[kind]}")
    items = tuple(value)
    if parameter.length is not None and len(items) != parameter.length:
        raise ConfigError(name, f"{list(items)} is not allowed: give {parameter.length} values")
    for item in items:
        _check_bounds(parameter, name, item, list(items))
    return items


def _check_bounds(parameter: Parameter, name: str, number: float, shown: Any) -> None:
    if parameter.bounds is None:
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(name, f"{shown!r} is not allowed: a finite number")
        return
    low, high = parameter.bounds
    if not low <= number <= high:  # (NaN is never within)
        what = "allowed: each item" if isinstance(shown, list) else "allowed:"
        raise ConfigError(name, f"{shown!r} is out of range; {what} {parameter.range_text()}")


def check_dataclass(cls: type, table: Sequence[Parameter], *, extra_fields: Sequence[str] = (),
                    extra_parameters: Sequence[str] = ()) -> None:
    """Raise TypeError unless the fields of dataclass ``cls`` are the table's parameters (but ``extra_fields``, which
    are not parameters, and ``extra_parameters``, which are not fields) and every field's default is the table's."""
    by_name = {p.name: p for p in table}
    problems = []
    for fld in dataclasses.fields(cls):
        if fld.name in extra_fields:
            continue
        param = by_name.get(fld.name)
        if param is None:
            problems.append(f"field {fld.name!r} is not in the parameter table")
            continue
        default = fld.default if fld.default_factory is dataclasses.MISSING else fld.default_factory()
        if default is not dataclasses.MISSING and default != param.default:
            problems.append(f"field {fld.name!r} defaults to {default!r}, the table to {param.default!r}")
        if fld.default is not dataclasses.MISSING and type(default) is not type(param.default):
            problems.append(f"field {fld.name!r}'s default is a {type(default).__name__}, the table's a "
                            f"{type(param.default).__name__}")
    field_names = {f.name for f in dataclasses.fields(cls)}
    problems += [f"parameter {name!r} has no field" for name in by_name
                 if name not in field_names and name not in extra_parameters]
    if problems:
        raise TypeError(f"{cls.__name__} and the parameter table disagree: {'; '.join(problems)}")


# -- the README's parameter reference -----------------------------------------------------------------------------
README_BEGIN = "<!-- PARAMS:BEGIN -->\n"
README_END = "<!-- PARAMS:END -->"
_README_SECTION = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
#: The command that rewrites the table (named by the test that finds README.md out of date).
README_COMMAND = ".venv/bin/python -m daris_ros.parameter_table --readme README.md"


def _default_text(parameter: Parameter) -> str:
    return f"`{parameter.ros_default!r}`"


def parameter_reference_markdown() -> str:
    """The README's parameter table."""
    lines = ["| Parameter | Type | Default | Range | Runtime | Description |", "|---|---|---|---|---|---|"]
    rows = [(p.name, p) for p in SCHEDULER_PARAMETERS] + [(f"tasks.<name>.{p.name}", p) for p in TASK_PARAMETERS]
    for name, p in rows:
        allowed = f"each {p.range_text()}" if p.bounds and p.kind in (Kind.INTEGER_LIST, Kind.STRING_LIST) \
            else p.range_text()
        if p.length is not None:
            allowed = f"{p.length} items, {allowed}"
        lines.append(f"| `{name}` | {p.kind.value} | {_default_text(p)} | {allowed} | {p.runtime.value} | "
                     f"{p.description} |")
    return "\n".join(lines) + "\n"


def render_readme(text: str) -> str:
    """``text`` (README.md) with the table between its PARAMS markers generated anew."""
    if _README_SECTION.search(text) is None:
        raise ValueError(f"no {README_BEGIN.strip()} ... {README_END} section")
    return _README_SECTION.sub(lambda _m: README_BEGIN + parameter_reference_markdown() + README_END, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daris_ros.parameter_table",
                                     description="The scheduler node's parameter table (README.md section).")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--readme", metavar="README", help="rewrite the parameter table of this README.md")
    action.add_argument("--check", metavar="README", help="exit 1 when this README.md's table is out of date")
    args = parser.parse_args(argv)
    path = Path(args.readme or args.check or "")
    if not (args.readme or args.check):
        sys.stdout.write(parameter_reference_markdown())
        return 0
    text = path.read_text(encoding="utf-8")
    new = render_readme(text)
    if args.check:
        if new != text:
            print(f"{path}: the parameter table is out of date; run: {README_COMMAND}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"{path}: parameter table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
