"""Eqs. 3-7 and 10: task and context utilization, and the incremental book."""

from __future__ import annotations

import math

import pytest

from daris_ros.core import (
    ContextUtilization,
    Priority,
    TaskLoad,
    UtilizationBook,
    active_lp_utilization,
    active_utilization_eq7,
    hp_utilization_eq4,
    lp_utilization_eq5,
    task_utilization_eq3,
    task_utilization_eq10,
    total_utilization_eq6,
)

HP, LP = Priority.HP, Priority.LP

# (context, priority, u): hand-picked binary fractions so sums are exact
LOADS = [
    TaskLoad(0, HP, 0.25),
    TaskLoad(0, HP, 0.125),
    TaskLoad(0, LP, 0.5),
    TaskLoad(1, HP, 0.375),
    TaskLoad(1, LP, 0.25),
    TaskLoad(1, LP, 0.0625),
]


def test_eq3_utilization_is_mret_over_period() -> None:
    assert task_utilization_eq3(0.005, 0.020) == pytest.approx(0.25)
    assert task_utilization_eq3(3.0, 4.0) == 0.75


def test_eq10_afet_before_history_then_mret() -> None:
    assert task_utilization_eq10(afet=2.0, mret=None, period=8.0) == 0.25
    assert task_utilization_eq10(afet=2.0, mret=1.0, period=8.0) == 0.125


def test_eq4_hp_total_per_context() -> None:
    assert hp_utilization_eq4(LOADS, 0) == 0.375
    assert hp_utilization_eq4(LOADS, 1) == 0.375
    assert hp_utilization_eq4(LOADS, 2) == 0.0


def test_eq5_lp_total_per_context() -> None:
    assert lp_utilization_eq5(LOADS, 0) == 0.5
    assert lp_utilization_eq5(LOADS, 1) == 0.3125


def test_eq6_total_is_hp_plus_lp() -> None:
    assert total_utilization_eq6(hp_utilization_eq4(LOADS, 0), lp_utilization_eq5(LOADS, 0)) == 0.875
    assert total_utilization_eq6(0.375, 0.3125) == 0.6875


def test_eq7_active_utilization_counts_only_active_lp() -> None:
    # in context 1 only the 0.0625 LP task has an unfinished job
    active = [TaskLoad(1, LP, 0.0625), TaskLoad(0, LP, 0.5)]
    lp_active = active_lp_utilization(active, 1)
    assert lp_active == 0.0625
    assert active_utilization_eq7(hp_utilization_eq4(LOADS, 1), lp_active) == 0.4375
    cu = ContextUtilization(total=0.6875, hp=0.375, lp=0.3125, active_lp=0.0625)
    assert cu.active == 0.4375


def test_book_incremental_sums_match_pure_functions() -> None:
    book = UtilizationBook(2)
    for i, x in enumerate(LOADS):
        book.add_task(f"t{i}", x.context, x.priority, x.utilization)
    for k in (0, 1):
        assert book.hp(k) == hp_utilization_eq4(LOADS, k)
        assert book.lp(k) == lp_utilization_eq5(LOADS, k)
        assert book.total(k) == total_utilization_eq6(book.hp(k), book.lp(k))
    # replacing a member's value (MRET changed) adjusts the sum
    book.add_task("t0", 0, HP, 0.5)
    assert book.hp(0) == 0.625
    book.remove_task("t0", 0, HP)
    book.remove_task("t1", 0, HP)
    assert book.hp(0) == 0.0  # exactly zero once the set is empty
    book.activate("t2", 0, LP, 0.5)
    assert book.active_lp(0) == 0.5 and book.is_active("t2", 0, LP)
    book.deactivate("t2", 0, LP)
    assert book.active_lp(0) == 0.0 and not book.is_active("t2", 0, LP)


def test_book_resync_cancels_drift() -> None:
    book = UtilizationBook(1, resync_every=10_000_000)
    book.add_task("a", 0, LP, 0.1)
    for i in range(1000):
        book.add_task("b", 0, LP, 0.1 + (i % 7) * 1e-3)
        book.add_task("b", 0, LP, 0.2)
    book.resync()
    assert book.lp(0) == math.fsum([0.1, 0.2])
    assert book.context(0).lp == book.lp(0)
