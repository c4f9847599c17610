"""Deterministic discrete-event simulator driving :class:`daris_ros.core.Scheduler`.

Events live in one heap keyed by ``(time, kind, seq)``: at equal times stage completions (kind 0)
come before releases (kind 1) and wake-ups (kind 2, ``Scheduler.next_wakeup``), each in the order they
were scheduled. All events of one time stamp are handled, then ``dispatch`` is called once and the
execution times of the dispatches it started are drawn (after all of them are counted as running, so
the dispatches started together see the same GPU state). One loop serves batching on and off: a
dispatch is one model stage for 1..n jobs. A dispatch queued behind another on its stream
(``Dispatch.behind``, ``launch_ahead``) starts when that one completes, and its time is drawn then.
Releases of task i happen at ``phase_i + k * T_i`` for every k with a time below ``duration``;
afterwards the run drains, so every admitted job ends: it completes, or (``scheduler.skip_late``, docs/policy.md
"Bounded staleness under overload") it is skipped unstarted at a ``dispatch``. Randomness comes from ``random.Random``
instances seeded from the scenario seed only: the same seed gives the same result.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daris_ros.core import (
    Dispatch,
    JobOutcome,
    Priority,
    PriorityStats,
    ReleaseDecision,
    Scheduler,
    TaskStats,
    effective_layout,
    sm_per_context_eq9,
)
from daris_ros.core.hyperparams import Layout
from daris_ros.sim.batching import batch_afet_source, batch_factor
from daris_ros.sim.exec_models import ExecTimeModel, Geometry, build_exec_model
from daris_ros.sim.scenario import Scenario

_COMPLETE = 0
_RELEASE = 1
_WAKE = 2


@dataclass(slots=True)
class SimResult:
    """What a run reports: the core's own accounting plus the simulator's view of time."""

    scenario: str
    seed: int
    duration: float
    end_time: float
    layout: Layout
    sm_per_context: int
    n_tasks: int
    task_stats: dict[str, TaskStats]
    priority_stats: dict[Priority, PriorityStats]
    completed_in_horizon: int
    events: int
    dispatches: int

    @property
    def jps(self) -> float:
        """Jobs per second: jobs that finished within ``duration``, per simulated second."""
        return self.completed_in_horizon / self.duration

    def hp(self) -> PriorityStats:
        return self.priority_stats[Priority.HP]

    def lp(self) -> PriorityStats:
        return self.priority_stats[Priority.LP]


Observer = Callable[[str, float, object], None]
"""Optional hook ``observer(kind, now, payload)``: 'release' (ReleaseDecision), 'dispatch' (Dispatch),
'complete' ((Dispatch, [JobOutcome])), the outcomes of the jobs that finished with it, or 'skip' (Job): a job
skipped unstarted (``skip_late``; its stats are ``TaskStats.skipped``)."""


class Simulation:
    """One run of a scenario. ``run()`` may be called once."""

    def __init__(self, scenario: Scenario, seed: int | None = None, observer: Observer | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        cfg = scenario.config
        layout = effective_layout(cfg)
        # eq. 9 from the SMs the node may use (scheduler.sm_limit, else the whole device), as the core does
        sm = sm_per_context_eq9(layout.oversubscription, cfg.usable_sms, layout.n_contexts, cfg.sm_granularity)
        self.geometry = Geometry(
            cfg.n_sm_max, sm, layout.n_contexts, layout.n_streams, layout.oversubscription, cfg.usable_sms
        )
        self.exec_model: ExecTimeModel = build_exec_model(scenario.exec_model, self.geometry)
        # AFET per model: explicit in the scenario, or the exec model's full-load estimate
        afet_of = {
            name: m.afet
            if m.afet is not None
            else tuple(self.exec_model.full_load_estimate(t) for t in m.stage_times)
            for name, m in scenario.models.items()
        }
        self.specs = scenario.task_specs(afet_of, seed=self.seed)
        batch_afet = None
        if cfg.batching is not None:  # cross-task batching: daris_ros/sim/batching.py
            batch_afet = batch_afet_source(scenario.models, self.exec_model.full_load_estimate, cfg.no_staging)
        self.scheduler = Scheduler(cfg, self.specs, batch_afet=batch_afet)
        self._observer = observer
        self._ran = False

    def run(self) -> SimResult:
        """The event loop: one path for batching on and off, driving the core only through ``release``,
        ``dispatch``, ``complete`` and ``next_wakeup``."""
        if self._ran:
            raise RuntimeError("a Simulation runs once; make a new one")
        self._ran = True
        sched = self.scheduler
        scenario = self.scenario
        observer = self._observer
        horizon = scenario.duration
        no_staging = scenario.config.no_staging
        rng = random.Random(f"exec/{self.seed}")
        # base time of a dispatch alone on the GPU, per (model, stage, size): the stage's time (summed under
        # no_staging) times the model's batch factor (1 for a batch of 1)
        base_of: dict[tuple[str, int, int], float] = {}
        names = [s.name for s in self.specs]
        periods = [s.period for s in self.specs]
        phases = [s.phase for s in self.specs]
        in_ctx = [0] * self.geometry.n_contexts
        # launch_ahead: dispatches queued behind the running one on a stream start when it completes
        lanes: dict[tuple[int, int], list[Dispatch]] = {}
        total = 0
        seq = 0
        heap: list[tuple[float, int, int, Any, Any]] = []
        for i, ph in enumerate(phases):
            if ph < horizon:
                heap.append((ph, _RELEASE, seq, i, 0))
                seq += 1
        heapq.heapify(heap)
        heappush, heappop = heapq.heappush, heapq.heappop
        exec_time = self.exec_model.exec_time
        complete, release, dispatch, next_wakeup = sched.complete, sched.release, sched.dispatch, sched.next_wakeup
        take_skipped = sched.take_skipped
        woken: set[float] = set()
        events = dispatches = completed_in_horizon = 0
        now = 0.0
        while heap:
            now = heap[0][0]
            while heap and heap[0][0] == now:
                ev = heappop(heap)
                events += 1
                kind = ev[1]
                if kind == _COMPLETE:
                    d: Dispatch = ev[3]
                    in_ctx[d.context] -= 1
                    total -= 1
                    outcomes: list[JobOutcome] = complete(d, now, ev[4])
                    if outcomes and now <= horizon:
                        completed_in_horizon += len(outcomes)
                    if observer is not None:
                        observer("complete", now, (d, outcomes))
                    if lanes:
                        lane = lanes.get((d.context, d.stream))
                        if lane:  # the next dispatch on the stream starts now; its time is drawn now
                            nd = lane.pop(0)
                            if not lane:
                                del lanes[(d.context, d.stream)]
                            in_ctx[nd.context] += 1
                            total += 1
                            et = exec_time(self._base(base_of, nd, no_staging), in_ctx[nd.context], total, rng,
                                           nd.size)
                            heappush(heap, (now + et, _COMPLETE, seq, nd, et))
                            seq += 1
                elif kind == _RELEASE:
                    i, k = ev[3], ev[4]
                    decision: ReleaseDecision = release(names[i], now)
                    if observer is not None:
                        observer("release", now, decision)
                    nxt = phases[i] + (k + 1) * periods[i]
                    if nxt < horizon:
                        heappush(heap, (nxt, _RELEASE, seq, i, k + 1))
                        seq += 1
                else:
                    woken.discard(now)
            started = dispatch(now)
            skipped = take_skipped()  # skip_late: jobs dropped unstarted (counted by the core; nothing to run)
            if skipped and observer is not None:
                for job in skipped:
                    observer("skip", now, job)
            wake = next_wakeup()
            if wake is not None and wake > now and wake not in woken:
                woken.add(wake)
                heappush(heap, (wake, _WAKE, seq, None, None))
                seq += 1
            if not started:
                continue
            dispatches += len(started)
            running_now: list[Dispatch] = []
            for d in started:
                if d.behind:  # queued behind another on its stream: it starts when that one completes
                    lanes.setdefault((d.context, d.stream), []).append(d)
                    if observer is not None:
                        observer("dispatch", now, d)
                else:
                    running_now.append(d)
                    in_ctx[d.context] += 1
            total += len(running_now)
            # every dispatch started at this instant counts as running before any time is drawn
            for d in running_now:
                et = exec_time(self._base(base_of, d, no_staging), in_ctx[d.context], total, rng, d.size)
                heappush(heap, (now + et, _COMPLETE, seq, d, et))
                seq += 1
                if observer is not None:
                    observer("dispatch", now, d)
        return SimResult(
            scenario=scenario.name,
            seed=self.seed,
            duration=horizon,
            end_time=now,
            layout=sched.layout,
            sm_per_context=sched.sm_per_context(),
            n_tasks=len(self.specs),
            task_stats=sched.task_stats(),
            priority_stats=sched.priority_stats(),
            completed_in_horizon=completed_in_horizon,
            events=events,
            dispatches=dispatches,
        )

    def _base(self, memo: dict[tuple[str, int, int], float], d: Dispatch, no_staging: bool) -> float:
        """Seconds ``d`` takes alone on the GPU: its model stage (all stages under no_staging) x the batch factor."""
        key = (d.model, d.stage, d.size)
        v = memo.get(key)
        if v is None:
            m = self.scenario.models[d.model]
            t = sum(m.stage_times) if no_staging else m.stage_times[d.stage]
            v = memo[key] = t * batch_factor(m.batch_factor, d.size)
        return v


def simulate(scenario: Scenario, seed: int | None = None, observer: Observer | None = None) -> SimResult:
    """Run ``scenario`` once and return its result."""
    return Simulation(scenario, seed=seed, observer=observer).run()
