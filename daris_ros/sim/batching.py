"""Cross-task stage batching in the simulator (``scheduler.batching`` in a scenario).

A model's ``batch_factor`` (``{size: factor}``) says how long a batch of ``size`` stages takes,
relative to one stage alone: ``base(size) = stage_time * factor(size)``, linear between the given
sizes, extended past the last one with the last segment's slope (factor(1) = 1). Without it a batch
costs ``size`` x the stage (no gain). The execution-time model then rates the batch like any stage,
with its ``size`` (see exec_models.py, ``batch_sm_exponent``).

The batched run loop is the simulator's loop with ``dispatch_batches``/``complete_batch`` and one
more event kind: a *wake-up* at the time a waiting LP batch must start, or a busy stream's launch-ahead window
opens (``Scheduler.next_wakeup``). A batch queued behind another on its stream (``BatchDispatch.behind``,
``launch_ahead``) starts when that one completes, and its execution time is drawn then.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from daris_ros.core import BatchDispatch, JobOutcome, ReleaseDecision
from daris_ros.sim.scenario import ModelSpec

if TYPE_CHECKING:
    from daris_ros.sim.engine import Simulation

_COMPLETE = 0
_RELEASE = 1
_WAKE = 2


def batch_factor(points: tuple[tuple[int, float], ...] | None, size: int) -> float:
    """Batch time / single-stage time for a batch of ``size`` (piecewise linear through ``points``)."""
    if size <= 1:
        return 1.0
    if not points:
        return float(size)
    pts = [(1, 1.0), *((s, f) for s, f in points if s > 1)]
    for (s0, f0), (s1, f1) in zip(pts, pts[1:], strict=False):
        if size <= s1:
            return f0 + (f1 - f0) * (size - s0) / (s1 - s0)
    if len(pts) == 1:
        return float(size)
    (s0, f0), (s1, f1) = pts[-2], pts[-1]
    return f1 + (f1 - f0) / (s1 - s0) * (size - s1)


def batch_afet_source(models: Mapping[str, ModelSpec], full_load: Callable[[float, int], float],
                      no_staging: bool) -> Callable[[str, int, int], float | None]:
    """``(model, stage, size) -> seconds``: the full-load estimate of the batch (the batched AFET)."""

    def afet(model: str, stage: int, size: int) -> float | None:
        m = models.get(model)
        if m is None:
            return None
        base = sum(m.stage_times) if no_staging else m.stage_times[stage]
        return full_load(base * batch_factor(m.batch_factor, size), size)

    return afet


def run_batched(sim: Simulation) -> tuple[float, int, int, int]:
    """The event loop with batching; returns (end time, completed within the horizon, events, dispatches)."""
    sched = sim.scheduler
    model = sim.exec_model
    observer = sim._observer
    scenario = sim.scenario
    horizon = scenario.duration
    no_staging = scenario.config.no_staging
    rng = random.Random(f"exec/{sim.seed}")
    names = [s.name for s in sim.specs]
    periods = [s.period for s in sim.specs]
    phases = [s.phase for s in sim.specs]
    memo: dict[tuple[str, int, int], float] = {}

    def base_of(d: BatchDispatch) -> float:
        key = (d.model, d.stage, d.size)
        v = memo.get(key)
        if v is None:
            m = scenario.models[d.model]
            t = sum(m.stage_times) if no_staging else m.stage_times[d.stage]
            v = memo[key] = t * batch_factor(m.batch_factor, d.size)
        return v

    n_c = sim.geometry.n_contexts
    in_ctx = [0] * n_c
    # launch_ahead: batches queued behind the running one on a stream start when it completes
    lanes: dict[tuple[int, int], list[BatchDispatch]] = {}
    total = 0
    seq = 0
    heap: list[tuple] = [(ph, _RELEASE, i, i, 0) for i, ph in enumerate(phases) if ph < horizon]
    seq = len(phases)
    heapq.heapify(heap)
    heappush, heappop = heapq.heappush, heapq.heappop
    events = dispatches = done = 0
    woken: set[float] = set()
    now = 0.0
    while heap:
        now = heap[0][0]
        while heap and heap[0][0] == now:
            ev = heappop(heap)
            events += 1
            kind = ev[1]
            if kind == _COMPLETE:
                d: BatchDispatch = ev[3]
                in_ctx[d.context] -= 1
                total -= 1
                outcomes: list[JobOutcome] = sched.complete_batch(d, now, ev[4])
                if now <= horizon:
                    done += len(outcomes)
                if observer is not None:
                    observer("complete", now, (d, outcomes))
                lane = lanes.get((d.context, d.stream))
                if lane:
                    nd = lane.pop(0)
                    in_ctx[nd.context] += 1
                    total += 1
                    et = model.exec_time(base_of(nd), in_ctx[nd.context], total, rng, nd.size)
                    heappush(heap, (now + et, _COMPLETE, seq, nd, et))
                    seq += 1
            elif kind == _RELEASE:
                i, k = ev[3], ev[4]
                decision: ReleaseDecision = sched.release(names[i], now)
                if observer is not None:
                    observer("release", now, decision)
                nxt = phases[i] + (k + 1) * periods[i]
                if nxt < horizon:
                    heappush(heap, (nxt, _RELEASE, seq, i, k + 1))
                    seq += 1
            else:
                woken.discard(now)
        started = sched.dispatch_batches(now)
        wake = sched.next_wakeup()
        if wake is not None and wake > now and wake not in woken:
            woken.add(wake)
            heappush(heap, (wake, _WAKE, seq, None, None))
            seq += 1
        if not started:
            continue
        dispatches += len(started)
        queued_behind = [d for d in started if d.behind]
        if queued_behind:
            for d in queued_behind:
                lanes.setdefault((d.context, d.stream), []).append(d)
                if observer is not None:
                    observer("dispatch", now, d)
            started = [d for d in started if not d.behind]
        total += len(started)
        for d in started:
            in_ctx[d.context] += 1
        for d in started:
            et = model.exec_time(base_of(d), in_ctx[d.context], total, rng, d.size)
            heappush(heap, (now + et, _COMPLETE, seq, d, et))
            seq += 1
            if observer is not None:
                observer("dispatch", now, d)
    return now, done, events, dispatches
