"""The engine: the one path by which work reaches the device (the node, the demo, the bench and engine-load all
drive it).

One thread, the loop, owns the DARIS policy core and the backend's launch/poll protocol::

    frame in (any thread)  -> inbox (newest per camera)
    release instants (the engine's clock, every task)  -> take the frames of the burst -> decode them (off the
        loop in a pool, HP frames first: runtime.decode_queue) -> core.release (admission eqs. 11-12, migration)
        -> preprocess the admitted frames per model as a batch
    core.dispatch (1..n jobs per dispatch, launch-ahead)  -> backend.launch (never blocks)
    backend.poll  -> core.complete (MRET eq. 1, next stage with its virtual deadline eq. 8)
    finished jobs  -> batched post-processing -> on_result(JobResult)

Every other thread talks to the loop through commands (:meth:`Engine.call`): task changes, statistics snapshots,
worker faults found by the watchdog. No lock guards the core: only the loop touches it. Start-up (model loading,
AFET profiling, the offline phase) runs in the caller's thread before the loop starts. Nothing here knows about
ROS.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from daris_ros.core import (
    BatchingConfig,
    Dispatch,
    FeasibilityReport,
    JobOutcome,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
    effective_layout,
    feasibility_of,
)
from daris_ros.runtime.backends import Backend, create_backend
from daris_ros.runtime.backends.base import (
    BatchGraphs,
    HostFrames,
    MemoryStats,
    RuntimeModels,
    SupervisedDaemon,
    WorkerFaults,
)
from daris_ros.runtime.decode_queue import HP_FIRST, LATE, LP_AFTER, DecodePart, DecodeQueue, skip_time
from daris_ros.runtime.frames import ArrayDecoder, FrameDecoder, FrameError
from daris_ros.runtime.inbox import FrameInbox, FrameItem
from daris_ros.runtime.labels import class_names_for
from daris_ros.runtime.loop_load import LoopLoad
from daris_ros.runtime.memory import SOURCE_MODELS, ContextMemory, model_bytes
from daris_ros.runtime.release_backlog import ReleaseBacklog
from daris_ros.runtime.release_clock import ReleaseClock
from daris_ros.runtime.results import (
    Detections,
    JobResult,
    PendingRows,
    SegmentationRow,
    StageTrace,
    start_classify,
    start_detect,
    start_mask,
)
from daris_ros.runtime.snapshot import EngineSnapshot, LoopStats
from daris_ros.runtime.stall_probe import LoopMark, StallProbe
from daris_ros.runtime.throttled_log import ThrottledLog
from daris_ros.runtime.watchdog import MAX_STAGE_RETRIES, FaultLog, FaultRecord, Watchdog
from daris_ros.settings import ConfigError, SchedulerSettings, TaskSettings

__all__ = ["Engine", "JobResult", "StageTrace", "summarize_afet", "to_scheduler_config", "to_task_spec"]

log = logging.getLogger("daris_ros.engine")
throttled = ThrottledLog(log)  # per-frame and per-stage warnings: one line per key per 5 s

Clock = Callable[[], float]
T = TypeVar("T")
#: Response times kept per task and priority for the p50/p99/max statistics (bounded memory on long runs).
RESPONSE_WINDOW = 10_000
#: How long the loop sleeps between polls of a polled backend (str, green) while launches are in flight.
POLL_INTERVAL = 50e-6
#: At most this many releases are taken per turn of the loop; the rest of a burst waits for the next turn, after
#: completions were collected and dispatches launched (a burst of hundreds of cameras must not hold the streams idle).
RELEASE_CHUNK = 64
#: Frames per part of a burst given to one decode thread (a decoder with ``threads`` > 0: the ROS camera decoder);
#: a part holds frames of one priority (runtime.decode_queue: HP parts first).
DECODE_PART = 8
#: The longest sleep of the loop when its clock is not ``time.monotonic`` (ROS time under use_sim_time: /clock may
#: run faster than the wall clock, and sleeps are on the wall clock).
FOREIGN_CLOCK_MAX_WAIT = 0.002
#: The CUDA stream priority of the loop's preprocessing and post-processing streams (lower is higher; torch
#: clamps it to the device's range, -1 the highest on current GPUs; the stages' streams have the default, 0).
AUX_STREAM_PRIORITY = -1
#: The longest sleep of the loop while releases are paused (a command or a completion wakes it at once).
PAUSED_MAX_WAIT = 0.5


def tune_process_for_latency() -> None:
    """Process-wide settings for the engine's loop (a node process runs one engine): the objects built at start-up
    (models, graphs) leave the garbage collector's generations (``gc.freeze``) and collections run less often (a
    full one every ~1M allocations, so cyclic garbage stays bounded), so a collection never stalls the loop for tens
    of milliseconds (docs/benchmarks/engine/README.md, runs 1 -> 2); the interpreter hands the GIL over every 0.5 ms
    instead of 5 ms, so the loop gets it back soon after a worker or the ROS executor took it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    sys.setswitchinterval(0.0005)


def to_task_spec(task: TaskSettings, afet: tuple[float, ...], model_key: str = "") -> TaskSpec:
    """The core's task; ``model_key`` (model, input size, weights, precision) is what batching groups by."""
    return TaskSpec(name=task.name, period=task.period, deadline=task.deadline,
                    priority=Priority.HP if task.priority == "HP" else Priority.LP,
                    n_stages=len(afet), afet=afet, model=model_key or task.model)


def batching_config(s: SchedulerSettings) -> BatchingConfig | None:
    """The core's :class:`BatchingConfig` from the ``batch_*`` parameters (None: batching off)."""
    if not s.batching:
        return None
    return BatchingConfig(sizes=tuple(s.batch_sizes), pad_limit=s.batch_pad_limit,
                          lp_admit_margin=s.batch_lp_admit_margin or None, min_size=s.batch_min_size)


def to_scheduler_config(s: SchedulerSettings, n_sm_max: int = 132, sm_granularity: int = 2,
                        sm_limit: int = 0) -> SchedulerConfig:
    """The core's configuration; ``n_sm_max`` and ``sm_granularity`` are the backend's (``sm_limit``: the node's
    ``sm_limit``, passed where the backend's device is known, so that eq. 9 uses it)."""
    return SchedulerConfig(
        policy=Policy(s.policy), n_contexts=s.n_contexts, n_streams=s.n_streams,
        oversubscription=s.oversubscription, n_sm_max=n_sm_max, sm_granularity=sm_granularity, sm_limit=sm_limit,
        mret_window=s.mret_window, hp_admission=s.hp_admission, reprobe_after=s.reprobe_after,
        no_staging=s.no_staging, no_last=s.no_last, no_prior=s.no_prior, no_fixed=s.no_fixed,
        batching=batching_config(s), launch_ahead=s.launch_ahead, ahead_lead=s.ahead_lead,
        skip_late=s.skip_late or None,
    )


@dataclass(slots=True, eq=False)
class _JobRun:
    """A job between its release and its result: where its next input is, and what it has done so far."""

    task: TaskSettings
    key: str  # its model key
    item: FrameItem
    source: Any = None  # the stage input: row ``row`` of ``source`` (a frame batch, or a dispatch's output)
    row: int = 0
    source_size: tuple[int, int] | None = None  # (H_src, W_src) of the decoded frame
    exec_time: float = 0.0
    error: str = ""
    mret: float = 0.0
    stages: list[StageTrace] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)  # stage -> times it was lost with its worker
    fault: FaultRecord | None = None  # set while a lost stage is retried: completing it ends the recovery


class _StageTraces:
    """The :class:`StageTrace` of one finished dispatch, made once per priority level among its jobs and shared by
    the jobs of that level (it is immutable): a batch of n jobs costs one or two traces, not n."""

    __slots__ = ("_dispatch", "_finish", "_exec_time", "_by_level")

    def __init__(self, dispatch: Dispatch, finish: float, exec_time: float) -> None:
        self._dispatch = dispatch
        self._finish = finish
        self._exec_time = exec_time
        self._by_level: dict[int, StageTrace] = {}

    def at_level(self, level: int) -> StageTrace:
        trace = self._by_level.get(level)
        if trace is None:
            d = self._dispatch
            trace = self._by_level[level] = StageTrace(d.stage, d.context, d.stream, level, d.start, self._finish,
                                                       self._exec_time, d.virtual_deadline, len(d.jobs))
        return trace


@dataclass(slots=True)
class _Launch:
    """A dispatch launched on (context, stream), identified by the backend's ticket."""

    dispatch: Dispatch
    launched: float
    retries: int = 0
    fault: FaultRecord | None = None


@dataclass(slots=True)
class EngineCounters:
    stage_errors: int = 0
    dispatches: int = 0
    launched_jobs: int = 0
    results: int = 0
    frames_undecoded: int = 0  # frames released undecoded: past their skip time in the decode pool (LATE)
    extra: dict[str, int] = field(default_factory=dict)


class Engine:
    """Owns the models, the backend, the policy core and the loop of one scheduler node."""

    def __init__(self, settings: SchedulerSettings, *, on_result: Callable[[JobResult], None],
                 backend: Backend | None = None, clock: Clock = time.monotonic,
                 decoder: FrameDecoder | None = None) -> None:
        self.settings = settings
        self._on_result = on_result
        self._clock = clock
        self.backend: Backend = backend or self._create_backend(settings)
        self.decoder: FrameDecoder = decoder or ArrayDecoder()
        self.inbox = FrameInbox(on_new=self._on_new_frame)
        self._fresh: collections.deque[str] = collections.deque()  # tasks with a new frame (frame-triggered)
        # release_window: whether the loop was woken for new frames since it last looked at them (it then sleeps
        # until the next grid point, and the frames after the first do not wake it again)
        self._fresh_armed = False
        self._sticky: set[str] = set()  # tasks fed by set_frame: released by the clock
        self.models: dict[str, Any] = {}
        self.model_bytes: dict[str, int] = {}  # parameters + buffers per model key (daris_ros.runtime.memory)
        self.afet: dict[str, tuple[float, ...]] = {}
        self.counters = EngineCounters()
        self.faults = FaultLog()
        self._memory: tuple[float, ContextMemory] | None = None
        self._core: Scheduler | None = None
        self._converted: set[str] = set()  # model keys in reduced precision or channels-last (inputs converted)
        self._batch_afet: dict[tuple[str, int, int], float] = {}  # (model key, stage, size) -> profiled seconds
        self._task: dict[str, TaskSettings] = {t.name: t for t in settings.tasks}
        self._class_names: dict[str, tuple[str, ...]] = {}  # task -> class names (labels file, or the model's)
        self._key: dict[str, str] = {t.name: self._model_key(t) for t in settings.tasks}
        self._masks_unwanted: set[str] = set()  # segmentation tasks whose mask nobody reads (set_mask_wanted)
        # loop state (touched by the loop thread only)
        self._jobs: dict[Any, _JobRun] = {}  # Job (hashed by identity) -> its run
        self._launches: dict[int, _Launch] = {}  # ticket -> launch
        # finished jobs whose post-processing's copy to the host is under way (their results follow when it is done)
        self._post_pending: list[tuple[PendingRows, list[tuple[JobOutcome, _JobRun]]]] = []
        self._post_pending_jobs = 0
        self._lanes: dict[tuple[int, int], collections.deque[int]] = {}  # (context, stream) -> tickets, in order
        self._heads: dict[tuple[int, int], tuple[int, float]] = {}  # (c, s) -> (running ticket, since); watchdog
        self._releases: ReleaseClock | None = None
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._paused = False  # releases stopped (pause_releases): jobs in flight still run to their results
        self._stopped = threading.Event()
        self._watchdog: Watchdog | None = None
        self._loop_stats = LoopStats()
        self._loop_load = LoopLoad()  # (its busy share: lp_host_busy_limit)
        self._mark = LoopMark()  # when the loop's current iteration started (the stall probe reads it)
        self._stall_probe: StallProbe | None = None
        self._decoding: DecodeQueue | None = None  # the decode pool (decoder.threads > 0), made at its first use
        self._recovering: set[tuple[int, int]] = set()  # workers being replaced: (context, stream or -1 for all)
        self._troubled = 0  # jobs in flight that failed or carry a retried stage (the launch path checks them then)
        self._max_wait = math.inf if clock is time.monotonic else FOREIGN_CLOCK_MAX_WAIT
        self._streams: dict[str, Any] = {}  # CUDA streams of the loop (prep, post) on a GPU backend
        self._staging: Any = None
        self._direct_frames = isinstance(self.backend, HostFrames)

    @staticmethod
    def _create_backend(settings: SchedulerSettings) -> Backend:
        """The backend with the policy's effective layout (STR: one context; MPS: one stream per context)."""
        layout = effective_layout(to_scheduler_config(settings))
        return create_backend(settings.backend, n_contexts=layout.n_contexts, n_streams=layout.n_streams,
                              device=settings.device, oversubscription=layout.oversubscription,
                              cuda_graphs=settings.cuda_graphs, mps_pipe_dir=settings.mps_pipe_directory or None,
                              mps_log_dir=settings.mps_log_directory or None,
                              mps_spares=None if settings.mps_spares < 0 else settings.mps_spares,
                              mps_frame_pixels=settings.mps_frame_pixels, sm_limit=settings.sm_limit)

    # ===================================================================================== start-up (caller thread)
    def load_models(self) -> None:
        """Build every model named by a task (each once, in its precision and memory format) and make it resident
        in every context; with batching, capture the batch-size graphs (str, green)."""
        for t in self.settings.tasks:
            key = self._model_key(t)
            if key not in self.models:
                self.models[key] = self._build_model(t)
                self.model_bytes[key] = model_bytes(self.models[key])
            self._class_names[t.name] = self._names_of(t, self.models[key])
        self._set_score_floors(self.settings.tasks, self.models)
        self.backend.start(self.models)
        if self.settings.batching:
            self._capture_batches(list(self.models))

    def _set_score_floors(self, tasks: Sequence[TaskSettings], models: Mapping[str, Any]) -> None:
        """Built-in detectors among ``models`` (by key) drop candidates under the lowest ``score_threshold`` of
        their tasks before NMS (no published detection changes; models/detection.py, DenseDetectStage)."""
        from daris_ros.runtime.models.detection import set_score_floor

        floors: dict[str, float] = {}
        for t in tasks:
            key = self._model_key(t)
            floors[key] = min(floors.get(key, math.inf), t.score_threshold)
        for key, floor in floors.items():
            model = models.get(key)
            if model is not None and model.kind == "detection":
                set_score_floor(model, floor)

    def _build_model(self, t: TaskSettings) -> Any:
        from daris_ros.runtime.models import build_staged_model
        from daris_ros.runtime.models.precision import apply_precision

        model = build_staged_model(t.model, weights=t.weights or None, input_size=t.input_size,
                                   stage_boundaries=t.stage_boundaries or None)
        if model.kind == "segmentation" and model.num_classes > 256:
            raise ConfigError(f"tasks.{t.name}.model", f"{t.model} has {model.num_classes} classes; a segmentation "
                              "mask is mono8 (class ids 0..255), so at most 256 classes")
        if t.precision != "fp32" or t.channels_last:
            apply_precision(model, t.precision, t.channels_last)  # records input_dtype / memory_format
            self._converted.add(self._model_key(t))
        return model.merged() if self.settings.no_staging else model

    @staticmethod
    def _names_of(t: TaskSettings, model: Any) -> tuple[str, ...]:
        names = class_names_for(t.labels_file, getattr(model, "class_names", None), f"tasks.{t.name}.labels_file")
        if t.labels_file and len(names) != model.num_classes:
            log.warning("task %s: labels file %s names %d classes, the model has %d", t.name, t.labels_file,
                        len(names), model.num_classes)
        return names

    def class_names(self, task: str) -> tuple[str, ...]:
        """The class names of ``task`` (index = class id): its labels file, else the model's, else none."""
        return self._class_names.get(task, ())

    def kind_of(self, task: str) -> str:
        """The kind of ``task``'s model: classification, segmentation or detection (after :meth:`load_models`)."""
        return str(self.models[self._key[task]].kind)

    def set_mask_wanted(self, task: str, wanted: bool) -> None:
        """Whether ``task``'s jobs make their class mask (segmentation; default: yes). The node turns it off while
        the mask topic has no subscriber: the job then carries the summary only, with no mask resize and no mask
        copy to the host (at 1280x720, 0.9 MB a job)."""
        if wanted:
            self._masks_unwanted.discard(task)
        else:
            self._masks_unwanted.add(task)

    def _capture_batches(self, keys: list[str]) -> None:
        if isinstance(self.backend, BatchGraphs) and self.settings.cuda_graphs:
            self.backend.capture_batches(tuple(self.settings.batch_sizes), keys)

    def _first_input(self, t: TaskSettings) -> Any:
        """A preprocessed black frame of ``t``'s model (stage 0's input), as a batch of one."""
        from daris_ros.runtime.preprocess import preprocess

        frame = np.zeros((t.input_size[0], t.input_size[1], 3), dtype=np.uint8)
        return self._model_input(self._model_key(t), preprocess(frame, t.input_size, device=self.backend.device))

    def profile(self) -> dict[str, tuple[float, ...]]:
        """AFET per model stage (paper IV-A1), the initial estimate that MRET replaces online.

        ``afet_profile`` ``full_load``: the target model's stages run on context 0, stream 0 while every other
        (context, stream) runs random stages of random models (:func:`~daris_ros.runtime.profiling.full_load_afet`);
        ``isolated``: nothing else runs; ``auto``: full load on a CUDA device, isolated on the CPU. Mean of
        ``profile_runs`` runs after one warm-up. With ``afet_cache`` set, values are read from and written to that
        JSON file. With batching, the batch times per (model, stage, size) too.
        """
        from daris_ros.runtime.profiling import AfetCache, full_load_afet, isolated_afet

        mode = self.afet_mode()
        cache = AfetCache(self.settings.afet_cache or None)
        todo: dict[str, Any] = {}  # model key -> a preprocessed frame (stage 0's input)
        for t in self.settings.tasks:
            key = self._model_key(t)
            if key in self.afet or key in todo:
                continue
            cached = cache.get(self.afet_cache_key(key, mode))
            if cached is not None and len(cached) == self.models[key].num_stages:
                self.afet[key] = cached
                continue
            todo[key] = x0 = self._first_input(t)
            rows: list[tuple[Any, int]] = [(x0, 0)]
            for j in range(self.models[key].num_stages):  # one unmeasured run on context 0 (warm-up)
                y, _ = self.backend.run_now(key, j, 1, rows)
                rows = [(y, 0)]
        n_stages = {key: self.models[key].num_stages for key in todo}
        if mode == "full_load" and todo:
            measured = full_load_afet(self.backend, todo, n_stages, runs=self.settings.profile_runs, warmup=1)
        else:
            measured = {key: isolated_afet(self.backend, key, x0, n_stages[key], self.settings.profile_runs)
                        for key, x0 in todo.items()}
        for key, afet in measured.items():
            self.afet[key] = afet
            cache.put(self.afet_cache_key(key, mode), afet)
        if self.settings.batching:
            self._profile_batches([k for k in dict.fromkeys(self._model_key(t) for t in self.settings.tasks)
                                   if (k, 0, 1) not in self._batch_afet])
        return dict(self.afet)

    def _profile_batches(self, keys: list[str]) -> None:
        """Isolated batch times per (model key, stage, size): the mean of ``profile_runs`` runs after a warm-up,
        the initial estimate of the batch-time MRET (``Scheduler(batch_afet=...)``)."""
        from daris_ros.runtime.profiling import batch_times

        for key in keys:
            t = next(t for t in self.settings.tasks if self._model_key(t) == key)
            self._batch_afet.update(batch_times(self.backend, key, self._first_input(t), self.models[key].num_stages,
                                                tuple(self.settings.batch_sizes), self.settings.profile_runs))
        log.info("batch times (ms) at sizes %s: %s", list(self.settings.batch_sizes), "; ".join(
            f"{k.split(':', 1)[0]}: " + ", ".join(
                f"{s}: {sum(self._batch_afet[(k, j, s)] for j in range(self.models[k].num_stages)) * 1e3:.1f}"
                for s in self.settings.batch_sizes) for k in keys))

    def afet_mode(self) -> str:
        """``full_load`` or ``isolated``: ``afet_profile`` with ``auto`` resolved by the device."""
        mode = self.settings.afet_profile
        if mode == "auto":
            mode = "full_load" if str(self.backend.device).startswith("cuda") else "isolated"
        return mode

    def afet_cache_key(self, model_key: str, mode: str) -> str:
        import torch

        from daris_ros.runtime.profiling import cache_key

        device = str(self.backend.device)
        if device.startswith("cuda"):
            device = torch.cuda.get_device_name(torch.device(device))
        b = self.backend
        limit = self.settings.sm_limit
        layout = f"{b.n_contexts}x{b.n_streams}" + (f" on {limit} SMs" if limit else "")  # AFETs differ per limit
        return cache_key(device, self.settings.backend, layout, self.settings.oversubscription,
                         self.settings.cuda_graphs, model_key, mode)

    def start(self, *, origin: float | None = None, phases: Mapping[str, float] | None = None) -> None:
        """Offline phase (Algorithm 1 runs in the core's constructor), then start the loop: the first releases
        of every task come at ``origin`` (default: now; with a clock that reads 0, /clock not started yet, when it
        first reads a time), plus the task's ``phases`` entry (seconds; a task set spread over its periods, as the
        paper's benchmarks release it)."""
        specs = [to_task_spec(t, self.afet[self._model_key(t)], self._model_key(t)) for t in self.settings.tasks]
        b = self.backend
        self._core = Scheduler(to_scheduler_config(self.settings, n_sm_max=b.n_sm_max, sm_granularity=b.sm_granularity,
                                                   sm_limit=self.settings.sm_limit),
                               specs, response_window=RESPONSE_WINDOW,
                               batch_afet=self._batch_estimate if self.settings.batching else None)
        self._releases = ReleaseClock(self._clock() if origin is None else origin,
                                      self.settings.release_window if self.settings.release_trigger == "frame" else 0.0)
        base = self._clock() if origin is None else origin
        for t in self.settings.tasks:
            phase = (phases or {}).get(t.name)
            self._add_release(t, None if phase is None else base + phase)
            self.inbox.add_task(t.name)
        b.set_notify(self._wake.set)
        if isinstance(b, WorkerFaults) and self._watchdog is None:
            self._watchdog = Watchdog(
                [(c, s) for c in range(b.n_contexts) for s in range(b.n_streams)], b.worker_alive,
                self._attempts_in_flight, self.on_worker_fault,
                stage_timeout=float(self.settings.worker_stage_timeout), clock=self._clock)
            self._watchdog.start()
        tune_process_for_latency()
        self._thread = threading.Thread(target=self._run, name="daris-engine", daemon=True)
        self._stall_probe = StallProbe.from_environment(self._mark, self._thread)  # (a bad setting: before the loop)
        self._thread.start()
        if self._stall_probe is not None:
            self._stall_probe.start()
            log.info("stall probe on: loop iterations over %.1f ms are sampled into %s",
                     self._stall_probe.threshold * 1e3, self._stall_probe.report_path)

    def _batch_estimate(self, model: str, stage: int, size: int) -> float | None:
        return self._batch_afet.get((model, stage, size))

    def _model_key(self, t: TaskSettings) -> str:
        """What tasks share: one resident model (and, with batching, one batch) per key."""
        fmt = ""
        if t.precision != "fp32" or t.channels_last:
            fmt = f"/{t.precision}{'-cl' if t.channels_last else ''}"
        cuts = f"|{','.join(t.stage_boundaries)}" if t.stage_boundaries else ""
        return f"{t.model}@{t.input_size[0]}x{t.input_size[1]}{fmt}:{t.weights}{cuts}"

    def _model_input(self, key: str, x: Any) -> Any:
        """A preprocessed fp32 NCHW batch in the dtype and memory format of the model of ``key``."""
        if key not in self._converted:  # fp32 NCHW: nothing to do (the common, hot path)
            return x
        from daris_ros.runtime.models.precision import model_input

        return model_input(self.models[key], x)

    # ===================================================================================== frames in (any thread)
    def offer(self, task: str, payload: Any, *, receive_time: float | None = None, stamp: float | None = None,
              meta: Any = None, frame_id: str | None = None) -> None:
        """A new frame of ``task`` (its newest: a frame no release took yet is superseded). ``stamp`` is the image
        stamp on the engine's clock (for the frame age), ``meta`` comes back in the job's result."""
        self.inbox.offer(task, FrameItem(payload, self._clock() if receive_time is None else receive_time, stamp,
                                         meta), frame_id=frame_id)

    def set_frame(self, task: str, payload: Any, meta: Any = None) -> None:
        """A frame every release of ``task`` takes again (synthetic cameras: the bench, engine-load, tests); the
        task is then released by the clock (``release_trigger: frame`` needs frames that come and go)."""
        if task not in self._sticky:
            self._sticky.add(task)
            if self._releases is not None:
                def to_clock(_core: Scheduler) -> None:
                    assert self._releases is not None
                    if self._releases.on_frame(task):
                        self._releases.add(task, self._task[task].period, self._clock())
                self.call(to_clock)
        self.inbox.offer(task, FrameItem(payload, self._clock(), None, meta), sticky=True)

    def _on_new_frame(self, task: str) -> None:
        """A new (not sticky) frame of ``task`` arrived (any thread): a frame-triggered task may be released now."""
        self._fresh.append(task)
        if self._releases is None or self._releases.window <= 0:
            self._wake.set()
        elif not self._fresh_armed:  # (read after the append: see _loop)
            self._fresh_armed = True
            self._wake.set()

    def _add_release(self, t: TaskSettings, first: float | None) -> None:
        assert self._releases is not None
        self._releases.add(t.name, t.period, first,
                           on_frame=self.settings.release_trigger == "frame" and t.name not in self._sticky,
                           slack=self.settings.release_slack)

    # ===================================================================================== the loop (its thread)
    def _run(self) -> None:
        try:
            self._prepare_loop_thread()
            if str(self.backend.device).startswith("cuda"):
                self.warm_up()
            self._loop()
        except BaseException:  # noqa: BLE001 - the loop must say why it stopped
            log.exception("engine loop failed")
            raise
        finally:
            self._stopped.set()

    def _prepare_loop_thread(self) -> None:
        dev = str(self.backend.device)
        if dev.startswith("cuda"):
            import torch

            from daris_ros.runtime.preprocess import PinnedStaging

            torch.cuda.set_device(torch.device(dev))
            # (high priority: their small kernels go ahead of the stages' queued thread blocks, so a release's
            # preprocessing and a result's copy to the host do not wait for a batch of other jobs)
            self._streams = {"prep": torch.cuda.Stream(dev, priority=AUX_STREAM_PRIORITY),
                             "post": torch.cuda.Stream(dev, priority=AUX_STREAM_PRIORITY)}
            torch.cuda.set_stream(self._streams["prep"])  # frames are uploaded and preprocessed here
            self._staging = PinnedStaging(torch.device(dev))

    def warm_up(self) -> list[str]:
        """Run the release path once per model before the first release: decoding (the decoder's own warm-up,
        e.g. nvJPEG's decoder, in every decode thread), preprocessing of a frame that needs a resize (2x the input
        size, through the pinned staging buffers), every stage, and the result post-processing (boxes, masks,
        top-k). Profiling runs the stages only, on frames of the input size; on CUDA the kernels of the other
        steps load at their first call (lazy module loading) and the pinned buffers are allocated then, which
        made the first jobs after activation miss their deadlines (6 HP misses per camera in the first 0.2 s,
        vehicle set on an H100). The engine's loop calls it on a CUDA device before it starts. A step that fails
        is logged and skipped (its first real job then pays the cost, or fails as it would have); returns the
        model keys warmed."""
        started = time.perf_counter()
        try:
            self._warm_up_decoder()
        except Exception as exc:  # noqa: BLE001 - a warm-up is an optimisation: never fatal
            log.warning("decoder warm-up failed (%s: %s); the first frames may be late", type(exc).__name__, exc)
        warmed: list[str] = []
        for t in self.settings.tasks:
            key = self._model_key(t)
            if key in warmed or key not in self.models:
                continue
            try:
                self._warm_up_model(t, key)
            except Exception as exc:  # noqa: BLE001 - as above
                log.warning("warm-up of %s failed (%s: %s); its first jobs may be late", self.model_label(key),
                            type(exc).__name__, exc)
                continue
            warmed.append(key)
        log.info("warm-up: the decoder and %d model(s) run once in %.1f s", len(warmed), time.perf_counter() - started)
        return warmed

    def _warm_up_decoder(self) -> None:
        warm_up_decoder = getattr(self.decoder, "warm_up", None)
        if not callable(warm_up_decoder):
            return
        if self.decoder.threads <= 0:
            warm_up_decoder()
            return
        self._decode_queue().run_in_each_thread(warm_up_decoder)

    def _warm_up_model(self, t: TaskSettings, key: str) -> None:
        from daris_ros.runtime.preprocess import preprocess_batch

        height, width = 2 * t.input_size[0], 2 * t.input_size[1]
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        rows: list[tuple[Any, int]] = [(self._model_input(key, preprocess_batch(
            [frame], t.input_size, device=self.backend.device, staging=self._staging)), 0)]
        for j in range(self.models[key].num_stages):
            y, _ = self.backend.run_now(key, j, 1, rows)
            rows = [(y, 0)]
        self._postprocess(self.models[key], rows[0][0], [_JobRun(t, key, FrameItem(None, 0.0),
                                                                 source_size=(height, width))]).rows()

    def _loop(self) -> None:
        core = self._core
        releases = self._releases
        assert core is not None and releases is not None
        backend = self.backend
        poll = backend.poll
        polled = backend.polled
        clock = self._clock
        wake = self._wake
        commands = self._commands
        stats = self._loop_stats
        due: list[tuple[str, float, int]] = []
        backlog = ReleaseBacklog(self._is_hp)  # releases of a burst left over, HP first
        fresh = self._fresh
        cpu_clock = time.thread_time
        # (the loop's CPU time is its thread's since here: a thread that waits uses none, so one reading per turn
        # gives the busy CPU; each reading is a system call)
        cpu_base = cpu_clock() - stats.busy_cpu
        max_wait = self._max_wait
        mark = self._mark
        perf = time.perf_counter
        last = clock()
        started = last > 0
        load = self._loop_load
        fresh_gate: float | None = None  # when the new frames are looked at (release_window: a grid point)
        while not self._closed:
            wake.clear()
            mark.busy_since = perf()
            load.busy()
            now = clock()
            if now < last or not started:  # a clock that jumped back, or /clock that starts now
                if now > 0:
                    releases.rebase(now)
                    started = True
            last = now
            while commands:
                commands.popleft()()
            due.clear()
            if self._paused:
                fresh.clear()
                self._fresh_armed = False
                fresh_gate = None
                backlog.clear()
            elif started:
                if fresh:
                    if fresh_gate is None:
                        fresh_gate = releases.on_grid(now)
                    if now >= fresh_gate:
                        self._fresh_armed = False  # (before taking them: a frame appended later wakes the loop)
                        self._fresh_releases(now, due)
                        fresh_gate = None
                if now >= releases.next_time():
                    self._due_releases(now, due)
            if backlog or len(due) > RELEASE_CHUNK:
                backlog.add(due)
                due.clear()
                backlog.take(RELEASE_CHUNK, due)
            if due:
                c1 = cpu_clock()
                n = self._release_burst(due, now)
                stats.release_cpu += cpu_clock() - c1
                stats.releases += n
            late = self._admit_decoded() if self._decoding else False
            finished = poll()
            if finished:
                self._complete(finished, clock())
            if self._post_pending:
                self._deliver_copied()
            # (after frames released undecoded, LATE: now >= their skip time, so this dispatch skips their jobs)
            dispatches = core.dispatch(now if not (finished or late) else clock())
            if dispatches:
                self._launch(dispatches)
            skipped = core.take_skipped()
            if skipped:
                self._drop_skipped(skipped)
            stats.iterations += 1
            stats.busy_cpu = cpu_clock() - cpu_base
            # sleep until the next release, the core's next wake-up, a completion (notify) or a command
            timeout = PAUSED_MAX_WAIT if self._paused else releases.next_time() - clock()
            wakeup = core.next_wakeup()
            if wakeup is not None and wakeup - now < timeout:
                timeout = wakeup - now
            if fresh_gate is not None and fresh_gate - now < timeout:  # new frames waiting for a grid point
                timeout = fresh_gate - now
            if ((polled and self._launches) or self._post_pending) and timeout > POLL_INTERVAL:
                timeout = POLL_INTERVAL
            elif timeout > max_wait:
                timeout = max_wait
            if timeout > 0 and not commands and not backlog:
                mark.busy_since = 0.0
                load.idle()
                wake.wait(timeout)
        mark.busy_since = 0.0

    # -- releases -----------------------------------------------------------------------------------------------
    def _is_hp(self, task: str) -> bool:
        settings = self._task.get(task)
        return settings is not None and settings.priority == "HP"

    def _fresh_releases(self, now: float, due: list[tuple[str, float, int]]) -> None:
        """Frame-triggered tasks whose new frame arrived: released now when allowed (else at their allowed time)."""
        releases = self._releases
        assert releases is not None
        fresh = self._fresh
        seen: set[str] = set()
        while fresh:
            task = fresh.popleft()
            if task in seen or not releases.on_frame(task):
                continue
            seen.add(task)
            if releases.may_release(task, now) and self.inbox.pending(task):
                due.append((task, now, 0))

    def _due_releases(self, now: float, due: list[tuple[str, float, int]]) -> None:
        """Clock releases that have come, and checks of frame-triggered tasks (released if their frame is there,
        else a stale period is counted once a whole period passed without one)."""
        releases = self._releases
        assert releases is not None
        checks: list[tuple[str, float, int]] = []
        releases.due(now, checks)
        queued = {task for task, _, _ in due}
        for task, at, skipped in checks:
            if skipped >= 0:
                due.append((task, at, skipped))
            elif task in queued:
                continue
            elif self.inbox.pending(task):
                due.append((task, now, 0))
                queued.add(task)
            elif releases.stale_check(task, at):
                self.inbox.count_stale(task)

    def _release_burst(self, due: list[tuple[str, float, int]], now: float) -> int:
        """Take the frames of every release in ``due``, decode them together, ask the core to admit each job and
        preprocess the admitted ones per model as one batch. Returns the number of releases.

        A job's release time is ``now``, when the loop took its frame: the scheduled instant while the loop keeps
        up; when it is late, the lateness is reported (``releases_skipped``, frame age) rather than charged to the
        job's deadline. Decoding and preprocessing are part of the job."""
        inbox = self.inbox
        releases = self._releases
        assert releases is not None
        taken: list[tuple[str, float, FrameItem]] = []
        for (task, at, skipped), item in zip(due, inbox.take_many([task for task, _, _ in due]), strict=True):
            if skipped:
                inbox.skipped(task, skipped)
            if item is not None:
                taken.append((task, at, item))
                if releases.on_frame(task):
                    releases.released(task, now, item.receive_time)
        if not taken:
            return 0
        released = len(taken)
        if self.settings.lp_host_busy_limit < 1.0 and self._loop_load.fraction() > self.settings.lp_host_busy_limit:
            taken = self._reject_lp_for_host(taken, now)
            if not taken:
                return released
        tasks = [self._task[name] for name, _, _ in taken]
        if self.decoder.threads > 0:  # decoding that costs CPU: off the loop, in the decode pool
            self._decode_async(taken, tasks, now)
        else:
            self._admit(taken, tasks, self._decode(tasks, [item.payload for _, _, item in taken]), now)
        return released

    def _reject_lp_for_host(self, taken: list[tuple[str, float, FrameItem]], now: float
                            ) -> list[tuple[str, float, FrameItem]]:
        """The loop is over ``lp_host_busy_limit``: the LP releases of the burst are rejected by the core
        (``release(host_busy=True)``: counted in ``rejected`` and ``rejected_host``) before their frames are
        decoded; the HP ones are returned, to be released as usual."""
        core = self._core
        assert core is not None
        kept: list[tuple[str, float, FrameItem]] = []
        ages: list[tuple[str, float, float | None, float]] = []
        for entry in taken:
            name, _at, item = entry
            t = self._task[name]
            if t.priority == "HP":
                kept.append(entry)
                continue
            decision = core.release(name, now, host_busy=True)
            assert not decision.admitted
            ages.append((name, now, item.stamp, t.period))
        self.inbox.released_many(ages)
        return kept

    def _decode(self, tasks: Sequence[TaskSettings], payloads: Sequence[Any]) -> list[Any]:
        try:
            return self.decoder.decode(tasks, payloads)
        except Exception as exc:  # noqa: BLE001 - a decoder failure drops the burst's frames, the loop lives on
            return [FrameError("decode_error", f"{type(exc).__name__}: {exc}")] * len(payloads)

    def _decode_async(self, taken: list[tuple[str, float, FrameItem]], tasks: list[TaskSettings], now: float) -> None:
        """Decode a burst in the decode pool (``decoder.threads`` threads), in parts of DECODE_PART frames of one
        priority, HP parts first (runtime.decode_queue); the loop admits the jobs of each part when it is done
        (:meth:`_admit_decoded`), with ``now`` (when their frames were taken) as their release time. A frame still
        waiting at its skip time (``skip_late``) is not decoded (LATE): the core skips its job."""
        queue = self._decode_queue()
        skip_late = self.settings.skip_late
        for priority, hp in ((HP_FIRST, True), (LP_AFTER, False)):
            members = [i for i, t in enumerate(tasks) if (t.priority == "HP") is hp]
            for first in range(0, len(members), DECODE_PART):
                part = members[first:first + DECODE_PART]
                queue.submit(DecodePart(priority, [taken[i] for i in part], [tasks[i] for i in part], now,
                                        [skip_time(now, skip_late, tasks[i].deadline) for i in part]))

    def _decode_queue(self) -> DecodeQueue:
        """The decode pool (``decoder.threads`` threads), made at its first use."""
        if self._decoding is None:
            self._decoding = DecodeQueue(self.decoder.threads, self._decode, self._clock, on_done=self._wake.set)
        return self._decoding

    def _admit_decoded(self) -> bool:
        """Admit the jobs of the parts whose decoding finished (HP parts first; each priority's in the order taken).
        Returns whether a frame was released undecoded (LATE)."""
        assert self._decoding is not None
        late = False
        for part in self._decoding.take_done():
            self._admit(part.taken, part.tasks, part.frames, part.released_at)
            late = late or part.late > 0
        return late

    def _admit(self, taken: list[tuple[str, float, FrameItem]], tasks: list[TaskSettings], frames: list[Any],
               now: float) -> None:
        """Ask the core to admit a job per decoded frame (a frame that failed is dropped and counted) and
        preprocess the admitted ones per model as one batch."""
        inbox = self.inbox
        core = self._core
        assert core is not None
        by_key: dict[str, list[tuple[_JobRun, Any]]] = {}
        ages: list[tuple[str, float, float | None, float]] = []
        for (name, _at, item), t, frame in zip(taken, tasks, frames, strict=True):
            if name not in self._task:
                continue  # removed while its frame was decoded
            if isinstance(frame, BaseException):
                reason = frame.reason if isinstance(frame, FrameError) else "invalid"
                inbox.drop(name, reason, at_release=True)
                throttled.warning((name, reason), "task %s: dropped a frame from %s at release (%s): %s", name,
                                  t.topic, reason, frame)
                continue
            decision = core.release(name, now)
            ages.append((name, now, item.stamp, t.period))
            if frame is LATE:  # not decoded: past its skip time, the core's next dispatch skips the job
                self.counters.frames_undecoded += 1
                if decision.admitted and decision.job is not None:
                    # (an error: were it dispatched all the same, it would end failed, never run on no input)
                    self._jobs[decision.job] = _JobRun(t, self._key[name], item, mret=core.mret(name),
                                                       error="its frame was not decoded by its skip time")
                    self._troubled += 1
                continue
            if decision.admitted and decision.job is not None:
                shape = getattr(frame, "shape", None)
                run = _JobRun(t, self._key[name], item, mret=core.mret(name),
                              source_size=(int(shape[0]), int(shape[1])) if shape is not None and len(shape) >= 2
                              else None)
                self._jobs[decision.job] = run
                by_key.setdefault(self._key[name], []).append((run, frame))
        inbox.released_many(ages)
        for key, members in by_key.items():
            self._prepare_inputs(key, members)

    def _prepare_inputs(self, key: str, members: list[tuple[_JobRun, Any]]) -> None:
        """Stage-0 inputs of one model's jobs of a burst: row i of one preprocessed batch (or, on a backend whose
        workers preprocess, the raw frame as a batch of one)."""
        from daris_ros.runtime.preprocess import preprocess_batch

        t = members[0][0].task
        if self._direct_frames:
            import torch

            backend = self.backend
            assert isinstance(backend, HostFrames)
            for run, frame in members:
                if isinstance(frame, np.ndarray) and backend.accepts_frame(frame.shape[0], frame.shape[1]):
                    run.source, run.row = torch.from_numpy(np.ascontiguousarray(frame)).unsqueeze(0), 0
                    continue
                run.source = self._model_input(key, preprocess_batch([frame], t.input_size,
                                                                     device=self.backend.device))
            return
        try:
            batch = preprocess_batch([f for _, f in members], t.input_size, device=self.backend.device,
                                     staging=self._staging)
            batch = self._model_input(key, batch)
        except Exception as exc:  # noqa: BLE001 - a frame the preprocessing refuses fails its job, not the loop
            for run, _ in members:
                run.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
            self._troubled += len(members)
            return
        for i, (run, _) in enumerate(members):
            run.source, run.row = batch, i

    # -- launches -----------------------------------------------------------------------------------------------
    def _launch(self, dispatches: list[Dispatch]) -> None:
        jobs = self._jobs
        launches = self._launches
        lanes = self._lanes
        heads = self._heads
        launch = self.backend.launch
        counters = self.counters
        now = self._clock()
        for d in dispatches:
            runs = [jobs[job] for job in d.jobs]
            retries, fault = 0, None
            if self._troubled:  # (rare) jobs that failed or whose stage is retried after a worker fault
                retries = max((r.retries.get(d.stage, 0) for r in runs), default=0)
                fault = next((r.fault for r in runs if r.fault is not None), None)
                good = [r for r in runs if not r.error and r.source is not None]
                if not good:  # every job failed already: its remaining stages complete at once, not run
                    self._complete_unrun(d)
                    continue
                filler = good[0]
                rows = [(r.source, r.row) if (not r.error and r.source is not None) else (filler.source, filler.row)
                        for r in runs]
            else:
                rows = [(r.source, r.row) for r in runs]
            ticket = launch(d.context, d.stream, d.model, d.stage, d.size, rows)
            launches[ticket] = _Launch(d, now, retries, fault)
            lane_key = (d.context, d.stream)
            lane = lanes.get(lane_key)
            if lane is None:
                lane = lanes[lane_key] = collections.deque()
            if not lane:
                heads[lane_key] = (ticket, now)
            lane.append(ticket)
            counters.dispatches += 1
            counters.launched_jobs += len(d.jobs)

    # -- completions ----------------------------------------------------------------------------------------------
    def _complete(self, finished: list[Any], now: float) -> None:
        core = self._core
        assert core is not None
        launches = self._launches
        jobs = self._jobs
        outcomes: list[JobOutcome] = []
        for f in finished:
            entry = launches.pop(f.ticket, None)
            if entry is None:  # a lost launch's late result (its stage was retried), or one discarded at a fault
                self.faults.stale_completions += 1
                continue
            d = entry.dispatch
            self._pop_lane(d.context, d.stream, f.ticket, now)
            n = len(d.jobs)
            if f.error is not None:
                self.counters.stage_errors += 1
                message = f"{type(f.error).__name__}: {f.error}"
                throttled.error((d.model, d.stage, type(f.error).__name__), "%s stage %d (%d job(s) of %s) failed: %s",
                                d.model, d.stage, n, ", ".join(sorted({jobs[j].task.name for j in d.jobs})), message)
            traces = _StageTraces(d, now, f.exec_time)
            for i, job in enumerate(d.jobs):
                run = jobs[job]
                if f.error is not None:
                    if not run.error and not run.retries:
                        self._troubled += 1
                    run.error = run.error or message
                elif not run.error:
                    run.source, run.row = f.output, i
                    run.exec_time += f.exec_time
                run.stages.append(traces.at_level(d.levels[i]))
                if run.fault is not None and entry.fault is run.fault:
                    run.fault = None
            if entry.fault is not None and entry.fault.recovered is None:
                entry.fault.recovered = now
            outcomes += core.complete(d, now, f.exec_time if f.error is None else None)
        if outcomes:
            self._finish(outcomes)

    def _pop_lane(self, context: int, stream: int, ticket: int, now: float) -> None:
        lane_key = (context, stream)
        lane = self._lanes[lane_key]
        if lane and lane[0] == ticket:
            lane.popleft()
        else:
            lane.remove(ticket)
        if lane:
            self._heads[lane_key] = (lane[0], now)
        else:
            self._heads.pop(lane_key, None)

    def _complete_unrun(self, d: Dispatch) -> None:
        """Complete ``d`` without running it (its jobs failed already), with its stages' MRET as the time."""
        core = self._core
        assert core is not None
        now = self._clock()
        est = max(d.predicted_finish - d.start, 0.0)
        traces = _StageTraces(d, now, 0.0)
        for i, job in enumerate(d.jobs):
            self._jobs[job].stages.append(traces.at_level(d.levels[i]))
        outcomes = core.complete(d, now, est)
        if outcomes:
            self._finish(outcomes)

    def _finish(self, outcomes: list[JobOutcome]) -> None:
        """Post-process the finished jobs (grouped by the output they are rows of) and hand out their results: at
        once where the rows are on the host (or failed), else once their copy to the host is done
        (:meth:`_deliver_copied`; the loop does not wait for the device)."""
        groups: dict[int, list[tuple[JobOutcome, _JobRun]]] = {}
        jobs = self._jobs
        for o in outcomes:
            run = jobs.pop(o.job)
            if run.error or run.retries:
                self._troubled -= 1
            groups.setdefault(id(run.source) if not run.error else 0, []).append((o, run))
        post = self._streams.get("post")
        for gid, members in groups.items():
            if not gid:  # failed jobs: no payload
                for o, run in members:
                    self._deliver(o, run, None)
                continue
            run0 = members[0][1]
            model = self.models[run0.key]
            runs = [run for _, run in members]
            try:
                if post is not None:
                    import torch

                    with torch.cuda.stream(post):
                        pending = self._postprocess(model, run0.source, runs)
                else:
                    pending = self._postprocess(model, run0.source, runs)
            except Exception as exc:  # noqa: BLE001 - a failing post-processing fails these jobs only
                self._fail_postprocessing(members, exc)
                continue
            if pending.ready():
                self._deliver_rows(pending, members)
            else:
                self._post_pending.append((pending, members))
                self._post_pending_jobs += len(members)

    def _deliver_copied(self) -> None:
        """Hand out the results of the post-processed groups whose copy to the host is done."""
        still: list[tuple[PendingRows, list[tuple[JobOutcome, _JobRun]]]] = []
        for pending, members in self._post_pending:
            if pending.ready():
                self._post_pending_jobs -= len(members)
                self._deliver_rows(pending, members)
            else:
                still.append((pending, members))
        self._post_pending = still

    def _deliver_rows(self, pending: PendingRows, members: list[tuple[JobOutcome, _JobRun]]) -> None:
        try:
            payloads = pending.rows()
        except Exception as exc:  # noqa: BLE001 - a failing post-processing fails these jobs only
            self._fail_postprocessing(members, exc)
            return
        for (o, run), payload in zip(members, payloads, strict=True):
            self._deliver(o, run, payload)

    def _fail_postprocessing(self, members: list[tuple[JobOutcome, _JobRun]], exc: Exception) -> None:
        for o, run in members:
            run.error = f"post-processing failed: {type(exc).__name__}: {exc}"
            self._deliver(o, run, None)

    def _drop_skipped(self, jobs: list[Any]) -> None:
        """Jobs the core skipped unstarted (``skip_late``, docs/policy.md "Bounded staleness under overload"): their
        frames are let go and no result is published, as for a rejected release; the core counts them
        (``TaskStats.skipped``, the node's /diagnostics WARN). (Jobs skipped by a dispatch outside the loop's, at a
        worker fault, are dropped at the loop's next turn.)"""
        for job in jobs:
            run = self._jobs.pop(job, None)
            if run is not None:
                if run.error or run.retries:
                    self._troubled -= 1
                run.source = None

    def _postprocess(self, model: Any, output: Any, runs: list[_JobRun]) -> PendingRows:
        """The post-processing of ``runs``, rows of one output of ``model``, started: per task its own threshold,
        cap and mask resolution, per job its source frame's size."""
        rows = [run.row for run in runs]
        if model.kind == "detection":
            return start_detect(output, rows, [run.source_size for run in runs], model.input_size,
                                [run.task.score_threshold for run in runs], [run.task.max_detections for run in runs])
        if model.kind == "segmentation":
            return start_mask(output, rows, [run.source_size if run.task.mask_resolution == "source" else None
                                             for run in runs],
                              [run.task.name not in self._masks_unwanted for run in runs])
        return start_classify(output, rows, self.settings.top_k)

    def _deliver(self, o: JobOutcome, run: _JobRun, payload: Any) -> None:
        job = o.job
        class_ids: list[int] = []
        scores: list[float] = []
        seg = None
        detections: Detections | None = None
        mask = None
        if payload is not None and not run.error:
            if isinstance(payload, SegmentationRow):
                seg, mask = payload.summary, payload.mask
            elif isinstance(payload, Detections):
                detections = payload
            else:
                class_ids, scores = payload
        last = run.stages[-1] if run.stages else None
        result = JobResult(
            task=job.task, job_id=job.job_id, priority=run.task.priority, model=run.task.model,
            class_ids=class_ids, scores=scores, segmentation=seg, receive_time=run.item.receive_time,
            release_time=job.release, start_time=job.start if job.start is not None else job.release,
            finish_time=o.finish, deadline=job.abs_deadline, response_time=o.response_time,
            exec_time=run.exec_time, met=o.met and not run.error,
            context=last.context if last else job.context, stream=last.stream if last else 0,
            meta=run.item.meta, error=run.error, mret=run.mret, stages=run.stages, stamp=run.item.stamp,
            kind=self.models[run.key].kind, source_size=run.source_size, detections=detections, mask=mask)
        run.source = None
        self.counters.results += 1
        try:
            self._on_result(result)
        except Exception:  # noqa: BLE001 - a failing consumer must not stop the loop
            log.exception("result callback failed for %s job %d", job.task, job.job_id)

    # ===================================================================================== commands (any thread)
    def call(self, fn: Callable[[Scheduler], T], timeout: float = 30.0) -> T:
        """Run ``fn(core)`` in the loop thread between two events and return its result (its exception is
        raised here). Before :meth:`start` and after :meth:`close` it runs in the caller's thread."""
        core = self._core
        if core is None:
            raise RuntimeError("start() first")
        if self._thread is None or not self._thread.is_alive() or threading.current_thread() is self._thread:
            return fn(core)
        future: Future[T] = Future()

        def command() -> None:
            try:
                future.set_result(fn(core))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

        self._commands.append(command)
        self._wake.set()
        return future.result(timeout)

    @property
    def scheduler(self) -> Scheduler:
        """The policy core, for reading at start-up or in :meth:`call` (only the loop may use it while it runs)."""
        if self._core is None:
            raise RuntimeError("start() first")
        return self._core

    def snapshot(self) -> EngineSnapshot:
        """Everything the statistics need, read in the loop thread at one instant."""
        def read(core: Scheduler) -> EngineSnapshot:
            n_c = core.layout.n_contexts
            names = [spec.name for spec in core.tasks()]
            return EngineSnapshot(
                time=self._clock(), tasks=core.task_stats(), priorities=core.priority_stats(),
                context_of={n: core.context_of(n) for n in names}, mret={n: core.mret(n) for n in names},
                utilization=[core.utilization(k) for k in range(n_c)],
                queued=[core.queue_length(k) for k in range(n_c)], contexts_down=core.contexts_down,
                outstanding_stages=core.outstanding_stages(), in_flight_jobs=len(self._jobs) + self._post_pending_jobs,
                reprobes=core.reprobes(), batch=core.batch_stats(), sm_per_context=core.sm_per_context(),
                intake=self.inbox.snapshot(),
                loop=dataclasses.replace(self._loop_stats, busy_share=self._loop_load.fraction()),
                counters=dataclasses.replace(self.counters), sm_limit=core.config.sm_limit,
                usable_sms=core.config.usable_sms,
                daemon_restarts=self.backend.daemon_restarts if isinstance(self.backend, SupervisedDaemon) else None)
        return self.call(read)

    def feasibility(self) -> FeasibilityReport:
        """Per context: the HP utilization (eq. 4) against N_s, the LP share left (eq. 11) and the expected LP
        rejection rate (daris_ros.core.feasibility), from each task's current context and u_i: eq. 10 (AFET / T_i)
        right after the offline phase of :meth:`start`, eq. 3 (MRET / T_i) once measured. Read in the loop."""
        return self.call(feasibility_of)

    def in_flight(self) -> int:
        """Jobs admitted whose result was not handed out yet, and frames taken by a release and still being
        decoded."""
        return self.call(lambda _core: len(self._jobs) + self._post_pending_jobs
                         + (self._decoding.pending_frames() if self._decoding else 0))

    def pause_releases(self, drop_reason: str = "inactive") -> int:
        """Stop releasing tasks (a managed node's deactivate): no job is released from now on, no stale period is
        counted, and the frames waiting for a release are dropped and counted as ``drop_reason``; jobs in flight
        run on and hand out their results (wait for them with :func:`daris_ros.runtime.driver.drain`). Before
        :meth:`start` the engine then starts paused. Returns the frames dropped."""
        if self._core is None or not self.running:
            self._paused = True
            return self.inbox.discard_pending(drop_reason)

        def pause(_core: Scheduler) -> int:
            self._paused = True
            self._fresh.clear()
            self._fresh_armed = False
            return self.inbox.discard_pending(drop_reason)
        return self.call(pause)

    def resume_releases(self) -> None:
        """Release again (activate): every task's next release (frame-triggered: its first allowed one) is now,
        so the time spent paused counts neither as skipped releases nor as stale periods."""
        if self._core is None or not self.running:
            self._paused = False
            return

        def resume(_core: Scheduler) -> None:
            if self._paused:
                assert self._releases is not None
                self._releases.rebase(self._clock())
            self._paused = False
        self.call(resume)

    @property
    def releasing(self) -> bool:
        """False while releases are paused (:meth:`pause_releases`)."""
        return not self._paused

    def update_task(self, task: TaskSettings) -> None:
        """Apply a changed rate/period, deadline or priority of an existing task (jobs already released keep
        theirs). Model, input size and weights cannot change at run time."""
        old = self._task[task.name]
        if self._model_key(old) != self._model_key(task):
            raise ValueError(f"task {task.name}: model, input_size and weights cannot change at run time")

        def apply(core: Scheduler) -> None:
            core.update_task(task.name, period=task.period, deadline=task.deadline,
                             priority=Priority.HP if task.priority == "HP" else Priority.LP)
            if task.period != old.period:
                assert self._releases is not None
                self._releases.set_period(task.name, task.period, self._clock())
            self._task[task.name] = task
            self._replace_settings(tuple(task if t.name == task.name else t for t in self.settings.tasks))
        self.call(apply)

    def add_task(self, task: TaskSettings) -> None:
        """Add a task at run time: its model is built and profiled (in the caller's thread) if no task uses it
        yet, then the loop adds it to the core and releases it from its next period on."""
        key = self._model_key(task)
        model = self.models.get(key)
        loader: RuntimeModels | None = None  # set when the model is new: the backend that loads it
        if model is None:
            if not isinstance(self.backend, RuntimeModels):
                raise ValueError(f"backend {self.backend.name!r} cannot load a new model at run time")
            loader = self.backend
            model = self._build_model(task)
        # (a new model: before the backend copies it to its workers; a shared one: down to this task's threshold)
        self._set_score_floors((*self.settings.tasks, task), {key: model})
        if loader is not None:
            loader.add_model(key, model)
            self.models[key] = model
            self.model_bytes[key] = model_bytes(model)
            self._memory = None
            if self.settings.batching:
                self._capture_batches([key])
        self._class_names[task.name] = self._names_of(task, self.models[key])
        self._replace_settings((*self.settings.tasks, task))
        self.profile()  # (with batching, also the batch times of a new model)

        def apply(core: Scheduler) -> None:
            self._task[task.name] = task
            self._key[task.name] = key
            self.inbox.add_task(task.name)
            core.add_task(to_task_spec(task, self.afet[key], key))
            self._add_release(task, self._clock() + task.period)
        self.call(apply)

    def remove_task(self, name: str) -> None:
        """Remove a task; its jobs in flight still finish and are reported."""
        def apply(core: Scheduler) -> None:
            core.remove_task(name)
            assert self._releases is not None
            self._releases.remove(name)
            self.inbox.remove_task(name)
            self._task.pop(name, None)
            self._replace_settings(tuple(t for t in self.settings.tasks if t.name != name))
        self.call(apply)

    def set_mret_window(self, ws: int) -> None:
        self.call(lambda core: core.set_mret_window(ws))

    def refresh_unmeasured_afet(self) -> int:
        """Give tasks that never ran the MRET their model's stages have in tasks that did.

        The start-up AFET can be far too pessimistic (profiled alone, or under a CPU/GPU spike); an LP task
        rejected on it never runs, so its own MRET (eq. 1) never replaces it. Tasks sharing a model key
        run the same stages, so the per-stage *median* of their measured MRETs is the better estimate: an average
        full-load time, as AFET is (section IV-A1). Returns how many tasks were refreshed. O(tasks).
        """
        def refresh(core: Scheduler) -> int:
            refreshed = 0
            groups: dict[str, list[str]] = {}
            for name in self._task:
                groups.setdefault(self._key[name], []).append(name)
            for names in groups.values():
                samples: dict[int, list[float]] = {}
                for n in names:
                    for j, (m, ok) in enumerate(zip(core.stage_mrets(n), core.measured_stages(n), strict=True)):
                        if ok:
                            samples.setdefault(j, []).append(m)
                if not samples:
                    continue
                measured = {j: statistics.median(v) for j, v in samples.items()}
                for n in names:
                    if all(core.measured_stages(n)):
                        continue
                    current = core.stage_mrets(n)
                    core.refresh_afet(n, tuple(measured.get(j, current[j]) for j in range(len(current))))
                    refreshed += 1
            return refreshed
        return self.call(refresh)

    def _replace_settings(self, tasks: tuple[TaskSettings, ...]) -> None:
        self.settings = dataclasses.replace(self.settings, tasks=tasks)

    # ===================================================================================== worker faults
    def _attempts_in_flight(self) -> list[tuple[int, int, int, float]]:
        """(context, stream, ticket, running since) of the launch each stream runs now (the watchdog's view)."""
        return [(c, s, ticket, since) for (c, s), (ticket, since) in list(self._heads.items())]

    def _context_scoped(self) -> bool:
        """Whether a dead worker takes its whole context down: a worker process per context (``mps``:
        ``worker_scope == "context"``), or one stream per context. The core then moves the context's tasks and
        queued stages to the other contexts until the replacement serves (Scheduler.context_down)."""
        b = self.backend
        return (isinstance(b, WorkerFaults) and b.worker_scope == "context") or b.n_streams == 1

    def on_worker_fault(self, context: int, stream: int, reason: str, token: int | None = None,
                        detected: float | None = None) -> FaultRecord | None:
        """Handle a dead or hung worker (called by the watchdog's recovery thread): the loop takes the launches
        lost with it back into the core (Scheduler.abort: re-queued with their levels and virtual deadlines, once;
        a second loss fails their jobs) and, when the worker served its whole context, marks the context down
        (Scheduler.context_down) so its tasks and queued stages run elsewhere; then the worker is replaced here
        (this can take seconds) and the loop brings the context back (Scheduler.context_up). Returns None when
        the fault was handled already (a hung launch that finished meanwhile)."""
        detected = self._clock() if detected is None else detected
        if self._closed:
            return None
        assert isinstance(self.backend, WorkerFaults)
        if token is None and self.backend.worker_alive(context, stream):
            return None  # replaced already (with another stream of its context: one process serves them all)
        rec = self.call(lambda core: self._take_lost(core, context, stream, reason, token, detected))
        if rec is None:
            return None
        assert isinstance(self.backend, WorkerFaults)
        try:
            self.backend.restart_worker(context, stream)
        except BaseException:  # the watchdog sees the worker dead again and retries: this worker is not in recovery
            worker = (context, -1) if self._context_scoped() else (context, stream)
            self.call(lambda _core: self._recovering.discard(worker))
            raise
        rec.replaced = self._clock()
        if self._closed:
            return rec
        self.call(lambda core: self._worker_back(core, context, rec))
        log.warning("worker c%ds%d %s: replaced in %.1f ms, stage in flight %s%s", context, stream, reason,
                    (rec.replaced - detected) * 1e3, rec.outcome,
                    f"; tasks moved meanwhile: {rec.moved}" if rec.moved else "")
        return rec

    def _take_lost(self, core: Scheduler, context: int, stream: int, reason: str, token: int | None,
                   detected: float) -> FaultRecord | None:
        if token is not None and token not in self._launches:
            return None  # the hung launch finished meanwhile
        scoped = self._context_scoped()
        worker = (context, -1) if scoped else (context, stream)
        if worker in self._recovering:
            return None  # the same worker (a process serving the whole context) is being replaced already
        self._recovering.add(worker)
        if scoped:
            lost = [t for (c, _s), lane in self._lanes.items() if c == context for t in lane]
        elif token is not None:
            lost = [token]
        else:
            lane = self._lanes.get((context, stream))
            lost = [lane[0]] if lane else []
        backend = self.backend
        assert isinstance(backend, WorkerFaults)
        died = backend.worker_died_at(context, stream)
        rec = self.faults.open(context, stream, reason, detected, died)
        now = self._clock()
        failed: list[Dispatch] = []
        for ticket in lost:
            entry = self._launches.pop(ticket)
            d = entry.dispatch
            self._pop_lane(d.context, d.stream, ticket, now)
            if not rec.task:
                rec.task, rec.job_id, rec.stage = d.job.task, d.job.job_id, d.stage
            if entry.retries < MAX_STAGE_RETRIES:
                core.abort(d, now)  # queued again: it follows its job to a context that serves
                for job in d.jobs:
                    run = self._jobs[job]
                    if not run.retries and not run.error:
                        self._troubled += 1
                    run.retries[d.stage] = entry.retries + 1
                    run.fault = rec
                self.faults.stages_retried += 1
                rec.outcome = "retried"
            else:
                failed.append(d)
        if scoped:
            rec.moved = core.context_down(context, now)
        for d in failed:
            rec.outcome = rec.outcome or "failed"
            self.faults.jobs_failed += len(d.jobs)
            for job in d.jobs:
                run = self._jobs[job]
                if not run.error and not run.retries:
                    self._troubled += 1
                run.error = run.error or (f"WorkerFault: stage {d.stage} lost twice (worker c{context}s{stream} "
                                          f"{reason})")
            self._complete_unrun(d)
        if not lost:
            rec.outcome = "idle"
        dispatches = core.dispatch(now)  # the re-queued stages, on a stream that serves
        if dispatches:
            self._launch(dispatches)
        return rec

    def _worker_back(self, core: Scheduler, context: int, rec: FaultRecord) -> None:
        assert rec.replaced is not None
        scoped = self._context_scoped()
        self._recovering.discard((context, -1) if scoped else (context, rec.stream))
        if scoped:
            rec.moved_back = core.context_up(context, self._clock())
        if rec.outcome == "idle":
            rec.recovered = rec.replaced

    # ===================================================================================== the rest
    def memory(self, max_age: float = 2.0) -> ContextMemory:
        """Memory per context (the backend's ``memory_by_context``, else the resident model bytes), at most
        ``max_age`` seconds old (asking MPS workers costs a control round trip each)."""
        now = self._clock()
        if self._memory is not None and now - self._memory[0] < max_age:
            return self._memory[1]
        if isinstance(self.backend, MemoryStats):
            mem = self.backend.memory_by_context()
        else:  # cpu threads: one process, every model once
            mem = ContextMemory((sum(self.model_bytes.values()),) * self.backend.n_contexts, SOURCE_MODELS, True)
        self._memory = (now, mem)
        return mem

    @staticmethod
    def model_label(key: str) -> str:
        """``resnet18@224x224`` from a model key (the weights path left out)."""
        return key.split(":", 1)[0]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop (jobs in flight are discarded), the watchdog and the backend; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._stall_probe is not None:
            self._stall_probe.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._decoding is not None:
            self._decoding.close()
        self.backend.close()

    @property
    def running(self) -> bool:
        """Whether the loop thread runs (False before start, after close, or if it failed)."""
        return self._thread is not None and self._thread.is_alive()


def summarize_afet(afet: Mapping[str, tuple[float, ...]]) -> str:
    return ", ".join(f"{k.split('@')[0]}: " + "/".join(f"{v * 1e3:.1f}" for v in st) + " ms"
                     for k, st in afet.items())
