"""Eqs. 11-12, migration to the earliest predicted finish, rejection, and the HPA test."""

from __future__ import annotations

from daris_ros.core import (
    admission_test_eq12,
    admit_lp,
    hp_admission_test,
    migration_target,
    predicted_finish,
    remaining_utilization_eq11,
)


def test_eq11_remaining_utilization_uses_streams_per_context() -> None:
    assert remaining_utilization_eq11(1, 0.25) == 0.75
    assert remaining_utilization_eq11(3, 1.5) == 1.5
    assert remaining_utilization_eq11(1, 1.25) == -0.25


def test_eq12_is_strict() -> None:
    assert admission_test_eq12(0.25, 0.25, 0.75) is True
    assert admission_test_eq12(0.5, 0.25, 0.75) is False  # 0.75 < 0.75 fails: strict
    assert admission_test_eq12(0.0, 0.0, 0.0) is False


def test_predicted_finish_definition() -> None:
    # now + backlog / N_s + mret_i
    assert predicted_finish(10.0, 6.0, 2, 0.5) == 13.5


def test_admit_on_current_context_when_it_passes() -> None:
    r = admit_lp(0, 0.25, 1.0, 0.0, 1, hp_total=[0.25, 0.0], lp_active=[0.25, 0.0], backlog=[9.0, 0.0])
    assert (r.admitted, r.context, r.migrated_from) == (True, 0, None)


def test_migrate_to_passing_context_with_earliest_predicted_finish() -> None:
    # ctx0 fails (0.5 + 0.25 !< 0.75); ctx1 passes with backlog 4; ctx2 passes with backlog 2;
    # ctx3 has the least backlog but fails the test
    hp = [0.25, 0.0, 0.5, 0.75]
    lp = [0.5, 0.5, 0.0, 0.0]
    backlog = [0.0, 4.0, 2.0, 0.0]
    r = admit_lp(0, 0.25, 1.0, 0.0, 1, hp, lp, backlog)
    assert (r.admitted, r.context, r.migrated_from) == (True, 2, 0)
    assert migration_target(0, 0.25, 1.0, 0.0, 1, hp, lp, backlog) == 2


def test_migration_tie_goes_to_lowest_index() -> None:
    assert migration_target(2, 0.1, 1.0, 0.0, 1, [0, 0, 1], [0, 0, 0], [1.0, 1.0, 0.0]) == 0


def test_reject_when_no_context_passes() -> None:
    r = admit_lp(1, 0.5, 1.0, 0.0, 1, hp_total=[0.5, 0.5], lp_active=[0.0, 0.0], backlog=[0.0, 0.0])
    assert (r.admitted, r.context, r.migrated_from) == (False, 1, None)


def test_hpa_test_is_strict_against_streams() -> None:
    assert hp_admission_test(0.5, 0.25, 1) is True
    assert hp_admission_test(0.75, 0.25, 1) is False
    assert hp_admission_test(1.5, 0.25, 2) is True
