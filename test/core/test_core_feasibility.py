"""Feasibility per context (daris_ros/core/feasibility.py): eq. 4 against N_s, eq. 5, eq. 11's share left and the
expected LP rejection rate, with hand-computed figures."""

from __future__ import annotations

import pytest

from daris_ros.core import (
    InfeasibleTaskSet,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskShare,
    TaskSpec,
    check_feasibility,
    expected_rejection,
    feasibility_of,
)

HP, LP = Priority.HP, Priority.LP


def share(name: str, priority: Priority, context: int, mret: float, period: float,
          deadline: float | None = None) -> TaskShare:
    return TaskShare(name, priority, context, mret / period, mret, period, period if deadline is None else deadline)


def two_contexts() -> list[TaskShare]:
    """N_c = 2, N_s = 1. Context 0: HP a 0.5 + b 0.75, LP c 0.25. Context 1: HP d 0.25, LP e 0.5 + f 0.5."""
    return [
        share("a", HP, 0, 0.050, 0.100),  # u = 0.5
        share("b", HP, 0, 0.150, 0.200),  # u = 0.75
        share("c", LP, 0, 0.025, 0.100),  # u = 0.25
        share("d", HP, 1, 0.025, 0.100),  # u = 0.25
        share("e", LP, 1, 0.100, 0.200),  # u = 0.5
        share("f", LP, 1, 0.050, 0.100),  # u = 0.5
    ]


def test_hand_computed_figures_per_context() -> None:
    r = check_feasibility(two_contexts(), n_contexts=2, n_streams=1)
    c0, c1 = r.contexts
    # context 0: eq. 4 = 0.5 + 0.75 = 1.25 > N_s = 1; eq. 11: 1 - 1.25 = -0.25; LP 0.25 with nothing left: all rejected
    assert [t.name for t in c0.hp_tasks] == ["a", "b"] and [t.name for t in c0.lp_tasks] == ["c"]
    assert c0.hp_utilization == pytest.approx(1.25) and c0.lp_utilization == pytest.approx(0.25)
    assert c0.lp_left == pytest.approx(-0.25)
    assert c0.hp_over_capacity and not c0.hp_feasible
    assert c0.lp_oversubscribed and c0.lp_expected_rejection == pytest.approx(1.0)
    # context 1: eq. 4 = 0.25; left 0.75; LP 1.0 > 0.75: 1 - 0.75 / 1.0 = 25 % rejected
    assert c1.hp_utilization == pytest.approx(0.25) and c1.lp_utilization == pytest.approx(1.0)
    assert c1.lp_left == pytest.approx(0.75)
    assert c1.hp_feasible and c1.lp_oversubscribed
    assert c1.lp_expected_rejection == pytest.approx(0.25)
    # node-wide, with migration: room 0 + 0.75 for a demand of 0.25 + 1.0: 1 - 0.75 / 1.25 = 40 %
    assert not r.feasible and r.lp_oversubscribed
    assert r.lp_expected_rejection == pytest.approx(0.4)
    assert [t.utilization for t in c1.tasks] == pytest.approx([0.25, 0.5, 0.5])


def test_hp_problem_names_the_context_the_tasks_and_the_figures() -> None:
    r = check_feasibility(two_contexts(), n_contexts=2, n_streams=1)
    assert r.hp_problems() == ("context 0: HP utilization 1.25 > 1 (N_s = 1): tasks "
                               "a (u=0.50: 50.0 ms every 100.0 ms), b (u=0.75: 150.0 ms every 200.0 ms)")
    exc = InfeasibleTaskSet(r)
    assert str(exc) == r.hp_problems() and exc.report is r
    lp = r.lp_problems()
    assert lp.startswith("context 0: LP utilization 0.25 > 0.00 left (eq. 11: N_s 1 - HP 1.25): expected LP "
                         "rejection 100% without migration; tasks c (u=0.25")
    assert "context 1: LP utilization 1.00 > 0.75 left (eq. 11: N_s 1 - HP 0.25): expected LP rejection 25%" in lp
    assert lp.endswith("(with migration to contexts with room: 40% of the node's LP demand)")
    lines = r.lines()
    assert len(lines) == 2
    assert lines[1].startswith("context 1 (N_s = 1): HP utilization 0.25 [d (u=0.25: 25.0 ms every 100.0 ms)]; "
                               "LP utilization 1.00 of 0.75 left [e (u=0.50")
    assert lines[1].endswith("; expected LP rejection 25%")


def test_the_bound_is_n_s_per_context() -> None:
    # eq. 11 takes N_s as the context's capacity: HP 1.5 fits 2 streams and leaves 0.5 to LP
    tasks = [share("a", HP, 0, 0.075, 0.100), share("b", HP, 0, 0.075, 0.100), share("c", LP, 0, 0.040, 0.100)]
    r = check_feasibility(tasks, n_contexts=1, n_streams=2)
    (c,) = r.contexts
    assert c.hp_utilization == pytest.approx(1.5) and c.lp_left == pytest.approx(0.5)
    assert r.feasible and not r.lp_oversubscribed and c.lp_expected_rejection == 0.0
    assert r.hp_problems() == "" and r.lp_problems() == ""
    # the same tasks on one stream: 1.5 > 1
    r1 = check_feasibility(tasks, n_contexts=1, n_streams=1)
    assert not r1.feasible and r1.hp_problems().startswith("context 0: HP utilization 1.50 > 1 (N_s = 1)")


def test_hp_exactly_at_n_s_is_feasible_and_leaves_nothing_to_lp() -> None:
    tasks = [share("a", HP, 0, 0.050, 0.100), share("b", HP, 0, 0.100, 0.200), share("c", LP, 0, 0.010, 0.100)]
    r = check_feasibility(tasks, n_contexts=1, n_streams=1)
    (c,) = r.contexts
    assert c.hp_utilization == pytest.approx(1.0) and c.lp_left == pytest.approx(0.0)
    assert r.feasible
    assert c.lp_oversubscribed and c.lp_expected_rejection == pytest.approx(1.0)


def test_hp_task_whose_execution_time_exceeds_its_deadline_is_infeasible() -> None:
    # u = 0.5 fits the context, but mret 100 ms > D = 50 ms: every job misses
    r = check_feasibility([share("a", HP, 0, 0.100, 0.200, deadline=0.050)], n_contexts=1, n_streams=1)
    (c,) = r.contexts
    assert not c.hp_over_capacity and [t.name for t in c.hp_late_tasks] == ["a"]
    assert not r.feasible
    assert r.hp_problems() == "context 0: HP task a: execution time 100.0 ms > deadline 50.0 ms"
    # an LP task over its deadline is not an HP problem (eq. 12 and the miss counters deal with it)
    r_lp = check_feasibility([share("b", LP, 0, 0.100, 0.200, deadline=0.050)], n_contexts=1, n_streams=1)
    assert r_lp.feasible


def test_no_lp_demand_is_never_oversubscribed() -> None:
    r = check_feasibility([share("a", HP, 0, 0.300, 0.200)], n_contexts=2, n_streams=1)
    c0, c1 = r.contexts
    assert c0.hp_utilization == pytest.approx(1.5) and c0.lp_left == pytest.approx(-0.5)
    assert not c0.lp_oversubscribed and c0.lp_expected_rejection == 0.0
    assert c1.tasks == () and c1.hp_utilization == 0.0 and c1.lp_left == 1.0
    assert not r.lp_oversubscribed and r.lp_expected_rejection == 0.0


def test_expected_rejection_formula() -> None:
    assert expected_rejection(1.0, 0.75) == pytest.approx(0.25)
    assert expected_rejection(0.5, 0.75) == 0.0
    assert expected_rejection(0.5, -0.5) == 1.0
    assert expected_rejection(0.0, -0.5) == 0.0
    assert expected_rejection(2.0, 0.5) == pytest.approx(0.75)


def test_invalid_layout_or_context() -> None:
    with pytest.raises(ValueError, match="n_streams"):
        check_feasibility([], n_contexts=1, n_streams=0)
    with pytest.raises(ValueError, match="context 2"):
        check_feasibility([share("a", HP, 2, 0.01, 0.1)], n_contexts=2, n_streams=1)


def test_feasibility_of_the_core_after_the_offline_phase_then_with_measured_mret() -> None:
    # MPS 2 x 1. Eq. 10: h1 (30 + 20 ms) / 100 ms = 0.5, h2 60 / 100 = 0.6, l1 20 / 100 = 0.2.
    # Algorithm 1: h1 -> context 0, h2 -> context 1, l1 -> context 0 (0.5 < 0.6).
    specs = [
        TaskSpec("h1", 0.1, HP, 2, (0.03, 0.02)),
        TaskSpec("h2", 0.1, HP, 1, (0.06,)),
        TaskSpec("l1", 0.1, LP, 1, (0.02,)),
    ]
    core = Scheduler(SchedulerConfig(policy=Policy.MPS, n_contexts=2, n_streams=1), specs)
    r = feasibility_of(core)
    c0, c1 = r.contexts
    assert [t.name for t in c0.hp_tasks] == ["h1"] and [t.name for t in c0.lp_tasks] == ["l1"]
    assert [t.name for t in c1.hp_tasks] == ["h2"] and c1.lp_tasks == ()
    assert c0.hp_utilization == pytest.approx(0.5) and c0.lp_utilization == pytest.approx(0.2)
    assert c0.lp_left == pytest.approx(0.5) and c1.lp_left == pytest.approx(0.4)
    assert c0.hp_tasks[0].mret == pytest.approx(0.05) and c0.hp_tasks[0].deadline == 0.1
    assert r.feasible and not r.lp_oversubscribed
    assert c0.hp_utilization == pytest.approx(core.utilization(0).hp)  # the same eq. 4 as the core's book
    # eq. 3 replaces eq. 10 once measured: h1's stage 0 takes 100 ms -> mret 120 ms -> u = 1.2 > 1
    assert core.release("h1", 0.0).admitted
    (d,) = core.dispatch(0.0)
    core.complete(d, 0.1, exec_time=0.1)
    r2 = feasibility_of(core)
    assert r2.contexts[0].hp_utilization == pytest.approx(1.2)
    assert not r2.feasible
    assert r2.hp_problems().startswith("context 0: HP utilization 1.20 > 1 (N_s = 1): tasks h1 (u=1.20: 120.0 ms")
    # context 0's LP share is gone: l1 (0.2) would be rejected there; context 1 still has 0.4 for it
    assert r2.contexts[0].lp_expected_rejection == pytest.approx(1.0)
    assert r2.lp_expected_rejection == 0.0


def test_feasibility_of_uses_the_effective_layout() -> None:
    # STR: one context of N_s streams whatever n_contexts says; eq. 11 on N_s = 3
    specs = [TaskSpec(f"h{i}", 0.1, HP, 1, (0.08,)) for i in range(3)]
    core = Scheduler(SchedulerConfig(policy=Policy.STR, n_contexts=1, n_streams=3), specs)
    r = feasibility_of(core)
    (c,) = r.contexts
    assert c.n_streams == 3 and c.hp_utilization == pytest.approx(2.4) and c.lp_left == pytest.approx(0.6)
    assert r.feasible
