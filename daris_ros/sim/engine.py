"""Deterministic discrete-event simulator driving :class:`daris_ros.core.Scheduler`.

Events live in one heap keyed by ``(time, kind, seq)``: at equal times stage completions (kind 0)
come before releases (kind 1), each in the order they were scheduled. All events of one time
stamp are handled, then ``dispatch`` is called once and the execution times of the stages it
started are drawn (after all of them are counted as running, so the stages started together see
the same GPU state). Releases of task i happen at ``phase_i + k * T_i`` for every k with a time
below ``duration``; afterwards the run drains, so every admitted job finishes. Randomness comes
from ``random.Random`` instances seeded from the scenario seed only: the same seed gives the same
result.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from daris_ros.core import (
    JobOutcome,
    Priority,
    PriorityStats,
    ReleaseDecision,
    Scheduler,
    StageDispatch,
    TaskStats,
    effective_layout,
    sm_per_context_eq9,
)
from daris_ros.core.hyperparams import Layout
from daris_ros.sim.exec_models import ExecTimeModel, Geometry, build_exec_model
from daris_ros.sim.scenario import Scenario

_COMPLETE = 0
_RELEASE = 1


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
"""Optional hook ``observer(kind, now, payload)`` with kind 'release', 'dispatch' or 'complete'."""


class Simulation:
    """One run of a scenario. ``run()`` may be called once."""

    def __init__(self, scenario: Scenario, seed: int | None = None, observer: Observer | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        cfg = scenario.config
        layout = effective_layout(cfg)
        sm = sm_per_context_eq9(layout.oversubscription, cfg.n_sm_max, layout.n_contexts, cfg.sm_granularity)
        self.geometry = Geometry(
            cfg.n_sm_max, sm, layout.n_contexts, layout.n_streams, layout.oversubscription
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
            from daris_ros.sim.batching import batch_afet_source

            batch_afet = batch_afet_source(scenario.models, self.exec_model.full_load_estimate, cfg.no_staging)
        self.scheduler = Scheduler(cfg, self.specs, batch_afet=batch_afet)
        self._observer = observer
        self._ran = False

    def run(self) -> SimResult:
        if self._ran:
            raise RuntimeError("a Simulation runs once; make a new one")
        self._ran = True
        if self.scenario.config.batching is not None:
            return self._run_batched()
        sched = self.scheduler
        model = self.exec_model
        observer = self._observer
        horizon = self.scenario.duration
        rng = random.Random(f"exec/{self.seed}")
        # base time of every scheduling stage of every task (one summed stage under no_staging)
        base_of: dict[str, tuple[float, ...]] = {}
        for s in self.specs:
            times = self.scenario.models[s.model].stage_times
            base_of[s.name] = (sum(times),) if self.scenario.config.no_staging else times
        names = [s.name for s in self.specs]
        periods = [s.period for s in self.specs]
        phases = [s.phase for s in self.specs]
        n_c = self.geometry.n_contexts
        in_ctx = [0] * n_c
        total = 0
        seq = 0
        heap: list[tuple] = []
        for i, ph in enumerate(phases):
            if ph < horizon:
                heap.append((ph, _RELEASE, seq, i, 0))
                seq += 1
        heapq.heapify(heap)
        heappush, heappop = heapq.heappush, heapq.heappop
        exec_time = model.exec_time
        complete, release, dispatch = sched.complete, sched.release, sched.dispatch
        complete_kind = _COMPLETE
        events = dispatches = completed_in_horizon = 0
        now = 0.0
        while heap:
            now = heap[0][0]
            while heap and heap[0][0] == now:
                ev = heappop(heap)
                events += 1
                if ev[1] == complete_kind:
                    d: StageDispatch = ev[3]
                    in_ctx[d.context] -= 1
                    total -= 1
                    outcome: JobOutcome | None = complete(d, now, ev[4])
                    if outcome is not None and now <= horizon:
                        completed_in_horizon += 1
                    if observer is not None:
                        observer("complete", now, (d, outcome))
                else:
                    i, k = ev[3], ev[4]
                    decision: ReleaseDecision = release(names[i], now)
                    if observer is not None:
                        observer("release", now, decision)
                    nxt = phases[i] + (k + 1) * periods[i]
                    if nxt < horizon:
                        heappush(heap, (nxt, _RELEASE, seq, i, k + 1))
                        seq += 1
            started = dispatch(now)
            if not started:
                continue
            n_started = len(started)
            dispatches += n_started
            total += n_started
            if n_started == 1:
                d = started[0]
                in_ctx[d.context] += 1
            else:
                for d in started:
                    in_ctx[d.context] += 1
            for d in started:
                et = exec_time(base_of[d.job.task][d.stage], in_ctx[d.context], total, rng)
                heappush(heap, (now + et, _COMPLETE, seq, d, et))
                seq += 1
                if observer is not None:
                    observer("dispatch", now, d)
        return SimResult(
            scenario=self.scenario.name,
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


    def _run_batched(self) -> SimResult:
        from daris_ros.sim.batching import run_batched

        end, done, events, dispatches = run_batched(self)
        sched = self.scheduler
        return SimResult(
            scenario=self.scenario.name,
            seed=self.seed,
            duration=self.scenario.duration,
            end_time=end,
            layout=sched.layout,
            sm_per_context=sched.sm_per_context(),
            n_tasks=len(self.specs),
            task_stats=sched.task_stats(),
            priority_stats=sched.priority_stats(),
            completed_in_horizon=done,
            events=events,
            dispatches=dispatches,
        )


def simulate(scenario: Scenario, seed: int | None = None, observer: Observer | None = None) -> SimResult:
    """Run ``scenario`` once and return its result."""
    return Simulation(scenario, seed=seed, observer=observer).run()
