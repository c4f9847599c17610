"""The engine: drives the DARIS policy core with real stage executions on a backend.

Event loop (the same events the simulator feeds the core):

* ``release(task, frame)``: preprocess the frame, ask the core to admit the job (eqs. 11-12, migration),
  then dispatch ready stages onto idle streams;
* a backend worker finishes a stage -> ``core.complete`` (MRET update, next stage enqueued with its
  virtual deadline) -> dispatch again; after the last stage, post-process and hand a
  :class:`JobResult` to ``on_result``.

The core is not thread-safe; one lock guards it. Backend work runs outside the lock. Nothing here knows
about ROS: the node, the demo and the bench all use this class.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daris_ros.core import (
    Dispatch,
    Policy,
    Priority,
    ReleaseDecision,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
    effective_layout,
)
from daris_ros.runtime.backends import Backend, create_backend
from daris_ros.runtime.engine_batching import EngineBatching, batching_config
from daris_ros.runtime.memory import SOURCE_MODELS, ContextMemory, model_bytes
from daris_ros.runtime.watchdog import (
    MAX_STAGE_RETRIES,
    FaultLog,
    FaultRecord,
    Watchdog,
    WorkerFault,
    supports_recovery,
)
from daris_ros.settings import SchedulerSettings, TaskSettings

log = logging.getLogger("daris_ros.engine")

Clock = Callable[[], float]
#: Response times kept per task and priority for the p50/p99/max statistics (bounded memory on long runs).
RESPONSE_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class StageTrace:
    """One executed stage: where, when (engine clock, seconds) and how long."""

    stage: int
    context: int
    stream: int
    level: int
    start: float
    finish: float
    exec_time: float
    virtual_deadline: float


@dataclass(slots=True)
class JobResult:
    """A finished job, with every time on the engine's clock (seconds)."""

    task: str
    job_id: int
    priority: str
    model: str
    class_ids: list[int]
    scores: list[float]
    segmentation: tuple[int, int, list[int], list[float]] | None
    receive_time: float
    release_time: float
    start_time: float
    finish_time: float
    deadline: float
    response_time: float
    exec_time: float
    met: bool
    context: int
    stream: int
    meta: Any = None
    error: str = ""
    mret: float = 0.0
    stages: list[StageTrace] = field(default_factory=list)


@dataclass(slots=True)
class _Running:
    task: TaskSettings
    receive_time: float
    meta: Any
    x: Any
    exec_time: float = 0.0
    context: int = 0
    stream: int = 0
    error: str = ""
    mret: float = 0.0
    stages: list[StageTrace] = field(default_factory=list)
    dispatched: dict[int, float] = field(default_factory=dict)
    row: int = 0  # batching: the job's row of ``x`` (the output of the batch that ran its previous stage)
    retry: dict[int, tuple[int, FaultRecord]] = field(default_factory=dict)  # stage -> (retries, its fault)


@dataclass(slots=True)
class _Attempt:
    """A stage submitted to (context, stream); ``token`` tells its completion from a lost attempt's."""

    d: Dispatch
    token: int
    submitted: float
    retries: int = 0
    fault: FaultRecord | None = None  # set on a retry: completing it ends the recovery


@dataclass(slots=True)
class EngineCounters:
    stage_errors: int = 0
    dispatches: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def to_task_spec(task: TaskSettings, afet: tuple[float, ...], model_key: str = "") -> TaskSpec:
    """The core's task; ``model_key`` (model, input size, weights, precision) is what batching groups by."""
    return TaskSpec(name=task.name, period=task.period, deadline=task.deadline,
                    priority=Priority.HP if task.priority == "HP" else Priority.LP,
                    n_stages=len(afet), afet=afet, model=model_key or task.model)


def to_scheduler_config(s: SchedulerSettings, n_sm_max: int = 132, sm_granularity: int = 2) -> SchedulerConfig:
    return SchedulerConfig(
        policy=Policy(s.policy), n_contexts=s.n_contexts, n_streams=s.n_streams,
        oversubscription=s.oversubscription, n_sm_max=n_sm_max, sm_granularity=sm_granularity,
        mret_window=s.mret_window, hp_admission=s.hp_admission, reprobe_after=s.reprobe_after,
        no_staging=s.no_staging,
        no_last=s.no_last, no_prior=s.no_prior, no_fixed=s.no_fixed, batching=batching_config(s),
    )


class Engine(EngineBatching):
    """Owns the models, the backend and the policy core of one scheduler node (batched path: EngineBatching)."""

    def __init__(self, settings: SchedulerSettings, *, on_result: Callable[[JobResult], None],
                 backend: Backend | None = None, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self._on_result = on_result
        self._clock = clock
        self.backend = backend or self._create_backend(settings)
        self.models: dict[str, Any] = {}
        self.model_bytes: dict[str, int] = {}  # parameters + buffers per model key (daris_ros.runtime.memory)
        self._memory: tuple[float, ContextMemory] | None = None
        self.afet: dict[str, tuple[float, ...]] = {}
        self.scheduler: Scheduler | None = None
        self.counters = EngineCounters()
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], _Running] = {}
        self._closed = False
        # worker faults (daris_ros.runtime.watchdog): the stage in flight per (context, stream)
        self.faults = FaultLog()
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self._tokens = itertools.count(1)
        self._fault_lock = threading.Lock()
        self._watchdog: Watchdog | None = None
        self._batch_afet: dict[tuple[str, int, int], float] = {}  # (model key, stage, size) -> profiled seconds
        self._converted: set[str] = set()  # model keys in reduced precision or channels-last (inputs converted)

    @staticmethod
    def _create_backend(settings: SchedulerSettings) -> Backend:
        """The backend with the policy's effective layout (STR: one context; MPS: one stream per context)."""
        layout = effective_layout(to_scheduler_config(settings))
        return create_backend(settings.backend, n_contexts=layout.n_contexts, n_streams=layout.n_streams,
                              device=settings.device, oversubscription=layout.oversubscription,
                              cuda_graphs=settings.cuda_graphs, mps_pipe_dir=settings.mps_pipe_directory or None,
                              mps_log_dir=settings.mps_log_directory or None,
                              mps_spares=None if settings.mps_spares < 0 else settings.mps_spares,
                              mps_frame_pixels=settings.mps_frame_pixels)

    # -- start-up: load models, profile, build the scheduler --------------------------------------------
    def load_models(self) -> None:
        """Build every model named by a task (each once, in its precision and memory format) and make it resident
        in every context; with batching, capture the batch-size graphs (str, green)."""
        for t in self.settings.tasks:
            key = self._model_key(t)
            if key in self.models:
                continue
            self.models[key] = self._build_model(t)
            self.model_bytes[key] = model_bytes(self.models[key])
        self.backend.start(self.models)
        if self.settings.batching:
            self._prepare_batching(list(self.models))

    def _build_model(self, t: TaskSettings) -> Any:
        from daris_ros.runtime.models import build_staged_model
        from daris_ros.runtime.models.precision import apply_precision

        model = build_staged_model(t.model, weights=t.weights or None, input_size=t.input_size)
        if t.precision != "fp32" or t.channels_last:
            apply_precision(model, t.precision, t.channels_last)  # records input_dtype / memory_format
            self._converted.add(self._model_key(t))
        return model.merged() if self.settings.no_staging else model

    def profile(self) -> dict[str, tuple[float, ...]]:
        """AFET per model stage (paper IV-A1), the initial estimate that MRET replaces online.

        ``afet_profile`` ``full_load``: the target model's stages run on context 0, stream 0 while every other
        (context, stream) runs random stages of random models (:func:`~daris_ros.runtime.profiling.full_load_afet`);
        ``isolated``: nothing else runs; ``auto``: full load on a CUDA device, isolated on the CPU. Mean of
        ``profile_runs`` runs after one warm-up. With ``afet_cache`` set, values are read from and written to that
        JSON file, keyed by device, torch, backend, layout, graphs, mode and model.
        """
        from daris_ros.runtime.preprocess import preprocess
        from daris_ros.runtime.profiling import AfetCache, full_load_afet

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
            frame = np.zeros((t.input_size[0], t.input_size[1], 3), dtype=np.uint8)
            todo[key] = x0 = self._model_input(key, preprocess(frame, t.input_size, device=self.backend.device))
            x = x0
            for i in range(self.models[key].num_stages):  # one unmeasured run on context 0 (warm-up)
                x, _ = self.backend.run_now(key, i, x)
        n_stages = {key: self.models[key].num_stages for key in todo}
        if mode == "full_load" and todo:
            measured = full_load_afet(self.backend, todo, n_stages, runs=self.settings.profile_runs, warmup=1)
        else:
            measured = {key: self._isolated_afet(key, x0) for key, x0 in todo.items()}
        for key, afet in measured.items():
            self.afet[key] = afet
            cache.put(self.afet_cache_key(key, mode), afet)
        if self.settings.batching:
            self._profile_batches([k for k in dict.fromkeys(self._model_key(t) for t in self.settings.tasks)
                                   if (k, 0, 1) not in self._batch_afet])
        return dict(self.afet)

    def afet_mode(self) -> str:
        """``full_load`` or ``isolated``: ``afet_profile`` with ``auto`` resolved by the device."""
        mode = self.settings.afet_profile
        if mode == "auto":
            mode = "full_load" if str(self.settings.device).startswith("cuda") else "isolated"
        return mode

    def afet_cache_key(self, model_key: str, mode: str) -> str:
        import torch

        from daris_ros.runtime.profiling import cache_key

        device = str(self.settings.device)
        if device.startswith("cuda"):
            device = torch.cuda.get_device_name(torch.device(device))
        b = self.backend
        return cache_key(device, self.settings.backend, f"{b.n_contexts}x{b.n_streams}", self.settings.oversubscription,
                         self.settings.cuda_graphs, model_key, mode)

    def _isolated_afet(self, key: str, x0: Any) -> tuple[float, ...]:
        times = [0.0] * self.models[key].num_stages
        for _ in range(self.settings.profile_runs):
            x = x0
            for i in range(len(times)):
                x, dt = self.backend.run_now(key, i, x)
                times[i] += dt
        return tuple(max(v / self.settings.profile_runs, 1e-6) for v in times)

    def start(self) -> None:
        """Offline phase: build the core (Algorithm 1 runs in its constructor)."""
        specs = [to_task_spec(t, self.afet[self._model_key(t)], self._model_key(t)) for t in self.settings.tasks]
        # GPU backends know the device's SM count and their rounding (8 for green contexts on Hopper)
        n_sm = int(getattr(self.backend, "n_sm_max", 132))
        gran = int(getattr(self.backend, "sm_granularity", 2))
        # response_window bounds the per-task response-time history the stats percentiles are taken over
        self.scheduler = Scheduler(to_scheduler_config(self.settings, n_sm_max=n_sm, sm_granularity=gran), specs,
                                   response_window=RESPONSE_WINDOW,
                                   batch_afet=self._batch_estimate if self.settings.batching else None)
        if supports_recovery(self.backend) and self._watchdog is None:
            b = self.backend
            self._watchdog = Watchdog(
                [(c, s) for c in range(b.n_contexts) for s in range(b.n_streams)], b.worker_alive,
                self._attempts_in_flight, self.on_worker_fault,
                stage_timeout=float(getattr(self.settings, "worker_stage_timeout", 0.0)), clock=self._clock)
            self._watchdog.start()

    def _model_key(self, t: TaskSettings) -> str:
        """What tasks share: one resident model (and, with batching, one batch) per key."""
        fmt = ""
        if t.precision != "fp32" or t.channels_last:
            fmt = f"/{t.precision}{'-cl' if t.channels_last else ''}"
        return f"{t.model}@{t.input_size[0]}x{t.input_size[1]}{fmt}:{t.weights}"

    def _model_input(self, key: str, x: Any) -> Any:
        """A preprocessed fp32 NCHW frame in the dtype and memory format of the model of ``key``."""
        if key not in self._converted:  # fp32 NCHW: nothing to do (the common, hot path)
            return x
        from daris_ros.runtime.models.precision import model_input

        return model_input(self.models[key], x)

    # -- online phase --------------------------------------------------------------------------------
    def release(self, task: str, frame: np.ndarray, *, receive_time: float, meta: Any = None
                ) -> ReleaseDecision:
        """Release one job of ``task`` on ``frame`` (HxWx3 RGB uint8)."""
        import torch

        from daris_ros.runtime.preprocess import preprocess

        assert self.scheduler is not None, "start() first"
        now = self._clock()  # the release instant: preprocessing is part of the job
        t = self.settings.task(task)
        accepts = getattr(self.backend, "accepts_frame", None)
        if (accepts is not None and isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
                and frame.dtype == np.uint8 and accepts(frame.shape[0], frame.shape[1])):
            x = torch.from_numpy(np.ascontiguousarray(frame))  # the worker resizes and normalises it (mps)
        else:
            x = self._model_input(self._model_key(t), preprocess(frame, t.input_size, device=self.backend.device))
        batching = self.settings.batching
        with self._lock:
            decision = self.scheduler.release(task, now)
            if decision.admitted and decision.job is not None:
                self._running[(task, decision.job.job_id)] = _Running(t, receive_time, meta, x,
                                                                      mret=self.scheduler.mret(task))
            dispatches = self.scheduler.dispatch(now)
        if batching:
            self._submit_batches(dispatches, now)
        else:
            self._submit(dispatches, now)
        return decision

    def _submit(self, dispatches: list[Dispatch], now: float) -> None:
        if self._closed:
            return
        for d in dispatches:
            run = self._running[(d.job.task, d.job.job_id)]
            run.context, run.stream = d.context, d.stream
            run.dispatched[d.stage] = now
            self.counters.dispatches += 1
            retries, fault = run.retry.pop(d.stage, (0, None))  # a stage re-queued after its worker died
            if run.error:  # the job failed already: its remaining stages are completed at once, not run
                self._complete_unrun(d, WorkerFault(f"stage not run: {run.error}"))
            else:
                self._submit_attempt(d, run, now, retries, fault)

    def _submit_attempt(self, d: Dispatch, run: _Running, now: float, retries: int = 0,
                        fault: FaultRecord | None = None) -> None:
        token = next(self._tokens)
        self._attempts[(d.context, d.stream)] = _Attempt(d, token, now, retries, fault)  # before submit
        self.backend.submit(d.context, d.stream, self._model_key(run.task), d.stage, run.x,
                            lambda y, dt, err, d=d, token=token: self._stage_done(d, y, dt, err, token))

    def _complete_unrun(self, d: Dispatch, error: WorkerFault, retries: int = 0,
                        fault: FaultRecord | None = None) -> None:
        """Complete ``d`` without running it (its job fails), with its MRET as the execution time."""
        now = self._clock()
        with self._lock:
            known = d.job.task in {t.name for t in self.scheduler.tasks()}
            est = self.scheduler.stage_mrets(d.job.task)[d.stage] if known else 0.0
        token = next(self._tokens)
        self._attempts[(d.context, d.stream)] = _Attempt(d, token, now, retries, fault)
        self._stage_done(d, None, est, error, token)

    def _stage_done(self, d: Dispatch, y: Any, exec_time: float, error: BaseException | None,
                    token: int | None = None) -> None:
        key = (d.job.task, d.job.job_id)
        now = self._clock()
        if self._closed:
            return
        with self._lock:
            att = self._attempts.get((d.context, d.stream))
            if token is not None:
                if att is None or att.token != token:  # a replaced worker's late result
                    self.faults.stale_completions += 1
                    return
                if getattr(error, "in_flight_loss", False):
                    return  # lost with its worker: the watchdog finds the attempt and retries it (on_worker_fault)
                del self._attempts[(d.context, d.stream)]
                if att.fault is not None:
                    att.fault.recovered = now
            run = self._running[key]
            if isinstance(error, WorkerFault):
                run.error = run.error or str(error)  # exec_time is the stage's MRET: the estimate is not skewed
            elif error is not None:
                self.counters.stage_errors += 1
                run.error = run.error or f"{type(error).__name__}: {error}"
                log.error("task %s job %d stage %d failed: %s", d.job.task, d.job.job_id, d.stage, run.error)
            else:
                run.x = y
                run.exec_time += exec_time
            run.stages.append(StageTrace(d.stage, d.context, d.stream, d.level, run.dispatched.get(d.stage, now),
                                         now, exec_time, d.virtual_deadline))
            outcomes = self.scheduler.complete(d, now, exec_time if error is None or isinstance(error, WorkerFault)
                                               else None)
            outcome = outcomes[0] if outcomes else None
            if outcome is not None:
                del self._running[key]
            dispatches = self.scheduler.dispatch(now)
        self._submit(dispatches, now)
        if outcome is not None:
            self._finish(outcome, run)

    def _finish(self, outcome: Any, run: _Running) -> None:
        from daris_ros.runtime.models import postprocess_classification, postprocess_segmentation

        job = outcome.job
        model = self.models[self._model_key(run.task)]
        class_ids: list[int] = []
        scores: list[float] = []
        seg = None
        if not run.error:
            if model.kind == "segmentation":
                seg = postprocess_segmentation(run.x)
            else:
                class_ids, scores = postprocess_classification(run.x, k=self.settings.top_k)
        result = JobResult(
            task=job.task, job_id=job.job_id, priority=run.task.priority, model=run.task.model,
            class_ids=class_ids, scores=scores, segmentation=seg, receive_time=run.receive_time,
            release_time=job.release, start_time=job.start if job.start is not None else job.release,
            finish_time=outcome.finish, deadline=job.abs_deadline, response_time=outcome.response_time,
            exec_time=run.exec_time, met=outcome.met and not run.error, context=run.context,
            stream=run.stream, meta=run.meta, error=run.error, mret=run.mret, stages=run.stages,
        )
        try:
            self._on_result(result)
        except Exception:  # noqa: BLE001 - a failing consumer must not kill a backend worker
            log.exception("result callback failed for %s job %d", job.task, job.job_id)

    # -- introspection and live changes --------------------------------------------------------------
    def locked(self) -> threading.Lock:
        """The lock that guards the core; hold it while reading the scheduler's statistics."""
        return self._lock

    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def update_task(self, task: TaskSettings) -> None:
        """Apply a changed rate/period, deadline or priority of an existing task (jobs already released keep
        theirs). Model, input size and weights cannot change at run time."""
        old = self.settings.task(task.name)
        if self._model_key(old) != self._model_key(task):
            raise ValueError(f"task {task.name}: model, input_size and weights cannot change at run time")
        with self._lock:
            self.scheduler.update_task(task.name, period=task.period, deadline=task.deadline,
                                       priority=Priority.HP if task.priority == "HP" else Priority.LP)
            self._replace_settings(tuple(task if t.name == task.name else t for t in self.settings.tasks))

    def add_task(self, task: TaskSettings) -> None:
        """Add a task at run time: its model is built and profiled if no task uses it yet (this blocks)."""
        key = self._model_key(task)
        new_model = key not in self.models
        if new_model:
            model = self._build_model(task)
            add = getattr(self.backend, "add_model", None)
            if add is None:
                raise ValueError(f"backend {self.backend.name!r} cannot load a new model at run time")
            add(key, model)
            self.models[key] = model
            self.model_bytes[key] = model_bytes(model)
            self._memory = None
        self._replace_settings((*self.settings.tasks, task))
        if new_model and self.settings.batching:
            self._prepare_batching([key])
        self.profile()  # (with batching, also the batch times of a new model)
        with self._lock:
            self.scheduler.add_task(to_task_spec(task, self.afet[key], key))

    def remove_task(self, name: str) -> None:
        """Remove a task; its jobs in flight still finish and are reported."""
        with self._lock:
            self.scheduler.remove_task(name)
            self._replace_settings(tuple(t for t in self.settings.tasks if t.name != name))

    def refresh_unmeasured_afet(self) -> int:
        """Give tasks that never ran the MRET their model's stages have in tasks that did.

        The start-up AFET can be far too pessimistic (profiled alone, or under a CPU/GPU spike); an LP task
        rejected on it never runs, so its own MRET (eq. 1) never replaces it. Tasks sharing a model key
        (model, input size, weights) run the same stages, so the per-stage *median* of their measured MRETs
        is the better estimate: an average full-load time, as AFET is (section IV-A1). (The maximum, used
        before, made every task that had not run yet the most pessimistic of its model: under overload such
        LP tasks never passed eq. 12 again, 13 of 24 in docs/reliability/overload_cpu_10min.json.)
        Returns how many tasks were refreshed. O(tasks); call it at stats time.
        """
        refreshed = 0
        with self._lock:
            sched = self.scheduler
            groups: dict[str, list[str]] = {}
            for t in self.settings.tasks:
                groups.setdefault(self._model_key(t), []).append(t.name)
            for names in groups.values():
                samples: dict[int, list[float]] = {}
                for n in names:
                    for j, (m, ok) in enumerate(zip(sched.stage_mrets(n), sched.measured_stages(n), strict=True)):
                        if ok:
                            samples.setdefault(j, []).append(m)
                if not samples:
                    continue
                measured = {j: statistics.median(v) for j, v in samples.items()}
                for n in names:
                    flags = sched.measured_stages(n)
                    if all(flags):
                        continue
                    current = sched.stage_mrets(n)
                    afet = tuple(measured.get(j, current[j]) for j in range(len(current)))
                    sched.refresh_afet(n, afet)
                    refreshed += 1
        return refreshed

    def _replace_settings(self, tasks: tuple[TaskSettings, ...]) -> None:
        self.settings = dataclasses.replace(self.settings, tasks=tasks)

    # -- worker faults (detected by daris_ros.runtime.watchdog) ------------------------------------------
    def _attempts_in_flight(self) -> list[tuple[int, int, int, float]]:
        return [(c, s, a.token, a.submitted) for (c, s), a in list(self._attempts.items())]

    def on_worker_fault(self, context: int, stream: int, reason: str, token: int | None = None,
                        detected: float | None = None) -> FaultRecord | None:
        """Replace the worker of (context, stream) and retry its stage in flight once (a second loss fails
        the job: its result carries the error and is not met). Idempotent: returns None when the fault
        was handled already (the worker is alive again, or the hung stage finished meanwhile).

        When the worker was its context's only one (:meth:`_context_scoped`), every stage in flight in that
        context is lost with it: they are re-queued (Scheduler.abort) and the context is down in the core
        (Scheduler.context_down) until the replacement serves, so they and the context's tasks run on the
        other contexts meanwhile. With batching see :meth:`_on_batch_worker_fault`."""
        if self.settings.batching:
            return self._on_batch_worker_fault(context, stream, reason, token, detected)
        # ``detected``: the watchdog's poll that found it. Another worker's fault may hold the lock for seconds (its
        # replacement starting): that is handling delay, not detection delay
        detected = self._clock() if detected is None else detected
        with self._fault_lock:
            if self._closed:
                return None
            scoped = self._context_scoped()
            failed: list[_Attempt] = []
            with self._lock:
                now = self._clock()  # the core's events go forward in time (detected may be seconds old)
                taken = self._take_lost_attempt(context, stream, reason, token, detected)
                if taken is None:
                    return None
                att, rec = taken
                if att is not None:
                    rec.task, rec.job_id, rec.stage = att.d.job.task, att.d.job.job_id, att.d.stage
                dispatches: list[Dispatch] = []
                if scoped:  # the context cannot serve until the replacement does
                    lost = [att] if att is not None else []
                    lost += [self._attempts.pop((context, s)) for s in range(int(getattr(self.backend, "n_streams", 1)))
                             if s != stream and (context, s) in self._attempts]
                    for a in lost:
                        run = self._running.get((a.d.job.task, a.d.job.job_id))
                        if run is None:
                            continue
                        if a.retries < MAX_STAGE_RETRIES:  # queued again: it follows its job to a serving context
                            self.scheduler.abort(a.d, now)
                            run.retry[a.d.stage] = (a.retries + 1, rec)
                            self.faults.stages_retried += 1
                            rec.outcome = "retried"
                        else:
                            failed.append(a)
                    rec.moved = self.scheduler.context_down(context, now)
                    dispatches = self.scheduler.dispatch(now)  # the re-queued and queued stages, elsewhere
                    run_att = None
                else:
                    run_att = self._running.get((att.d.job.task, att.d.job.job_id)) if att is not None else None
            self._submit(dispatches, now)
            for a in failed:
                rec.outcome = rec.outcome or "failed"
                self.faults.jobs_failed += 1
                self._complete_unrun(a.d, WorkerFault(f"WorkerFault: stage {a.d.stage} lost twice (worker c{context} "
                                                      f"{reason})"), a.retries, rec)
            rec.replaced = self._restart_worker(context, stream, att if run_att is not None else None)
            if scoped:
                with self._lock:
                    rec.moved_back = self.scheduler.context_up(context, rec.replaced)
                    dispatches = self.scheduler.dispatch(rec.replaced)
                self._submit(dispatches, rec.replaced)
                if not rec.outcome:
                    rec.recovered, rec.outcome = rec.replaced, "idle"
            elif att is None or run_att is None:
                rec.recovered, rec.outcome = rec.replaced, "idle"
            elif att.retries < MAX_STAGE_RETRIES:
                rec.outcome = "retried"
                self.faults.stages_retried += 1
                self._submit_attempt(att.d, run_att, rec.replaced, att.retries + 1, rec)
            else:
                rec.outcome = "failed"
                self.faults.jobs_failed += 1
                self._complete_unrun(att.d, WorkerFault(f"WorkerFault: stage {att.d.stage} lost twice (worker "
                                                        f"c{context}s{stream} {reason})"), att.retries, rec)
        log.warning("worker c%ds%d %s: replaced in %.1f ms, stage in flight %s%s", context, stream, reason,
                    (rec.replaced - detected) * 1e3, rec.outcome,
                    f"; tasks moved meanwhile: {rec.moved}" if rec.moved else "")
        return rec

    def memory(self, max_age: float = 2.0) -> ContextMemory:
        """Memory per context (the backend's ``memory_by_context``, else the resident model bytes), at
        most ``max_age`` seconds old (asking MPS workers costs a control round trip each)."""
        now = self._clock()
        if self._memory is not None and now - self._memory[0] < max_age:
            return self._memory[1]
        fn = getattr(self.backend, "memory_by_context", None)
        if callable(fn):
            mem = fn()
        else:  # cpu threads: one process, every model once
            mem = ContextMemory((sum(self.model_bytes.values()),) * self.backend.n_contexts, SOURCE_MODELS, True)
        self._memory = (now, mem)
        return mem

    @staticmethod
    def model_label(key: str) -> str:
        """``resnet18@224x224`` from a model key (the weights path left out)."""
        return key.split(":", 1)[0]

    def _context_scoped(self) -> bool:
        """Whether a dead worker takes its whole context down: a worker process per context (``mps``:
        ``worker_scope == "context"``), or one stream per context. The core then moves the context's tasks
        and queued stages to the other contexts until the replacement serves (Scheduler.context_down)."""
        b = self.backend
        return getattr(b, "worker_scope", "stream") == "context" or int(getattr(b, "n_streams", 1)) == 1

    def close(self) -> None:
        """Stop dispatching, then stop the backend (in-flight stages finish and are discarded)."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.stop()
        self.backend.close()


def summarize_afet(afet: Mapping[str, tuple[float, ...]]) -> str:
    return ", ".join(f"{k.split('@')[0]}: " + "/".join(f"{v * 1e3:.1f}" for v in st) + " ms"
                     for k, st in afet.items())
