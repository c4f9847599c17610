"""Parameter declarations of the scheduler node: one table, used to declare (with descriptors), to
validate (through :mod:`daris_ros.settings`) and to generate the README's parameter reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from daris_ros.settings import (
    SCHEDULER_FIELDS,
    TASK_FIELDS,
    ConfigError,
    SchedulerSettings,
    check_parameter_names,
    settings_from_mapping,
)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = True
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    ptype: int | None = None  # explicit ParameterType where the default cannot tell (empty lists)


SCHEDULER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("policy", "MPS", "Spatial policy (paper section V): STR (1 context, N_s streams, one global "
              "queue), MPS (N_c contexts x 1 stream) or MPS+STR (N_c x N_s)."),
    ParamSpec("backend", "cpu", "Execution backend: cpu (worker threads), str (CUDA streams), mps (one MPS "
              "client process per context) or green (green contexts)."),
    ParamSpec("device", "cpu", "Device of this node: cpu or cuda:N (one scheduler node per GPU)."),
    ParamSpec("n_contexts", 1, "N_c: number of contexts (eq. 9).", int_range=(1, 64)),
    ParamSpec("n_streams", 1, "N_s: streams per context; N_p = N_c x N_s stages run concurrently.",
              int_range=(1, 64)),
    ParamSpec("oversubscription", 1.0, "OS: SM oversubscription, 1 <= OS <= N_c (eq. 9).",
              float_range=(1.0, 64.0)),
    ParamSpec("mret_window", 5, "ws: MRET window in stage executions (eqs. 1-2).", read_only=False,
              int_range=(1, 1000)),
    ParamSpec("hp_admission", False, "Overload+HPA: HP jobs also pass the admission test (section VI-I)."),
    ParamSpec("reprobe_after", 100, "Beyond the paper: after this many rejected releases in a row a task forgets "
              "its measured MRETs (eq. 1) and, if LP, its next release is admitted as a probe without eq. 12, so "
              "a task rejected on stale or inflated estimates is measured again (at most one job in "
              "reprobe_after + 1; 0: never, the paper's behaviour).", int_range=(0, 1 << 30)),
    ParamSpec("skip_late", 2.0, "Beyond the paper, bounded staleness under overload: a job that has not started "
              "within this many deadlines of its release (release + skip_late x D_i) is skipped instead of run: no "
              "result, counted as skipped in TaskStats and /diagnostics (WARN), and as a lost deadline in the miss "
              "rate, so a task's backlog and the age of its results stay bounded when the device falls behind (a "
              "slower clock, another process on the GPU). A started job always finishes. 0: off (the paper's "
              "behaviour: every admitted job runs, however late); else 1..1000.", float_range=(0.0, 1000.0)),
    ParamSpec("no_staging", False, "Ablation: run each DNN as one stage (section VI-F)."),
    ParamSpec("no_last", False, "Ablation: do not raise the priority of a task's last stage."),
    ParamSpec("no_prior", False, "Ablation: do not raise a stage whose predecessor missed its virtual "
              "deadline."),
    ParamSpec("no_fixed", False, "Ablation: EDF only, no fixed priority levels."),
    ParamSpec("cuda_graphs", True, "Capture a CUDA graph per stage, context and stream (GPU backends)."),
    ParamSpec("stats_period", 1.0, "Seconds between stats and /diagnostics messages.", read_only=False,
              float_range=(0.01, 3600.0)),
    ParamSpec("top_k", 5, "Classes reported per classification result.", int_range=(1, 100)),
    ParamSpec("profile_runs", 5, "Runs per model stage when profiling the initial AFET at start-up.",
              int_range=(1, 1000)),
    ParamSpec("afet_profile", "auto", "Initial AFET profiling (paper IV-A1): full_load (each model's stages on one "
              "stream while random stages keep every other stream busy), isolated (nothing else runs) or auto "
              "(full_load on a CUDA device, isolated on the CPU)."),
    ParamSpec("afet_cache", "", "JSON file of profiled AFETs, read at start-up and written after profiling, keyed "
              "by device, torch, backend, layout, graphs, profiling mode and model ('': no cache)."),
    ParamSpec("miss_rate_warn", 0.02, "Deadline miss rate at which a task's diagnostic turns WARN.",
              read_only=False, float_range=(0.0, 1.0)),
    ParamSpec("miss_rate_error", 0.10, "Deadline miss rate at which a task's diagnostic turns ERROR.",
              read_only=False, float_range=(0.0, 1.0)),
    ParamSpec("rejection_rate_warn", 0.0, "Fraction of a task's releases rejected during one stats period above "
              "which its diagnostic turns WARN (0: any rejection).", read_only=False, float_range=(0.0, 1.0)),
    ParamSpec("stale_warn_periods", 1, "Stale release periods (no new frame) within one stats period from which "
              "a task's diagnostic turns WARN.", read_only=False, int_range=(1, 100000)),
    ParamSpec("gpu_decode", True, "Decode JPEG CompressedImage frames on the GPU (nvJPEG, torchvision) when the "
              "backend runs in this process on a CUDA device (str, green); PNG and the cpu/mps backends decode "
              "on the CPU (mps workers get host frames through shared memory)."),
    ParamSpec("mps_pipe_directory", "", "mps backend: the MPS control daemon's pipe directory. Empty: "
              "DARIS_MPS_PIPE_DIRECTORY, else CUDA_MPS_PIPE_DIRECTORY, else /tmp/nvidia-mps. A running daemon "
              "there is used; otherwise the node starts one and stops it on shutdown."),
    ParamSpec("mps_log_directory", "", "mps backend: the MPS daemon's log directory (empty: "
              "DARIS_MPS_LOG_DIRECTORY, else CUDA_MPS_LOG_DIRECTORY, else /var/log/nvidia-mps)."),
    ParamSpec("mps_spares", -1, "mps backend: worker processes kept started and ready to replace a dead one "
              "(a replacement without a spare takes seconds). -1: DARIS_MPS_SPARES, else 0.", int_range=(-1, 16)),
    ParamSpec("mps_frame_pixels", 0, "mps backend: camera frames of up to this many pixels go to the worker "
              "processes as uint8 (shared memory, 3 bytes a pixel per slot) and are resized and normalised there, "
              "on the GPU; larger frames, and 0 (the default), are preprocessed on the host by the node.",
              int_range=(0, 1 << 30)),
    ParamSpec("batching", False, "Beyond the paper: cross-task stage batching (docs/policy.md). Ready stages of "
              "tasks that share a model (model, input size, weights, precision, layout) and a stage run as one "
              "batched stage, sized so that its predicted finish (batch-time MRET) meets the earliest virtual "
              "deadline in it; HP stages never wait for a batch to fill. Backends: cpu, str, green."),
    ParamSpec("batch_sizes", [1, 2, 4, 8, 16, 32], "batching: the batch sizes (1 included); on str/green each gets a "
              "CUDA graph per stage and stream, captured at start-up. A batch of n jobs runs at the smallest size "
              ">= n."),
    ParamSpec("batch_pad_limit", 0.1, "batching: a batch is padded up to the next size only while the padding is at "
              "most this fraction of it; else it runs at the size below and the rest waits (an HP stage that could "
              "then miss its deadline is padded in). 0: never pad LP stages.", float_range=(0.0, 0.99)),
    ParamSpec("batch_lp_admit_margin", 0.3, "batching: LP admission guard on top of eq. 12: the context's queued "
              "and running work per stream plus the task's own cost must stay within this fraction of the "
              "deadline (0: off).", float_range=(0.0, 100.0)),
    ParamSpec("batch_min_size", 1, "batching: a stage is late when it cannot meet its virtual deadline even in a "
              "batch of this size; late stages yield to stages that still can.", int_range=(1, 1024)),
    ParamSpec("release_trigger", "frame", "When a task is released: 'frame' = when its camera's new frame arrives, "
              "at most once per period on average (a frame up to release_slack of a period early is released at "
              "once), so a frame never waits for a clock instant and none is superseded by camera jitter; 'clock' = "
              "at the engine's clock instants, every task of one period together (a rig)."),
    ParamSpec("release_slack", 0.25, "release_trigger frame: the share of a period a frame may arrive early and "
              "still be released on arrival (the long-run release rate stays at most 1/T).", float_range=(0.0, 0.99)),
    ParamSpec("launch_ahead", 0, "Beyond the paper: how many dispatches a busy stream may hold queued behind the "
              "one it runs (0: a stage is dispatched only to an idle stream). The next dispatch is formed ahead_lead "
              "before the stream's predicted free time and checked against deadlines from then, so the device "
              "starts it without waiting for the host to see the completion.", int_range=(0, 8)),
    ParamSpec("ahead_lead", 0.001, "launch_ahead: how many seconds before a stream's predicted free time its next "
              "dispatch is formed.", float_range=(0.0, 1.0)),
    ParamSpec("feasibility", "refuse", "What the node does when, after profiling and the offline phase, a context's "
              "HP utilization (eq. 4, sum of u_i = AFET / T_i) exceeds its N_s streams, or an HP task's AFET exceeds "
              "its deadline: refuse (stop with exit code 2 and one line naming the context, the tasks and the "
              "figures) or warn (log a WARN and run; HP deadlines will be missed). LP over-subscription (LP "
              "utilization over eq. 11's N_s - U_hp) is always a WARN with the expected rejection rate. The figures "
              "are on /diagnostics."),
    ParamSpec("sm_limit", 0, "Beyond the paper, a node that shares its GPU (with lidar, planning, display): the "
              "number of SMs the node may use; eq. 9 sizes its contexts from it (N_SM,max = sm_limit). green: the "
              "contexts are carved from the device's first sm_limit / 8 granules of 8 SMs (Hopper), the rest stays "
              "free; str: its streams run in one green context of sm_limit SMs; mps: each client's "
              "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE is its eq. 9 share of sm_limit over the device's SMs (how many SMs, "
              "not which); cpu: eq. 9's arithmetic only (SMs per context in the stats). At start a GPU backend "
              "refuses a limit above the device's SMs or not a multiple of its granularity (8 for str and green, 2 "
              "for mps). 16 = a Jetson AGX Orin's SM count. Reported in SchedulerStats (sm_limit, usable_sms). 0: "
              "the whole device.", int_range=(0, 1 << 16)),
    ParamSpec("max_pixels", 4096 * 4096, "Largest accepted frame (width x height); larger frames are dropped "
              "and counted as too_large.", int_range=(1, 1 << 30)),
    ParamSpec("stamp_future_tolerance", 1.0, "Frames whose header.stamp is more than this many seconds ahead of "
              "the node's clock are dropped and counted as stamp_future (0: no check).", read_only=False,
              float_range=(0.0, 3600.0)),
    ParamSpec("stamp_past_tolerance", 0.0, "Frames whose header.stamp is more than this many seconds behind the "
              "node's clock are dropped and counted as stamp_past (0: no check; the default, because a bag "
              "replayed on the wall clock carries its recorded stamps). On a vehicle e.g. 1.0.", read_only=False,
              float_range=(0.0, 1e9)),
    ParamSpec("worker_stage_timeout", 2.0, "A stage running longer than this (seconds) marks its worker as hung: "
              "the worker is replaced and the stage retried once (0: no hang check; dead workers are always "
              "detected).", float_range=(0.0, 3600.0)),
    ParamSpec("task_names", [], "Names of the camera tasks; each has parameters tasks.<name>.*. Settable: "
              "removing a name stops that task, adding one declares tasks.<name>.* and starts the task once "
              "they are valid (values from the parameter file are used when present).", read_only=False,
              ptype=ParameterType.PARAMETER_STRING_ARRAY),
)

TASK_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("topic", "", "Camera topic (sensor_msgs/msg/Image or CompressedImage)."),
    ParamSpec("priority", "LP", "HP (always admitted, fixed context) or LP (admission test, may migrate).",
              read_only=False),
    ParamSpec("rate", 0.0, "Release rate in Hz (give rate or period).", read_only=False,
              float_range=(0.0, 10000.0)),
    ParamSpec("period", 0.0, "Release period T_i in seconds (give rate or period).", read_only=False,
              float_range=(0.0, 3600.0)),
    ParamSpec("deadline", 0.0, "Relative deadline D_i in seconds; 0 means the period.", read_only=False,
              float_range=(0.0, 3600.0)),
    ParamSpec("model", "", "Model: resnet18, resnet50, unet, inception_v3 or a torchvision model name."),
    ParamSpec("input_type", "image", "image (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)."),
    ParamSpec("weights", "", "Path to a state_dict file; empty means random weights (a warning is logged)."),
    ParamSpec("input_size", [224, 224], "Model input [height, width]; frames are resized to it."),
    ParamSpec("output_topic", "", "Result topic; empty means daris/<task>/result (relative to the namespace)."),
    ParamSpec("qos_reliability", "best_effort", "Camera subscription reliability: best_effort (sensor-data "
              "profile) or reliable (e.g. lossless bag replay)."),
    ParamSpec("qos_depth", 1, "Camera subscription history depth (keep last N); only the newest frame is used.",
              int_range=(1, 1000)),
    ParamSpec("precision", "fp32", "Model precision: fp32, fp16 or bf16 (converted weights; GPU backends str and "
              "green; the outputs' difference against fp32 is in docs/benchmarks/batching.md)."),
    ParamSpec("channels_last", False, "Run the model in channels-last (NHWC) memory format (faster convolutions "
              "on tensor-core GPUs)."),
)
assert tuple(p.name for p in TASK_PARAMS) == TASK_FIELDS
assert sorted(p.name for p in SCHEDULER_PARAMS) == sorted(SCHEDULER_FIELDS)
#: Task fields that change a running task through `ros2 param set`; the others need the task restarted
#: (remove it from task_names, set them, add it again).
RUNTIME_TASK_FIELDS = tuple(p.name for p in TASK_PARAMS if not p.read_only)


def _descriptor(spec: ParamSpec, name: str) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.ptype is not None:
        d.type = spec.ptype
    if spec.int_range is not None:
        d.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=0)]
    if isinstance(spec.default, float):
        d.dynamic_typing = True  # accept `rate: 30` as well as `rate: 30.0`; settings converts
    if spec.float_range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                     to_value=spec.float_range[1], step=0.0)]
    return d


def _declare(node: Node, name: str, default: Any, descriptor: ParameterDescriptor) -> Any:
    """Declare one parameter; rclpy's type and range errors become a ConfigError naming it."""
    try:
        return node.declare_parameter(name, default, descriptor)
    except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
        rng = ""
        if descriptor.integer_range:
            rng = f"; allowed: {descriptor.integer_range[0].from_value}..{descriptor.integer_range[0].to_value}"
        elif descriptor.floating_point_range:
            r = descriptor.floating_point_range[0]
            rng = f"; allowed: {r.from_value:g}..{r.to_value:g}"
        raise ConfigError(name, f"{exc}{rng}") from exc


NO_TASKS = ("no camera tasks: list them in task_names, each with a tasks.<name> block (topic, priority, rate, "
            "model; see config/default.yaml)")


def declare_and_read(node: Node, known_models: list[str] | None = None) -> SchedulerSettings:
    """Declare every parameter with its descriptor and return validated settings.

    Raises :class:`daris_ros.settings.ConfigError` naming the offending parameter: also for a parameter given
    to the node (parameter file, ``-p``) that is not in the table (a misspelt field, e.g. ``tasks.a.rat``) and
    for an empty task list. (``daris_ros.ros.param_file`` checks the same before ``rclpy.init`` and names the
    file and line; this is the check for a node started otherwise.)
    """
    check_parameter_names(sorted(getattr(node, "_parameter_overrides", {})))
    values: dict[str, Any] = {}
    for spec in SCHEDULER_PARAMS:
        default = Parameter.Type.STRING_ARRAY if spec.ptype == ParameterType.PARAMETER_STRING_ARRAY \
            else spec.default
        p = _declare(node, spec.name, default, _descriptor(spec, spec.name))
        values[spec.name] = p.value if p.value is not None else spec.default
    values["task_names"] = list(values["task_names"] or [])
    if not values["task_names"]:
        raise ConfigError("task_names", NO_TASKS)
    for task in values["task_names"]:
        for spec in TASK_PARAMS:
            values[f"tasks.{task}.{spec.name}"] = declare_task_parameter(node, task, spec).value
    return settings_from_mapping(values, known_models)


def declare_task_parameter(node: Node, task: str, spec: ParamSpec) -> Any:
    """Declare ``tasks.<task>.<field>``. Fields that need a task restart are refused by the node's
    parameter callback while the task runs (not read-only: a task added at run time must be configurable)."""
    full = f"tasks.{task}.{spec.name}"
    desc = _descriptor(spec, full)
    desc.read_only = False
    if spec.read_only:
        desc.additional_constraints = "fixed while the task runs: remove the task, set, add it again"
    return _declare(node, full, spec.default, desc)


def parameter_reference_markdown() -> str:
    """The README's parameter table, generated from the declarations above."""
    lines = ["| Parameter | Default | Range | Runtime | Description |", "|---|---|---|---|---|"]

    def row(name: str, spec: ParamSpec) -> None:
        rng = ""
        if spec.int_range:
            rng = f"{spec.int_range[0]}..{spec.int_range[1]}"
        elif spec.float_range:
            rng = f"{spec.float_range[0]:g}..{spec.float_range[1]:g}"
        rt = "read-only" if spec.read_only else "settable"
        if name.startswith("tasks.") and spec.read_only:
            rt = "task restart"
        lines.append(f"| `{name}` | `{spec.default!r}` | {rng} | {rt} | {spec.description} |")

    for spec in SCHEDULER_PARAMS:
        row(spec.name, spec)
    for spec in TASK_PARAMS:
        row(f"tasks.<name>.{spec.name}", spec)
    return "\n".join(lines) + "\n"
