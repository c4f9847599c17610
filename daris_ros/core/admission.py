"""Online phase, section IV-B1: the LP admission test (eqs. 11-12) and migration.

If the task's current context passes eq. 12 the job runs there. Otherwise every other context is
tested, and the task migrates to the passing context with the earliest *predicted finish*
(:func:`predicted_finish`). If none passes the job is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def remaining_utilization_eq11(n_streams: int, hp_total: float) -> float:
    """Eq. 11: ``U^r_k(t) = N_s - U^{h,t}_k(t)``."""
    return n_streams - hp_total


def admission_test_eq12(lp_active: float, u_task: float, remaining: float) -> bool:
    """Eq. 12: ``U^{l,a}_k(t) + u_j(t) < U^r_k(t)`` (strict)."""
    return lp_active + u_task < remaining


def hp_admission_test(hp_active: float, u_task: float, n_streams: int) -> bool:
    """Overload+HPA (section VI-I): an HP job is admitted when ``U^{h,a}_k + u_j < N_s``.

    ``U^{h,a}_k`` is the utilization of HP tasks with an unfinished job in context k; it is eq. 12
    with the HP class in place of the LP class and no HP reservation.
    """
    return hp_active + u_task < n_streams


def predicted_finish(now: float, backlog: float, n_streams: int, task_mret: float) -> float:
    """Predicted finish of a new job in a context: ``now + backlog_k / N_s + mret_i``.

    ``backlog_k`` is the estimated work (sum of the MRETs at enqueue time) of every stage queued or
    running in context k; running stages count in full, which errs on the late side.
    """
    return now + backlog / n_streams + task_mret


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    admitted: bool
    context: int
    migrated_from: int | None


def admit_lp(
    current: int,
    u_task: float,
    task_mret: float,
    now: float,
    n_streams: int,
    hp_total: Sequence[float],
    lp_active: Sequence[float],
    backlog: Sequence[float],
) -> AdmissionResult:
    """Admission of one LP job: eq. 12 on ``current``, else migration, else rejection.

    Among the other contexts that pass eq. 12 the one with the smallest :func:`predicted_finish`
    wins; ties go to the lowest context index.
    """
    remaining = remaining_utilization_eq11(n_streams, hp_total[current])
    if admission_test_eq12(lp_active[current], u_task, remaining):
        return AdmissionResult(True, current, None)
    target = migration_target(current, u_task, task_mret, now, n_streams, hp_total, lp_active, backlog)
    if target is None:
        return AdmissionResult(False, current, None)
    return AdmissionResult(True, target, current)


def migration_target(
    current: int,
    u_task: float,
    task_mret: float,
    now: float,
    n_streams: int,
    hp_total: Sequence[float],
    lp_active: Sequence[float],
    backlog: Sequence[float],
) -> int | None:
    """The context other than ``current`` that passes eq. 12 with the earliest predicted finish.

    Ties go to the lowest index; None when no other context passes.
    """
    best: int | None = None
    best_finish = 0.0
    for k in range(len(hp_total)):
        if k == current:
            continue
        if not admission_test_eq12(lp_active[k], u_task, remaining_utilization_eq11(n_streams, hp_total[k])):
            continue
        finish = predicted_finish(now, backlog[k], n_streams, task_mret)
        if best is None or finish < best_finish:
            best, best_finish = k, finish
    return best
