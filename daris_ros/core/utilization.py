"""Utilization, section III-B3: task utilization (eqs. 3, 10) and context utilization (eqs. 4-7).

The pure functions compute the equations from scratch. :class:`UtilizationBook` keeps the same sums
incrementally for the hot path (O(1) per event) and can recompute them exactly from its members;
the scheduler's tests check both agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from daris_ros.core.task import Priority


def task_utilization_eq3(mret: float, period: float) -> float:
    """Eq. 3: ``u_i(t) = mret_i(t) / T_i``."""
    return mret / period


def task_utilization_eq10(afet: float, mret: float | None, period: float) -> float:
    """Eq. 10: ``afet_i / T_i`` before any measurement (``mret is None``), eq. 3 afterwards."""
    return (afet if mret is None else mret) / period


class TaskLoad(NamedTuple):
    """One term of the context sums: a task's (or active task's) context, priority and u_i."""

    context: int
    priority: Priority
    utilization: float


def hp_utilization_eq4(loads: Iterable[TaskLoad], k: int) -> float:
    """Eq. 4: ``U^{h,t}_k = sum of u_i over HP tasks with ctx_i = k``."""
    return math.fsum(x.utilization for x in loads if x.context == k and x.priority is Priority.HP)


def lp_utilization_eq5(loads: Iterable[TaskLoad], k: int) -> float:
    """Eq. 5: ``U^{l,t}_k = sum of u_i over LP tasks with ctx_i = k``."""
    return math.fsum(x.utilization for x in loads if x.context == k and x.priority is Priority.LP)


def total_utilization_eq6(hp_total: float, lp_total: float) -> float:
    """Eq. 6: ``U^t_k = U^{h,t}_k + U^{l,t}_k``."""
    return hp_total + lp_total


def active_lp_utilization(active_loads: Iterable[TaskLoad], k: int) -> float:
    """``U^{l,a}_k``: sum of u_i over LP tasks with a released-but-unfinished job in context k.

    ``active_loads`` has one entry per (task, context) pair in which the task has at least one
    unfinished job.
    """
    return lp_utilization_eq5(active_loads, k)


def active_utilization_eq7(hp_total: float, lp_active: float) -> float:
    """Eq. 7: ``U^a_k = U^{h,t}_k + U^{l,a}_k``."""
    return hp_total + lp_active


@dataclass(frozen=True, slots=True)
class ContextUtilization:
    """Eqs. 4-7 for one context.

    ``active_hp`` is the utilization of HP tasks with an unfinished job in the context; under HPA an
    HP job counts until max(finish, absolute deadline) (see docs/policy.md). HPA tests against it.
    """

    total: float
    hp: float
    lp: float
    active_lp: float
    active_hp: float = 0.0

    @property
    def active(self) -> float:
        """Eq. 7."""
        return active_utilization_eq7(self.hp, self.active_lp)


class UtilizationBook:
    """Running sums of eqs. 4, 5 and of the active HP/LP utilization, per context.

    Members are kept per (context, priority) so that sums can be recomputed exactly: a sum is reset
    to exactly 0.0 when its member set becomes empty, and every ``resync_every`` updates all sums are
    recomputed with ``math.fsum`` to cancel floating-point drift.
    """

    __slots__ = ("_active", "_n", "_ops", "_resync_every", "_sum_active", "_sum_total", "_total")

    def __init__(self, n_contexts: int, resync_every: int = 4096) -> None:
        self._n = n_contexts
        # index: 2 * context + priority
        self._total: list[dict[str, float]] = [{} for _ in range(2 * n_contexts)]
        self._active: list[dict[str, float]] = [{} for _ in range(2 * n_contexts)]
        self._sum_total: list[float] = [0.0] * (2 * n_contexts)
        self._sum_active: list[float] = [0.0] * (2 * n_contexts)
        self._ops = 0
        self._resync_every = resync_every

    @property
    def n_contexts(self) -> int:
        return self._n

    def _tick(self) -> None:
        self._ops += 1
        if self._ops >= self._resync_every:
            self.resync()

    def resync(self) -> None:
        """Recompute every running sum exactly from its members."""
        self._ops = 0
        for i in range(2 * self._n):
            self._sum_total[i] = math.fsum(self._total[i].values())
            self._sum_active[i] = math.fsum(self._active[i].values())

    @staticmethod
    def _put(members: dict[str, float], sums: list[float], i: int, name: str, u: float) -> None:
        old = members.get(name)
        members[name] = u
        sums[i] += u if old is None else u - old

    @staticmethod
    def _pop(members: dict[str, float], sums: list[float], i: int, name: str) -> None:
        old = members.pop(name, None)
        if old is None:
            return
        sums[i] = 0.0 if not members else sums[i] - old

    # --- task membership (eqs. 4-5) -------------------------------------------------
    def add_task(self, name: str, context: int, priority: Priority, u: float) -> None:
        i = 2 * context + priority
        self._put(self._total[i], self._sum_total, i, name, u)
        self._tick()

    def remove_task(self, name: str, context: int, priority: Priority) -> None:
        i = 2 * context + priority
        self._pop(self._total[i], self._sum_total, i, name)
        self._tick()

    # --- active membership (eq. 7 and HPA) --------------------------------------------
    def activate(self, name: str, context: int, priority: Priority, u: float) -> None:
        i = 2 * context + priority
        self._put(self._active[i], self._sum_active, i, name, u)
        self._tick()

    def deactivate(self, name: str, context: int, priority: Priority) -> None:
        i = 2 * context + priority
        self._pop(self._active[i], self._sum_active, i, name)
        self._tick()

    def is_active(self, name: str, context: int, priority: Priority) -> bool:
        return name in self._active[2 * context + priority]

    # --- queries -------------------------------------------------------------------------
    def hp(self, k: int) -> float:
        return self._sum_total[2 * k]

    def lp(self, k: int) -> float:
        return self._sum_total[2 * k + 1]

    def active_hp(self, k: int) -> float:
        return self._sum_active[2 * k]

    def active_lp(self, k: int) -> float:
        return self._sum_active[2 * k + 1]

    def total(self, k: int) -> float:
        return total_utilization_eq6(self._sum_total[2 * k], self._sum_total[2 * k + 1])

    def context(self, k: int) -> ContextUtilization:
        hp, lp = self._sum_total[2 * k], self._sum_total[2 * k + 1]
        return ContextUtilization(
            total=total_utilization_eq6(hp, lp),
            hp=hp,
            lp=lp,
            active_lp=self._sum_active[2 * k + 1],
            active_hp=self._sum_active[2 * k],
        )

    def loads(self) -> list[TaskLoad]:
        """Membership as TaskLoad terms (input for eqs. 4-5)."""
        return [
            TaskLoad(i // 2, Priority(i % 2), u)
            for i, members in enumerate(self._total)
            for u in members.values()
        ]

    def active_loads(self) -> list[TaskLoad]:
        return [
            TaskLoad(i // 2, Priority(i % 2), u)
            for i, members in enumerate(self._active)
            for u in members.values()
        ]
