"""Algorithm 1 (POPULATECONTEXTS): HP first, then LP, each to the least-utilized context."""

from __future__ import annotations

import pytest

from daris_ros.core import (
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
    min_util_context,
    populate_contexts_alg1,
)

HP, LP = Priority.HP, Priority.LP


def test_alg1_hand_computed_assignment() -> None:
    tasks = [
        ("l1", LP, 0.25),
        ("h1", HP, 0.5),
        ("h2", HP, 0.25),
        ("l2", LP, 0.5),
        ("h3", HP, 0.125),
        ("l3", LP, 0.125),
    ]
    # HP first, in the given order: h1 -> ctx0 (0.5); h2 -> ctx1 (0.25); h3 -> ctx1 (0.375)
    # then LP: l1 -> ctx1 (0.375 < 0.5) -> 0.625; l2 -> ctx0 (0.5) -> 1.0; l3 -> ctx1 (0.625) -> 0.75
    assert populate_contexts_alg1(tasks, 2) == {"h1": 0, "h2": 1, "h3": 1, "l1": 1, "l2": 0, "l3": 1}


def test_alg1_ties_go_to_lowest_index_and_balance_counts() -> None:
    tasks = [(f"h{i}", HP, 0.1) for i in range(3)] + [(f"l{i}", LP, 0.1) for i in range(6)]
    out = populate_contexts_alg1(tasks, 3)
    assert [out[f"h{i}"] for i in range(3)] == [0, 1, 2]
    assert [out[f"l{i}"] for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_alg1_with_initial_utils_and_errors() -> None:
    assert populate_contexts_alg1([("a", LP, 0.1)], 2, initial_utils=[0.5, 0.25]) == {"a": 1}
    with pytest.raises(ValueError):
        populate_contexts_alg1([("a", LP, 0.1), ("a", HP, 0.1)], 2)
    with pytest.raises(ValueError):
        populate_contexts_alg1([], 0)
    assert min_util_context([0.3, 0.1, 0.1]) == 1


def test_scheduler_runs_alg1_on_afet_utilization_eq10() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=2)
    tasks = [
        TaskSpec("l1", 1.0, LP, 1, (0.25,)),
        TaskSpec("h1", 1.0, HP, 2, (0.25, 0.25)),
        TaskSpec("h2", 2.0, HP, 1, (0.5,)),
        TaskSpec("l2", 1.0, LP, 1, (0.5,)),
    ]
    s = Scheduler(cfg, tasks)
    # u: l1 0.25, h1 0.5, h2 0.25, l2 0.5 -> h1:0, h2:1, l1:1 (0.25<0.5), l2:0 (0.5 = 0.5 -> lowest index)
    assert [s.context_of(n) for n in ("h1", "h2", "l1", "l2")] == [0, 1, 1, 0]
    u0, u1 = s.utilization(0), s.utilization(1)
    assert (u0.hp, u0.lp, u0.total) == (0.5, 0.5, 1.0)
    assert (u1.hp, u1.lp, u1.total) == (0.25, 0.25, 0.5)
