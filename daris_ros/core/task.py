"""Task model of section III-A: tau_i(T_i, D_i, mret_i(t), p_i, ctx_i(t)).

A task is a periodic DNN with ``n_i`` sequential stages. This module holds the static description
(:class:`TaskSpec`) and the two priority classes (:class:`Priority`). The time-varying parts of the
tuple (``mret_i(t)`` and ``ctx_i(t)``) live in the scheduler's per-task state.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Priority(enum.IntEnum):
    """Task priority p_i. HP ranks first (smaller value = more important)."""

    HP = 0
    LP = 1

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """Accept ``Priority``, ``"HP"``/``"LP"`` (any case) or ``0``/``1``."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError as exc:
                raise ValueError(f"unknown priority {value!r}; expected 'HP' or 'LP'") from exc
        return cls(int(value))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Static description of task tau_i.

    ``afet`` is the per-stage Average Full-load Execution Time (section IV-A1), used as the MRET of a
    stage until that stage has been measured at least once (eq. 10).
    """

    name: str
    period: float
    priority: Priority
    n_stages: int
    afet: tuple[float, ...]
    deadline: float | None = None
    model: str = ""
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("task name must be non-empty")
        if not (isinstance(self.period, (int, float)) and math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"{self.name}: period must be a finite number > 0, got {self.period!r}")
        object.__setattr__(self, "priority", Priority.parse(self.priority))
        if not isinstance(self.n_stages, int) or self.n_stages < 1:
            raise ValueError(f"{self.name}: n_stages must be an int >= 1, got {self.n_stages!r}")
        afet = tuple(float(a) for a in self.afet)
        if len(afet) != self.n_stages:
            raise ValueError(f"{self.name}: len(afet)={len(afet)} != n_stages={self.n_stages}")
        if any(not math.isfinite(a) or a < 0 for a in afet):
            raise ValueError(f"{self.name}: afet values must be finite and >= 0, got {afet}")
        object.__setattr__(self, "afet", afet)
        if self.deadline is not None and not (math.isfinite(self.deadline) and self.deadline > 0):
            raise ValueError(f"{self.name}: deadline must be > 0 or None, got {self.deadline!r}")
        if not math.isfinite(self.phase) or self.phase < 0:
            raise ValueError(f"{self.name}: phase must be finite and >= 0, got {self.phase!r}")

    @property
    def relative_deadline(self) -> float:
        """D_i: the configured deadline, or T_i when none is configured (section III-A)."""
        return self.period if self.deadline is None else self.deadline
