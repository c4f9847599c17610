"""Feasibility of a task set per context, from the utilization of section III-B3 and eq. 11.

After the offline phase (Algorithm 1 on eq. 10's ``u_i = afet_i / T_i``) every task has a context and a
utilization; online, eq. 3's ``u_i = mret_i / T_i`` replaces it. This module reads those figures and says,
per context k:

- ``U^{h,t}_k`` (eq. 4): the HP utilization. HP tasks have no admission test (section IV-B1; HPA aside), so
  the HP work of a context must fit its streams: a context of ``N_s`` streams runs at most ``N_s`` units of
  utilization (eq. 11 takes ``N_s`` as the context's capacity: ``U^r_k = N_s - U^{h,t}_k``). **The bound is
  ``N_s`` per context** (1 per stream; with policy MPS, N_s = 1, so 1 per context). ``U^{h,t}_k > N_s`` means
  the HP jobs of context k fall behind without bound: infeasible.
- Beyond the paper, a necessary condition per HP task: a job cannot finish before its execution time, so an HP
  task whose ``mret_i`` (AFET at start-up) exceeds its relative deadline ``D_i`` misses every job, whatever the
  context's load. Such a task makes the set infeasible too.
- ``U^{l,t}_k`` (eq. 5): the LP utilization, and the LP share left, eq. 11's remaining utilization
  ``U^r_k = N_s - U^{h,t}_k`` (negative when HP alone over-subscribes the context).
- The expected LP rejection rate when LP is over-subscribed (``U^{l,t}_k > U^r_k``). Eq. 12 admits an LP job
  only while ``U^{l,a}_k + u_j < U^r_k``, so in the long run the LP utilization admitted in context k is at most
  ``max(U^r_k, 0)``; of the demand ``U^{l,t}_k`` the share ``1 - max(U^r_k, 0) / U^{l,t}_k`` is rejected. This
  is a utilization-weighted estimate (rejections weighted by u_j, short LP tasks being rejected as often as long
  ones), without migration. With migration (section IV-B1) LP jobs go to contexts with room, so the node-wide
  figure :attr:`FeasibilityReport.lp_expected_rejection` pools the contexts:
  ``1 - sum_k max(U^r_k, 0) / sum_k U^{l,t}_k`` (0 when that is negative).

Pure: no clock, no ROS, no torch. :func:`check_feasibility` takes plain figures; :func:`feasibility_of` reads
them from a :class:`~daris_ros.core.scheduler.Scheduler`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daris_ros.core.admission import remaining_utilization_eq11
from daris_ros.core.task import Priority
from daris_ros.core.utilization import TaskLoad, hp_utilization_eq4, lp_utilization_eq5

if TYPE_CHECKING:
    from daris_ros.core.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class TaskShare:
    """One task's term in its context's sums: u_i (eq. 3, eq. 10 before any measurement) and what makes it."""

    name: str
    priority: Priority
    context: int
    utilization: float  # u_i = mret_i / T_i
    mret: float  # mret_i (eq. 2; the AFET before any measurement)
    period: float  # T_i
    deadline: float  # D_i

    @property
    def exceeds_deadline(self) -> bool:
        """``mret_i > D_i``: no job of this task can meet its deadline, whatever else runs."""
        return self.mret > self.deadline

    def describe(self) -> str:
        """``front (u=1.35: 135.0 ms every 100.0 ms)``."""
        return f"{self.name} (u={self.utilization:.2f}: {self.mret * 1e3:.1f} ms every {self.period * 1e3:.1f} ms)"


@dataclass(frozen=True, slots=True)
class ContextFeasibility:
    """Feasibility figures of one context."""

    context: int
    n_streams: int  # N_s: the context's capacity in eq. 11
    hp_tasks: tuple[TaskShare, ...]
    lp_tasks: tuple[TaskShare, ...]
    hp_utilization: float  # U^{h,t}_k, eq. 4
    lp_utilization: float  # U^{l,t}_k, eq. 5

    @property
    def lp_left(self) -> float:
        """Eq. 11: ``U^r_k = N_s - U^{h,t}_k``, the utilization left to LP tasks (negative: HP over capacity)."""
        return remaining_utilization_eq11(self.n_streams, self.hp_utilization)

    @property
    def hp_over_capacity(self) -> bool:
        """``U^{h,t}_k > N_s``: HP work alone exceeds the context's streams."""
        return self.hp_utilization > self.n_streams

    @property
    def hp_late_tasks(self) -> tuple[TaskShare, ...]:
        """HP tasks with ``mret_i > D_i`` (each misses every job)."""
        return tuple(t for t in self.hp_tasks if t.exceeds_deadline)

    @property
    def hp_feasible(self) -> bool:
        return not self.hp_over_capacity and not self.hp_late_tasks

    @property
    def lp_oversubscribed(self) -> bool:
        """``U^{l,t}_k > max(U^r_k, 0)``: eq. 12 cannot admit all of the context's LP demand (never without LP)."""
        return self.lp_utilization > max(self.lp_left, 0.0)

    @property
    def lp_expected_rejection(self) -> float:
        """Share of the LP demand eq. 12 rejects in this context without migration:
        ``1 - max(U^r_k, 0) / U^{l,t}_k`` when over-subscribed, else 0."""
        return expected_rejection(self.lp_utilization, self.lp_left)

    @property
    def tasks(self) -> tuple[TaskShare, ...]:
        return self.hp_tasks + self.lp_tasks

    def describe(self) -> str:
        """One line: ``context 0 (N_s = 1): HP 0.45 [front (u=...)], LP 0.30 of 0.55 left [rear (u=...)]``."""
        hp = ", ".join(t.describe() for t in self.hp_tasks) or "none"
        lp = ", ".join(t.describe() for t in self.lp_tasks) or "none"
        line = (f"context {self.context} (N_s = {self.n_streams}): HP utilization {self.hp_utilization:.2f} "
                f"[{hp}]; LP utilization {self.lp_utilization:.2f} of {self.lp_left:.2f} left [{lp}]")
        if self.lp_oversubscribed:
            line += f"; expected LP rejection {self.lp_expected_rejection:.0%}"
        return line

    def hp_problem(self) -> str:
        """Why HP does not fit this context ('' when it does): the figures and the tasks."""
        parts = []
        if self.hp_over_capacity:
            parts.append(f"context {self.context}: HP utilization {self.hp_utilization:.2f} > {self.n_streams} "
                         f"(N_s = {self.n_streams}): tasks " + ", ".join(t.describe() for t in self.hp_tasks))
        for t in self.hp_late_tasks:
            parts.append(f"context {self.context}: HP task {t.name}: execution time {t.mret * 1e3:.1f} ms > "
                         f"deadline {t.deadline * 1e3:.1f} ms")
        return "; ".join(parts)

    def lp_problem(self) -> str:
        """The LP over-subscription of this context ('' when none)."""
        if not self.lp_oversubscribed:
            return ""
        return (f"context {self.context}: LP utilization {self.lp_utilization:.2f} > {max(self.lp_left, 0.0):.2f} "
                f"left (eq. 11: N_s {self.n_streams} - HP {self.hp_utilization:.2f}): expected LP rejection "
                f"{self.lp_expected_rejection:.0%} without migration; tasks "
                + ", ".join(t.describe() for t in self.lp_tasks))


def expected_rejection(lp_utilization: float, lp_left: float) -> float:
    """``1 - max(U^r, 0) / U^l`` when ``U^l > max(U^r, 0)``, else 0 (no LP demand: 0)."""
    room = max(lp_left, 0.0)
    if lp_utilization <= room or lp_utilization <= 0.0:
        return 0.0
    return 1.0 - room / lp_utilization


@dataclass(frozen=True, slots=True)
class FeasibilityReport:
    """Per-context feasibility figures (:class:`ContextFeasibility`) of one task set."""

    contexts: tuple[ContextFeasibility, ...]

    @property
    def feasible(self) -> bool:
        """Every context carries its HP tasks (``U^{h,t}_k <= N_s``, and no HP task with ``mret_i > D_i``)."""
        return all(c.hp_feasible for c in self.contexts)

    @property
    def lp_oversubscribed(self) -> bool:
        """Some context with LP demand over its share left (eq. 11)."""
        return any(c.lp_oversubscribed for c in self.contexts)

    @property
    def lp_expected_rejection(self) -> float:
        """Node-wide, with migration: ``1 - sum_k max(U^r_k, 0) / sum_k U^{l,t}_k`` (0 when that is < 0)."""
        demand = math.fsum(c.lp_utilization for c in self.contexts)
        room = math.fsum(max(c.lp_left, 0.0) for c in self.contexts)
        return expected_rejection(demand, room)

    def hp_problems(self) -> str:
        """Every HP problem, one clause per context or task ('' when feasible)."""
        return "; ".join(p for c in self.contexts if (p := c.hp_problem()))

    def lp_problems(self) -> str:
        """Every LP over-subscription, with the node-wide rate after migration ('' when none)."""
        parts = [p for c in self.contexts if (p := c.lp_problem())]
        if not parts:
            return ""
        return "; ".join(parts) + (f" (with migration to contexts with room: {self.lp_expected_rejection:.0%} "
                                   "of the node's LP demand)")

    def lines(self) -> list[str]:
        """One line per context (:meth:`ContextFeasibility.describe`)."""
        return [c.describe() for c in self.contexts]


class InfeasibleTaskSet(Exception):
    """The HP tasks do not fit (:attr:`FeasibilityReport.feasible` is False); the message names the contexts, the
    tasks and the figures (:meth:`FeasibilityReport.hp_problems`)."""

    def __init__(self, report: FeasibilityReport) -> None:
        super().__init__(report.hp_problems())
        self.report = report


def check_feasibility(tasks: Iterable[TaskShare], n_contexts: int, n_streams: int) -> FeasibilityReport:
    """The feasibility report of ``tasks`` placed on ``n_contexts`` contexts of ``n_streams`` streams each.

    Per context k: eq. 4 (HP utilization), eq. 5 (LP utilization), eq. 11 (LP share left), the expected LP
    rejection rate, and the tasks with their u_i (in the given order).
    """
    if n_contexts < 1 or n_streams < 1:
        raise ValueError(f"need n_contexts >= 1 and n_streams >= 1, got {n_contexts} x {n_streams}")
    shares = list(tasks)
    for t in shares:
        if not 0 <= t.context < n_contexts:
            raise ValueError(f"task {t.name}: context {t.context} outside 0..{n_contexts - 1}")
    loads = [TaskLoad(t.context, t.priority, t.utilization) for t in shares]
    return FeasibilityReport(tuple(
        ContextFeasibility(
            context=k, n_streams=n_streams,
            hp_tasks=tuple(t for t in shares if t.context == k and t.priority is Priority.HP),
            lp_tasks=tuple(t for t in shares if t.context == k and t.priority is Priority.LP),
            hp_utilization=hp_utilization_eq4(loads, k),
            lp_utilization=lp_utilization_eq5(loads, k),
        )
        for k in range(n_contexts)
    ))


def feasibility_of(core: Scheduler) -> FeasibilityReport:
    """:func:`check_feasibility` on the core's current state: each task's context ``ctx_i(t)``, u_i (eq. 10 right
    after the offline phase, eq. 3 once measured), mret_i, T_i and D_i, on the effective layout (N_c x N_s).

    Call it where the core may be read (before its loop runs, or inside ``Engine.call``)."""
    shares = []
    for spec in core.tasks():
        name = spec.name
        shares.append(TaskShare(name=name, priority=spec.priority, context=core.context_of(name),
                                utilization=core.task_utilization(name), mret=core.mret(name),
                                period=spec.period, deadline=spec.relative_deadline))
    layout = core.layout
    return check_feasibility(shares, layout.n_contexts, layout.n_streams)
