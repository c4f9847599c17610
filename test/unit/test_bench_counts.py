"""The per-priority counters a bench run reports, read from a real policy core."""

from __future__ import annotations

import pytest

from daris_ros.bench.counts import priority_counts
from daris_ros.core import Policy, Priority, Scheduler, SchedulerConfig, TaskSpec


def test_priority_counts_of_a_short_run() -> None:
    tasks = [TaskSpec("hp", 0.1, Priority.HP, 1, (0.01,)), TaskSpec("lp", 0.1, Priority.LP, 1, (0.01,))]
    core = Scheduler(SchedulerConfig(Policy.STR, n_streams=1), tasks)
    core.release("hp", 0.0)
    core.release("lp", 0.0)
    (d,) = core.dispatch(0.0)
    core.complete(d, 0.02)  # HP first: 20 ms response
    (d,) = core.dispatch(0.02)
    core.complete(d, 0.2)  # LP finishes after its 100 ms deadline
    out, p99 = priority_counts(core)
    assert out == {"released": {"HP": 1, "LP": 1}, "admitted": {"HP": 1, "LP": 1},
                   "completed": {"HP": 1, "LP": 1}, "missed": {"HP": 0, "LP": 1}}
    assert p99 == {"HP": pytest.approx(20.0), "LP": pytest.approx(200.0)}
    empty, none = priority_counts(Scheduler(SchedulerConfig(), tasks))
    assert empty["completed"] == {"HP": 0, "LP": 0} and none == {"HP": 0.0, "LP": 0.0}
