"""One DARIS run on the ``mps`` backend: the policy core in this process, stages in MPS worker processes.

The same loop as :func:`daris_ros.bench.runner.run_daris` (releases at their scheduled instants, the core
decides every dispatch), but a stage launch is a request written to the context's worker, and the loop
blocks on the workers' wake-up pipes (``MpsBackend.collect(timeout)``) instead of spinning on CUDA events:
this process's CPU time is its real work per job. The workers' CPU time (they spin while their stages run)
is reported separately, as is the per-stage round trip (request written -> completion read) minus the
stage's GPU time.

``frames='shm'``: every job's input frame (a host float32 tensor, as the engine's host preprocessing
gives) is copied into a shared-memory slot and from there to the GPU by the worker: the transfer is in the
measured path. ``frames='resident'``: the worker's own example input (no transfer), like the in-process
runs, whose input already sits on the GPU.
"""

from __future__ import annotations

import heapq
import statistics
import time
from typing import Any

import torch

from daris_ros.bench.counts import priority_counts
from daris_ros.bench.runner import RunResult
from daris_ros.bench.workload import BenchTask
from daris_ros.core import Priority, Scheduler, SchedulerConfig, percentile


def run_daris_mps(backend: Any, config: SchedulerConfig, tasks: list[BenchTask],
                  afet: dict[str, tuple[float, ...]], *, seconds: float = 3.0, drain: float = 1.0,
                  mret_source: str = "events", frames: str = "shm", max_wait: float = 0.002) -> RunResult:
    from daris_ros.runtime.backends.mps import EXAMPLE_INPUT

    host_time = mret_source == "host"
    specs = [t.spec(afet[t.model]) for t in tasks]
    core = Scheduler(config, specs)
    inputs: dict[str, Any] = {}
    for k, m in backend.models.items():
        h, w = m.input_size
        inputs[k] = torch.randn(1, 3, h, w) if frames == "shm" else EXAMPLE_INPUT
    model_of = {t.name: t.model for t in tasks}
    perf = time.perf_counter
    t0 = perf() + 0.05
    heap = [(t0 + t.phase, i) for i, t in enumerate(tasks)]
    heapq.heapify(heap)
    periods = [t.period for t in tasks]
    names = [t.name for t in tasks]
    x_of: dict[tuple[str, int], Any] = {}
    pending: dict[int, tuple[Any, float]] = {}
    t_end = t0 + seconds
    core_cpu = launch_cpu = 0.0
    clock = time.thread_time
    errors = 0
    rt: list[float] = []  # per-stage round trip minus GPU time (us)
    lat_req: list[float] = []
    lat_done: list[float] = []
    wcpu0 = backend.worker_cpu_seconds()
    cpu0 = clock()
    send, collect = backend.send, backend.collect
    wait = 0.0
    while True:
        comps = collect(wait)
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
        for c in comps:
            if c.token not in pending:  # left over from an earlier run on the same workers
                continue
            d, t_launch = pending.pop(c.token)
            key = (d.job.task, d.job.job_id)
            if c.error is not None:
                errors += 1
                core.complete(d, now, None)
                x_of.pop(key, None)
            else:
                dt = now - t_launch if host_time else c.exec_time
                if not core.complete(d, now, dt):  # [] until the job's last stage
                    x_of[key] = c.output
                else:
                    del x_of[key]
                if len(rt) < 200_000:
                    rt.append((c.t_recv - c.t_submit) * 1e-3 - c.exec_time * 1e6)
                    lat_req.append((c.t_pick - c.t_submit) * 1e-3)
                    lat_done.append((c.t_recv - c.t_done) * 1e-3)
            worked = True
        if worked:
            ds = core.dispatch(now)
            c1 = clock()
            core_cpu += c1 - c0
            for d in ds:
                job = d.job
                token = send(d.context, d.stream, model_of[job.task], d.stage, x_of[(job.task, job.job_id)])
                pending[token] = (d, now)
            launch_cpu += clock() - c1
            wait = 0.0
        else:
            nxt = heap[0][0] - perf() if now < t_end else max_wait
            wait = min(max(nxt, 0.0), max_wait)
    cpu = clock() - cpu0
    wcpu = backend.worker_cpu_seconds() - wcpu0
    out, p99 = priority_counts(core)
    done = sum(out["completed"].values())
    jobs = max(done, 1)
    migrations = sum(ts.migrations for ts in core.task_stats().values())
    offered = sum(1.0 / t.period for t in tasks)
    extra = {"worker_cpu_us_per_job": wcpu / jobs * 1e6, "stage_errors": errors, "frames": frames,
             "rt_overhead_us_p50": statistics.median(rt) if rt else 0.0,
             "rt_overhead_us_p99": percentile(rt, 99) if rt else 0.0,
             "req_latency_us_p50": statistics.median(lat_req) if lat_req else 0.0,
             "done_latency_us_p50": statistics.median(lat_done) if lat_done else 0.0}
    return RunResult(seconds, offered, done / seconds, out["released"], out["admitted"], out["completed"],
                     out["missed"], p99, cpu / jobs * 1e6, core_cpu / jobs * 1e6, launch_cpu / jobs * 1e6,
                     migrations, extra)


def run_daris_mps_local(backend: Any, config: SchedulerConfig, tasks: list[BenchTask],
                        afet: dict[str, tuple[float, ...]], *, seconds: float = 3.0, drain: float = 1.0,
                        mret_source: str = "events", frames: str = "shm", max_wait: float = 0.002) -> RunResult:
    """The worker-side mode: admission and migration here (:class:`~daris_ros.bench.central.CentralAdmission`),
    each context's stage queue in its worker (``MpsBackend.send_job``): one request and one completion per
    job, no message between the stages of a job."""
    from daris_ros.bench.central import CentralAdmission
    from daris_ros.runtime.backends.mps import EXAMPLE_INPUT
    from daris_ros.runtime.backends.mps_protocol import OUT_DISCARD, OUT_SLOT

    host_time = mret_source == "host"
    central = CentralAdmission(config, [t.spec(afet[t.model]) for t in tasks])
    flags = int(config.no_last) | int(config.no_prior) << 1 | int(config.no_fixed) << 2
    inputs: dict[str, Any] = {}
    for k, m in backend.models.items():
        h, w = m.input_size
        inputs[k] = torch.randn(1, 3, h, w) if frames == "shm" else EXAMPLE_INPUT
    out_kind = OUT_SLOT if frames == "shm" else OUT_DISCARD
    model_of = {t.name: t.model for t in tasks}
    perf = time.perf_counter
    t0 = perf() + 0.05
    heap = [(t0 + t.phase, i) for i, t in enumerate(tasks)]
    heapq.heapify(heap)
    periods = [t.period for t in tasks]
    names = [t.name for t in tasks]
    pending: dict[int, Any] = {}
    t_end = t0 + seconds
    core_cpu = launch_cpu = 0.0
    clock = time.thread_time
    errors = 0
    lat_req: list[float] = []
    lat_done: list[float] = []
    wcpu0 = backend.worker_cpu_seconds()
    cpu0 = clock()
    send_job, collect = backend.send_job, backend.collect
    wait = 0.0
    while True:
        comps = collect(wait)
        now = perf()
        if now >= t_end and (not pending or now >= t_end + drain):
            break
        worked = False
        c0 = clock()
        sends = []
        while heap[0][0] <= now and now < t_end:
            t_rel, i = heap[0]
            heapq.heapreplace(heap, (t_rel + periods[i], i))
            job = central.release(names[i], t_rel)
            if job is not None:
                sends.append(job)
            worked = True
        for c in comps:
            job = pending.pop(c.token, None)
            if job is None:  # left over from an earlier run on the same workers
                continue
            if c.error is not None:
                errors += 1
                central.complete(job, now, None)
            else:
                central.complete(job, now, c.stage_times)
                if len(lat_req) < 100_000:
                    lat_req.append((c.t_pick - c.t_submit) * 1e-3)
                    lat_done.append((c.t_recv - c.t_done) * 1e-3)
            worked = True
        c1 = clock()
        core_cpu += c1 - c0
        for job in sends:
            model = model_of[job.task]
            token = send_job(job.context, model, inputs[model], priority=int(job.priority), release=job.release,
                             deadlines=job.deadlines, host_time=host_time, flags=flags, out_kind=out_kind)
            pending[token] = job
        launch_cpu += clock() - c1
        if worked:
            wait = 0.0
        else:
            nxt = heap[0][0] - perf() if now < t_end else max_wait
            wait = min(max(nxt, 0.0), max_wait)
    cpu = clock() - cpu0
    wcpu = backend.worker_cpu_seconds() - wcpu0
    out: dict[str, dict[str, int]] = {"released": {}, "admitted": {}, "completed": {}, "missed": {}}
    p99: dict[str, float] = {}
    for p in Priority:
        s = central.priority_stats[p]
        out["released"][p.name] = s.released
        out["admitted"][p.name] = s.admitted
        out["completed"][p.name] = s.completed
        out["missed"][p.name] = s.missed
        rts = list(s.response_times)
        p99[p.name] = percentile(rts, 99) * 1e3 if rts else 0.0
    done = sum(out["completed"].values())
    jobs = max(done, 1)
    migrations = sum(ts.migrations for ts in central.task_stats.values())
    offered = sum(1.0 / t.period for t in tasks)
    extra = {"worker_cpu_us_per_job": wcpu / jobs * 1e6, "stage_errors": errors, "frames": frames,
             "mode": "worker-side stage queues",
             "req_latency_us_p50": statistics.median(lat_req) if lat_req else 0.0,
             "done_latency_us_p50": statistics.median(lat_done) if lat_done else 0.0}
    return RunResult(seconds, offered, done / seconds, out["released"], out["admitted"], out["completed"],
                     out["missed"], p99, cpu / jobs * 1e6, core_cpu / jobs * 1e6, launch_cpu / jobs * 1e6,
                     migrations, extra)
