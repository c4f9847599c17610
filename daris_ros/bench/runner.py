"""One DARIS run: the policy core driven by a lean single-threaded loop over a GPU backend.

The loop releases jobs at their periods (release time = the scheduled instant, so a late loop costs
deadline), asks the core to dispatch, launches stages with the backend's non-blocking ``launch``, polls
the stages' CUDA events and reports completions (with the event-timed execution time) to the core.
One thread, no locks and no thread hand-offs: the scheduler's own CPU cost per job is what the loop
spends, measured with ``time.thread_time`` and split into core (policy) and launch (torch/CUDA) time.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from daris_ros.bench.counts import priority_counts
from daris_ros.bench.workload import BenchTask
from daris_ros.core import Priority, Scheduler, SchedulerConfig


@dataclass(slots=True)
class RunResult:
    seconds: float
    offered_jps: float
    jps: float
    released: dict[str, int]
    admitted: dict[str, int]
    completed: dict[str, int]
    missed: dict[str, int]
    p99_ms: dict[str, float]
    cpu_us_per_job: float
    core_us_per_job: float
    launch_us_per_job: float
    migrations: int
    extra: dict[str, Any] = field(default_factory=dict)

    def dmr(self, prio: str) -> float:
        """Deadline miss rate: missed / finished admitted jobs (the paper's definition)."""
        return self.missed[prio] / self.completed[prio] if self.completed[prio] else 0.0


def run_daris(backend: Any, config: SchedulerConfig, tasks: list[BenchTask], afet: dict[str, tuple[float, ...]],
              *, seconds: float = 3.0, drain: float = 1.0, mret_source: str = "events",
              min_poll: float = 50e-6) -> RunResult:
    """Run ``tasks`` for ``seconds`` (plus up to ``drain`` to finish admitted jobs) and collect the metrics.

    ``mret_source``: what the core's MRET gets as a stage's execution time: ``"events"`` (CUDA-event
    GPU time) or ``"host"`` (launch to observed completion on the host: includes the time the stage
    waited for this loop, which is what bounds throughput when the host, not the GPU, is saturated).
    ``min_poll``: a stage is not polled before this long after its launch (no stage is that short under
    load; a float comparison is much cheaper than a CUDA event query).
    """
    host_time = mret_source == "host"
    specs = [t.spec(afet[t.model]) for t in tasks]
    core = Scheduler(config, specs)
    inputs = {k: backend.example_inputs(backend.models[k])[0] for k in backend.models}
    torch.cuda.synchronize(backend.torch_device)
    model_of = {t.name: t.model for t in tasks}
    perf = time.perf_counter
    t0 = perf() + 0.05
    heap = [(t0 + t.phase, i) for i, t in enumerate(tasks)]
    heapq.heapify(heap)
    periods = [t.period for t in tasks]
    names = [t.name for t in tasks]
    x_of: dict[tuple[str, int], Any] = {}
    pending: list[tuple[Any, Any, float]] = []
    t_end = t0 + seconds
    core_cpu = launch_cpu = 0.0
    clock = time.thread_time
    cpu0 = clock()
    launch_fn, finish_fn = backend.launch, backend.finish
    while True:
        now = perf()
        if now >= t_end and (not pending or now >= t_end + drain):
            break
        worked = False
        c0 = clock()
        while heap[0][0] <= now and now < t_end:
            t_rel, i = heap[0]
            heapq.heapreplace(heap, (t_rel + periods[i], i))
            dec = core.release(names[i], t_rel)
            if dec.admitted:
                x_of[(names[i], dec.job.job_id)] = inputs[model_of[names[i]]]
            worked = True
        if pending:
            still = []
            for item in pending:
                launch, d, t_launch = item
                if now - t_launch < min_poll or not launch.end.query():
                    still.append(item)
                    continue
                dt = finish_fn(launch)
                if host_time:
                    dt = now - t_launch
                key = (d.job.task, d.job.job_id)
                if not core.complete(d, now, dt):  # [] until the job's last stage
                    x_of[key] = launch.output
                else:
                    del x_of[key]
                worked = True
            pending = still
        if worked:
            ds = core.dispatch(now)
            c1 = clock()
            core_cpu += c1 - c0
            for d in ds:
                job = d.job
                pending.append((launch_fn(d.context, d.stream, model_of[job.task], d.stage,
                                          x_of[(job.task, job.job_id)], not host_time), d, now))
            launch_cpu += clock() - c1
    cpu = clock() - cpu0
    torch.cuda.synchronize(backend.torch_device)
    torch.cuda.set_stream(torch.cuda.default_stream(backend.torch_device))
    out, p99 = priority_counts(core)
    done = sum(out["completed"].values())
    jobs = max(done, 1)
    migrations = sum(ts.migrations for ts in core.task_stats().values())
    offered = sum(1.0 / t.period for t in tasks)
    return RunResult(seconds, offered, done / seconds, out["released"], out["admitted"], out["completed"],
                     out["missed"], p99, cpu / jobs * 1e6, core_cpu / jobs * 1e6, launch_cpu / jobs * 1e6,
                     migrations, admission_view(core, tasks, seconds))


def admission_view(core: Scheduler, tasks: list[BenchTask], seconds: float) -> dict[str, float]:
    """What eq. 12 saw at the end of a run, next to what the LP jobs met (read after the run, off the loop).

    ``mret_ms_hp`` / ``mret_ms_lp``: mean task MRET (eq. 2) per class. ``lp_in_system``: LP jobs in the system
    on average (Little's law: LP completions per second x mean LP response). ``lp_active_cap``: how many LP tasks
    can be active at once before eq. 12 rejects, sum over contexts of (N_s - U^h_k) / u_LP with
    u_LP = mean LP MRET / period: eq. 12 bounds the LP jobs in the system by this, whatever they really cost.
    """
    stats = core.priority_stats()
    mrets: dict[Priority, list[float]] = {p: [] for p in Priority}
    for t in tasks:
        mrets[t.priority].append(core.mret(t.name))
    mean = {p: sum(v) / len(v) if v else 0.0 for p, v in mrets.items()}
    lp = stats[Priority.LP]
    rts = list(lp.response_times)
    lp_mean = sum(rts) / len(rts) if rts else 0.0
    lp_periods = [t.period for t in tasks if t.priority is Priority.LP]
    cap = 0.0
    if lp_periods and mean[Priority.LP] > 0.0:
        u_lp = mean[Priority.LP] / (sum(lp_periods) / len(lp_periods))
        layout = core.layout
        cap = sum(max(0.0, layout.n_streams - core.utilization(k).hp) for k in range(layout.n_contexts)) / u_lp
    return {"mret_ms_hp": mean[Priority.HP] * 1e3, "mret_ms_lp": mean[Priority.LP] * 1e3,
            "lp_mean_ms": lp_mean * 1e3, "lp_in_system": lp.completed / seconds * lp_mean, "lp_active_cap": cap}
