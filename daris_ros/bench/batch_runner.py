"""One DARIS run with cross-task stage batching (or without, for the before/after pairs), with a breakdown of
where the time goes: GPU busy fraction, CPU time per job (policy core vs launches), queueing delay.

The loop is :func:`daris_ros.bench.runner.run_daris`'s: one thread releases jobs at their periods (release
time = the scheduled instant), asks the core to dispatch, launches on the backend without blocking, polls
CUDA events and reports completions through the core's one API (``dispatch``/``complete``). With batching it
launches with ``launch_batch``: a job's stage input is ``(source, row)``, its frame (row 0) or row i of the output
of the batch that ran its previous stage, so a stage's output is never split per job.

GPU busy: every launch is timed by two CUDA events; their offsets from a reference event give the
intervals during which some stream ran a stage; busy = length of their union within the release window
/ the window. Queueing delay: time from a stage becoming ready (release, or the previous stage's observed
completion) to its dispatch, mean per priority.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from daris_ros.bench.counts import priority_counts
from daris_ros.bench.workload import BenchTask
from daris_ros.core import Scheduler, SchedulerConfig


@dataclass(slots=True)
class BatchRunResult:
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
    gpu_busy: float
    queue_delay_ms: dict[str, float]
    loop_busy: float = 0.0  # share of the loop's wall time spent working (not waiting for the GPU)
    completed_after_window: int = 0
    mean_batch: float = 1.0
    padding: float = 0.0
    batches: int = 0
    by_size: dict[int, int] = field(default_factory=dict)
    batch_times_ms: dict[str, float] = field(default_factory=dict)
    jps_window: float = 0.0  # jobs finished in the whole release window / its length (start-up fill included)
    warmup: float = 0.0

    def dmr(self, prio: str) -> float:
        return self.missed[prio] / self.completed[prio] if self.completed[prio] else 0.0


def busy_fraction(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Length of the union of ``intervals`` clipped to [t0, t1], over t1 - t0."""
    if t1 <= t0:
        return 0.0
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        s, e = max(s, t0), min(e, t1)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s  # type: ignore[operator]
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s  # type: ignore[operator]
    return total / (t1 - t0)


def run_bench(backend: Any, config: SchedulerConfig, tasks: list[BenchTask], afet: dict[str, tuple[float, ...]],
              frames: dict[str, torch.Tensor], *, batch_afet: Callable[[str, int, int], float | None] | None = None,
              seconds: float = 3.0, drain: float = 1.0, mret_source: str = "host",
              min_poll: float = 50e-6, warmup: float = 0.0, release_chunk: int = 0) -> BatchRunResult:
    """Run ``tasks`` for ``seconds`` (+ up to ``drain``) on ``backend``; batched when ``config.batching`` is set.

    ``frames[model]`` is the (preprocessed, on-GPU) frame every job of that model starts from.
    ``mret_source``: ``"host"`` (launch to observed completion) or ``"events"`` (CUDA-event GPU time).
    ``warmup``: JPS is the steady-state completion rate, jobs finished in ``[t0 + warmup, t0 + seconds]`` over
    ``seconds - warmup`` (the first ``warmup`` seconds fill the pipeline: no job finishes in its first
    response time); ``jps_window`` counts the whole window.
    ``release_chunk``: at most this many releases per turn of the loop before it looks at completions again
    (a release keeps its scheduled time; a burst of releases then cannot hold a finished stream idle); 0: all
    that are due.
    """
    batched = config.batching is not None
    host_time = mret_source == "host"
    if host_time and config.launch_ahead:
        raise ValueError("launch-ahead needs --mret-source events: a dispatch queued behind another on its stream "
                         "starts when that one ends, so launch-to-completion is not its run time")
    specs = [t.spec(afet[t.model]) for t in tasks]
    core = Scheduler(config, specs, batch_afet=batch_afet)
    dev = backend.torch_device
    torch.cuda.synchronize(dev)
    model_of = {t.name: t.model for t in tasks}
    prio_of = {t.name: t.priority.name for t in tasks}
    perf = time.perf_counter
    ref = torch.cuda.Event(enable_timing=True)
    periods = [t.period for t in tasks]
    names = [t.name for t in tasks]
    src: dict[Any, Any] = {}  # job -> its next stage's input: (source, row) batched, the tensor otherwise
    ready_at: dict[Any, float] = {}  # unbatched: when the job's next stage became ready
    qsum = {"HP": 0.0, "LP": 0.0}
    qn = {"HP": 0, "LP": 0}
    intervals: list[tuple[float, float]] = []
    pending: list[tuple[Any, Any, float]] = []
    core_cpu = launch_cpu = poll_cpu = 0.0
    in_window = in_steady = 0
    release_chunk = release_chunk if release_chunk > 0 else 1 << 62
    clock = time.thread_time
    launch_batch, launch_one, finish_fn = getattr(backend, "launch_batch", None), backend.launch, backend.finish
    release, dispatch, complete, next_wakeup = core.release, core.dispatch, core.complete, core.next_wakeup
    gc.collect()
    gc.disable()  # no collector pauses inside the timed loop (a 50 ms pause is a burst of late releases)
    t0 = perf() + 0.05  # after the collection: the first releases are not already late
    heap = [(t0 + t.phase, i) for i, t in enumerate(tasks)]
    heapq.heapify(heap)
    t_end = t0 + seconds
    t_steady = t0 + min(max(warmup, 0.0), 0.5 * seconds)
    while perf() < t0 - 0.01:
        pass
    ref.record(torch.cuda.current_stream(dev))
    t_ref = perf()
    while True:
        now = perf()
        if now >= t_end and (not pending or now >= t_end + drain):
            break
        worked = False
        c0 = clock()
        n_rel = 0
        while heap[0][0] <= now and now < t_end and n_rel < release_chunk:
            n_rel += 1
            t_rel, i = heap[0]
            heapq.heapreplace(heap, (t_rel + periods[i], i))
            dec = release(names[i], t_rel)
            if dec.admitted:
                job = dec.job
                if batched:
                    src[job] = (frames[model_of[names[i]]], 0)
                else:
                    src[job] = frames[model_of[names[i]]]
                    ready_at[job] = t_rel
            worked = True
        if pending:
            still = []
            for item in pending:
                launch, d, t_launch = item
                if now - t_launch < min_poll or not launch.end.query():
                    still.append(item)
                    continue
                intervals.append((ref.elapsed_time(launch.start), ref.elapsed_time(launch.end)))
                dt = finish_fn(launch)
                if host_time:
                    dt = now - t_launch
                if batched:
                    outs = complete(d, now, dt)
                    if now <= t_end:
                        in_window += len(outs)
                        if now >= t_steady:
                            in_steady += len(outs)
                    if d.is_last:
                        for job in d.jobs:
                            del src[job]
                    else:
                        y = launch.output
                        for r, job in enumerate(d.jobs):
                            src[job] = (y, r)
                else:
                    job = d.job
                    if not complete(d, now, dt):
                        src[job] = launch.output
                        ready_at[job] = now
                    else:
                        del src[job], ready_at[job]
                        in_window += now <= t_end
                        in_steady += t_steady <= now <= t_end
                worked = True
            pending = still
        if not worked:
            w = next_wakeup()
            worked = w is not None and now >= w
        if worked:
            if batched:
                ds = dispatch(now)
                c1 = clock()
                core_cpu += c1 - c0
                for d in ds:
                    pending.append((launch_batch(d.context, d.stream, d.model, d.stage, d.size,
                                                 [src[job] for job in d.jobs]), d, now))
            else:
                ds = dispatch(now)
                for d in ds:
                    job = d.job
                    p = prio_of[job.task]
                    qsum[p] += now - ready_at[job]
                    qn[p] += 1
                c1 = clock()
                core_cpu += c1 - c0
                for d in ds:
                    job = d.job
                    pending.append((launch_one(d.context, d.stream, model_of[job.task], d.stage, src[job]), d, now))
            launch_cpu += clock() - c1
        elif pending:
            poll_cpu += clock() - c0  # waiting for the GPU: polling only
    wall = perf() - t_ref
    gc.enable()
    torch.cuda.synchronize(dev)
    torch.cuda.set_stream(torch.cuda.default_stream(dev))
    window = ((t0 - t_ref) * 1e3, (t_end - t_ref) * 1e3)
    busy = busy_fraction(intervals, *window)
    out, p99 = priority_counts(core)
    total = sum(out["completed"].values())
    done = max(total, 1)
    offered = sum(1.0 / t.period for t in tasks)
    work = core_cpu + launch_cpu
    # JPS: jobs finished within the steady part of the release window (those finished while draining are not
    # counted)
    steady = t_end - t_steady
    res = BatchRunResult(seconds, offered, in_steady / steady, out["released"], out["admitted"], out["completed"],
                         out["missed"], p99, work / done * 1e6, core_cpu / done * 1e6, launch_cpu / done * 1e6, busy,
                         {}, loop_busy=work / max(wall, 1e-9),
                         completed_after_window=total - in_window, jps_window=in_window / seconds,
                         warmup=t_steady - t0)
    if batched:
        bs = core.batch_stats()
        res.queue_delay_ms = {p: bs.mean_queue_delay(p) * 1e3 for p in ("HP", "LP")}
        res.mean_batch, res.padding, res.batches = bs.mean_batch, bs.padding, bs.batches
        res.by_size = dict(sorted(bs.by_size.items()))
        res.batch_times_ms = {f"{m}/{j}/{s}": round(v * 1e3, 3) for (m, j, s), v in core.batch_times().items()}
    else:
        res.queue_delay_ms = {p: qsum[p] / qn[p] * 1e3 if qn[p] else 0.0 for p in ("HP", "LP")}
        res.batches = sum(qn.values())
    return res
