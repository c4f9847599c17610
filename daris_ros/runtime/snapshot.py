"""What the engine's loop hands out for statistics: one consistent reading of the core, the inbox and the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daris_ros.core import ContextUtilization, Priority, PriorityStats, TaskStats
from daris_ros.runtime.inbox import IntakeCounters


@dataclass(slots=True)
class LoopStats:
    """The loop's own work since start: turns, releases, and thread CPU time (seconds) spent releasing (taking the
    frames, decoding them when the loop decodes, admission, preprocessing) and in all (``busy_cpu``: releases,
    completions, dispatches, launches, post-processing, commands)."""

    iterations: int = 0
    releases: int = 0
    release_cpu: float = 0.0
    busy_cpu: float = 0.0
    busy_share: float = 0.0  # the loop's busy share of wall time over about the last second (runtime.loop_load)

    @property
    def host_us_per_release(self) -> float:
        return self.busy_cpu / self.releases * 1e6 if self.releases else 0.0


@dataclass(slots=True)
class EngineSnapshot:
    time: float
    tasks: dict[str, TaskStats]
    priorities: dict[Priority, PriorityStats]
    context_of: dict[str, int]
    mret: dict[str, float]
    utilization: list[ContextUtilization]
    queued: list[int]
    contexts_down: frozenset[int]
    outstanding_stages: int
    in_flight_jobs: int
    reprobes: dict[str, int]
    batch: Any
    sm_per_context: int
    intake: dict[str, tuple[IntakeCounters, int]]  # task -> (counters, pending frame 0/1)
    loop: LoopStats = field(default_factory=LoopStats)
    counters: Any = None
    sm_limit: int = 0  # the sm_limit parameter (0: the whole device)
    usable_sms: int = 0  # eq. 9's N_SM,max: sm_limit, else the backend's device SMs (cpu: a nominal 132)
    daemon_restarts: int | None = None  # a backend with a supervised daemon (mps): its restarts; else None
