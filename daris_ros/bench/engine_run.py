"""One DARIS run of ``daris-bench``: the scheduler node's engine (:class:`~daris_ros.runtime.engine.Engine`) fed by
synthetic cameras. There is no other execution loop in the bench: what it measures is what the node runs.

Each task's camera always has a frame (:meth:`Engine.set_frame`, a sticky frame every release takes again): a
uint8 HxWx3 frame at the model's input size. On an in-process GPU backend (``str``, ``green``) the frame already
sits on the GPU, so that decoding and the host-to-device copy of real cameras are not what the bench measures; the
engine still takes the frame at every release, preprocesses each release burst as one batch (uint8 to normalised
float on the GPU) and post-processes every result, as in the node. On ``cpu`` and on ``mps`` (whose workers
preprocess raw frames, ``mps_frame_pixels``) the frame is a host array.

The engine releases every task from its own clock. A run: build the engine (models, AFET profiling, with batching
the batch times), give every task its frame, start the loop with the first releases at ``origin``, let it run for
``seconds``, stop the cameras (from the loop thread, between two events: no release after it finds a frame), let
every admitted job finish, and read the engine's snapshot. The figures:

* **JPS**: results whose job finished inside the steady part of the window, ``[origin + warmup, origin +
  seconds]``, over its length (the first ``warmup`` seconds fill the pipeline); ``jps_window`` counts the whole
  window.
* **DMR** per priority: missed / finished admitted jobs (the paper's definition), from the results (a result with
  an error counts as missed); **p99** of their response times.
* **released / admitted / migrations**: the policy core's counters in the snapshot.
* **host_us_per_release**: the loop thread's CPU time per release (``snapshot().loop``); ``cpu_us_per_job`` the
  same per finished job, ``release_us_per_job`` its release part (take frames, decode, admission, preprocessing).

Python's garbage collector is paused during the window (as the bench always did: a collection in the loop thread
is a burst of late releases), and collected before it.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daris_ros.bench.workload import BenchTask
from daris_ros.core import BatchStats, percentile
from daris_ros.runtime.backends.base import HostFrames, SmCounts
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import (
    SCHEDULER_FIELDS,
    ConfigError,
    SchedulerSettings,
    TaskSettings,
    load_parameter_file,
    settings_from_mapping,
    validate_settings,
)

log = logging.getLogger("daris_ros.bench")

PRIORITIES = ("HP", "LP")


@dataclass(slots=True)
class BenchRun:
    """What one engine run measured (see the module docstring)."""

    seconds: float
    warmup: float
    offered_jps: float
    jps: float
    jps_window: float
    released: dict[str, int]
    admitted: dict[str, int]
    completed: dict[str, int]
    missed: dict[str, int]
    p99_ms: dict[str, float]
    errors: int
    finished_after_window: int  # admitted jobs that finished after the window closed (drained)
    undrained: int  # admitted jobs still in flight when the drain gave up (0 normally)
    migrations: int
    host_us_per_release: float
    cpu_us_per_job: float
    release_us_per_job: float
    loop_busy: float  # the loop thread's busy CPU time over the run's wall time
    releases_skipped: int  # release instants the engine passed over because it ran late
    setup_s: float  # engine construction, model loading (graph capture), profiling
    afet: dict[str, tuple[float, ...]]
    sm_counts: list[int]
    batch: BatchStats
    snapshot_completed: dict[str, int] = field(default_factory=dict)  # the core's own count, for cross-checks
    extra: dict[str, Any] = field(default_factory=dict)

    def dmr(self, prio: str) -> float:
        """Deadline miss rate: missed / finished admitted jobs."""
        return self.missed[prio] / self.completed[prio] if self.completed[prio] else 0.0

    @property
    def lp_admit_rate(self) -> float:
        return self.admitted["LP"] / self.released["LP"] if self.released["LP"] else 0.0


@functools.cache
def model_input_size(model: str) -> tuple[int, int]:
    """A built-in model's own input size (224x224; InceptionV3 299x299), the frame size of its tasks."""
    from daris_ros.runtime.models import build_staged_model

    h, w = build_staged_model(model).input_size
    return int(h), int(w)


def task_settings(tasks: Sequence[BenchTask], input_size: Callable[[str], tuple[int, int]], *,
                  precision: str = "fp32", channels_last: bool = False) -> tuple[TaskSettings, ...]:
    """The bench's task set as the node's tasks: same names, periods (deadline = period), priorities and models,
    the model's input size, each on a topic of its own (nothing subscribes: the bench sets frames directly)."""
    return tuple(TaskSettings(name=t.name, topic=f"/bench/{t.name}", output_topic=f"/bench/{t.name}/result",
                              priority=t.priority.name, period=t.period,
                              deadline=t.period, model=t.model, input_size=input_size(t.model), precision=precision,
                              channels_last=channels_last) for t in tasks)


def bench_settings(params: Mapping[str, Any], tasks: Sequence[BenchTask],
                   input_size: Callable[[str], tuple[int, int]], *, precision: str = "fp32",
                   channels_last: bool = False) -> SchedulerSettings:
    """Validated :class:`SchedulerSettings` (the node's parameters, ``params``) for ``tasks``; a
    :class:`~daris_ros.settings.ConfigError` names a configuration the node would refuse too."""
    ts = task_settings(tasks, input_size, precision=precision, channels_last=channels_last)
    params = dict(params)
    if params.get("backend") == "mps" and not params.get("mps_frame_pixels"):
        params["mps_frame_pixels"] = max(t.input_size[0] * t.input_size[1] for t in ts)  # workers preprocess
    return validate_settings(params, ts)


def node_scheduler_parameters(path: str | Path) -> dict[str, Any]:
    """The scheduler-level parameters (``policy``, ``n_contexts``, ``skip_late``, ...) of the node's parameter file
    ``path`` (the ``ros__parameters`` of ``daris_scheduler`` or ``/**``), after the whole file, tasks included, passed
    the node's own validation (:func:`~daris_ros.settings.settings_from_mapping`, and every task's model is known).
    A :class:`~daris_ros.settings.ConfigError` names the parameter the node would refuse."""
    from daris_ros.runtime.models import BUILTIN_MODELS, is_known_model

    params = load_parameter_file(path)
    node_settings = settings_from_mapping(params)
    for t in node_settings.tasks:
        if not is_known_model(t.model):
            raise ConfigError(f"tasks.{t.name}.model", f"unknown model {t.model!r}; built-in: "
                                                       f"{', '.join(BUILTIN_MODELS)}, or a torchvision model name")
    return {name: value for name, value in params.items() if name in SCHEDULER_FIELDS and name != "task_names"}


def synthetic_frames(engine: Engine, seed: int = 0) -> dict[str, Any]:
    """A random uint8 HxWx3 frame per task at its model's input size (one per size, shared by its tasks): on the
    backend's GPU for an in-process GPU backend, a host array otherwise."""
    backend = engine.backend
    device = str(backend.device)
    on_gpu = device.startswith("cuda") and not isinstance(backend, HostFrames)
    rng = np.random.default_rng(seed)
    by_size: dict[tuple[int, int], Any] = {}
    out: dict[str, Any] = {}
    for t in engine.settings.tasks:
        frame = by_size.get(t.input_size)
        if frame is None:
            frame = rng.integers(0, 256, (t.input_size[0], t.input_size[1], 3), dtype=np.uint8)
            if on_gpu:
                import torch

                frame = torch.from_numpy(frame).to(device)
            by_size[t.input_size] = frame
        out[t.name] = frame
    if on_gpu:
        import torch

        torch.cuda.synchronize(device)
    return out


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def run_engine(settings: SchedulerSettings, *, seconds: float, warmup: float = 0.5,
               phases: Mapping[str, float] | None = None, lead: float = 0.3, drain_timeout: float = 30.0,
               prepare: Callable[[Engine], None] | None = None, pause_gc: bool = True) -> BenchRun:
    """Run ``settings`` (tasks included) on a fresh engine for ``seconds`` of releases and measure it.

    ``phases`` (task -> seconds after ``origin``): each task's first release (``None``: every task at ``origin``,
    a camera rig). ``lead``: seconds between starting the loop and ``origin``. ``prepare(engine)`` runs after
    profiling and before the loop starts (it may replace ``engine.settings``, e.g. ``batch_min_size``).
    Raises what the engine raises (a backend that cannot start, a model that does not fit...)."""
    if not 0.0 <= warmup < seconds:
        raise ValueError(f"warmup ({warmup:g} s) must be within [0, seconds = {seconds:g} s)")
    records: list[tuple[bool, float, float, bool, bool]] = []  # HP, finish, response, met, error
    add = records.append

    def on_result(r: JobResult) -> None:  # the loop thread: keep it short
        add((r.priority == "HP", r.finish_time, r.response_time, r.met, bool(r.error)))

    t_setup = time.perf_counter()
    engine = Engine(settings, on_result=on_result)
    gc_was_enabled = gc.isenabled()
    try:
        engine.load_models()
        engine.profile()
        if prepare is not None:
            prepare(engine)
        frames = synthetic_frames(engine)
        setup = time.perf_counter() - t_setup
        for name, frame in frames.items():
            engine.set_frame(name, frame)
        gc.collect()
        if pause_gc:
            gc.disable()
        origin = time.monotonic() + lead
        engine.start(origin=origin, phases=phases)
        t_end = origin + seconds
        _sleep_until(t_end)

        def stop(_core: Any) -> None:  # in the loop thread: no release finds a frame after this
            for name in frames:
                engine.inbox.clear(name)
        engine.call(stop)
        undrained = 0
        try:
            drain(engine, drain_timeout)
        except TimeoutError:
            undrained = engine.in_flight()
            log.error("%d admitted jobs still in flight %.0f s after the window", undrained, drain_timeout)
        snap = engine.snapshot()
        wall = max(snap.time - origin, 1e-9)
        backend = engine.backend
        sms = backend.sm_counts() if isinstance(backend, SmCounts) else [backend.usable_sms] * backend.n_contexts
        afet = {Engine.model_label(k): v for k, v in engine.afet.items()}
    finally:
        if gc_was_enabled:
            gc.enable()
        engine.close()
    return _measure(settings, records, snap, origin, seconds, warmup, wall, undrained, setup, afet, sms)


def _measure(settings: SchedulerSettings, records: list[tuple[bool, float, float, bool, bool]], snap: Any,
             origin: float, seconds: float, warmup: float, wall: float, undrained: int, setup: float,
             afet: dict[str, tuple[float, ...]], sms: list[int]) -> BenchRun:
    t_steady, t_end = origin + warmup, origin + seconds
    steady = sum(1 for r in records if t_steady <= r[1] <= t_end)
    window = sum(1 for r in records if origin <= r[1] <= t_end)
    completed = {p: 0 for p in PRIORITIES}
    missed = {p: 0 for p in PRIORITIES}
    responses: dict[str, list[float]] = {p: [] for p in PRIORITIES}
    for hp, _finish, response, met, _error in records:
        p = "HP" if hp else "LP"
        completed[p] += 1
        missed[p] += not met
        responses[p].append(response)
    prio = {p.name: s for p, s in snap.priorities.items()}
    loop = snap.loop
    done = max(len(records), 1)
    skipped = sum(c.releases_skipped for c, _pending in snap.intake.values())
    return BenchRun(
        seconds=seconds, warmup=warmup, offered_jps=sum(1.0 / t.period for t in settings.tasks),
        jps=steady / (seconds - warmup), jps_window=window / seconds,
        released={p: prio[p].released for p in PRIORITIES}, admitted={p: prio[p].admitted for p in PRIORITIES},
        completed=completed, missed=missed,
        p99_ms={p: percentile(v, 99) * 1e3 if v else 0.0 for p, v in responses.items()},
        errors=sum(1 for r in records if r[4]), finished_after_window=sum(1 for r in records if r[1] > t_end),
        undrained=undrained, migrations=sum(prio[p].migrations for p in PRIORITIES),
        host_us_per_release=loop.host_us_per_release, cpu_us_per_job=loop.busy_cpu / done * 1e6,
        release_us_per_job=loop.release_cpu / done * 1e6, loop_busy=loop.busy_cpu / wall,
        releases_skipped=skipped, setup_s=setup, afet=afet, sm_counts=list(sms), batch=snap.batch,
        snapshot_completed={p: prio[p].completed for p in PRIORITIES},
        extra={"releases": loop.releases, "loop_iterations": loop.iterations,
               "dispatches": snap.counters.dispatches if snap.counters is not None else 0})


def describe(run: BenchRun) -> str:
    """One log line of a run's figures."""
    return (f"{run.jps:,.0f} JPS (window {run.jps_window:,.0f}, offered {run.offered_jps:,.0f}), HP DMR "
            f"{run.dmr('HP'):.4f}, LP DMR {run.dmr('LP'):.4f}, LP admitted {run.lp_admit_rate:.2f}, host "
            f"{run.host_us_per_release:.1f} us/release ({run.cpu_us_per_job:.1f} us/job), loop busy "
            f"{run.loop_busy:.2f}, mean batch {run.batch.mean_batch:.1f}, releases skipped {run.releases_skipped}"
            + (f", {run.errors} errors" if run.errors else "") + (f", {run.undrained} undrained" if run.undrained
                                                                   else ""))


__all__ = ["BenchRun", "bench_settings", "describe", "model_input_size", "node_scheduler_parameters", "run_engine",
           "synthetic_frames", "task_settings"]
