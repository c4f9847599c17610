"""Maximum Recent Execution Time, section III-B2 (eqs. 1-2) with the AFET start value (eq. 10).

``mret_{i,j}(t)`` is the maximum of the last ``ws`` measured execution times of stage j of task i
(eq. 1); ``mret_i(t)`` sums the stages (eq. 2). Before a stage has any measurement its MRET is its
AFET (section IV-A1), so eq. 3 turns into eq. 10 at t = 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence


def mret_stage_eq1(history: Iterable[float], ws: int, afet: float | None = None) -> float:
    """Eq. 1: ``mret_{i,j}(t) = max_{p in {t-ws..t-1}} et_{i,j}(p)``.

    ``history`` holds the measured execution times of one stage, oldest first. Only the last ``ws``
    count. With no measurement yet the AFET is returned (eq. 10); with neither, a ValueError.
    """
    if ws < 1:
        raise ValueError(f"window size ws must be >= 1, got {ws}")
    recent = deque(history, maxlen=ws)
    if recent:
        return max(recent)
    if afet is None:
        raise ValueError("no execution-time history and no AFET to fall back on")
    return afet


def mret_task_eq2(stage_mrets: Iterable[float]) -> float:
    """Eq. 2: ``mret_i(t) = sum_{1<=j<=n_i} mret_{i,j}(t)``."""
    return sum(stage_mrets)


class MretTracker:
    """Per-task MRET state: one window of ``ws`` execution times per stage.

    ``record`` is O(ws); the task MRET (eq. 2) is kept up to date and recomputed only when a stage
    MRET actually changes.
    """

    __slots__ = ("_afet", "_stage", "_total", "_windows", "_ws")

    def __init__(self, afet: Sequence[float], ws: int) -> None:
        if ws < 1:
            raise ValueError(f"window size ws must be >= 1, got {ws}")
        if len(afet) < 1:
            raise ValueError("a task needs at least one stage")
        self._afet: tuple[float, ...] = tuple(float(a) for a in afet)
        self._ws = ws
        self._windows: list[deque[float]] = [deque(maxlen=ws) for _ in self._afet]
        self._stage: list[float] = list(self._afet)
        self._total: float = mret_task_eq2(self._stage)

    @property
    def ws(self) -> int:
        return self._ws

    @property
    def n_stages(self) -> int:
        return len(self._afet)

    @property
    def afet(self) -> tuple[float, ...]:
        return self._afet

    @property
    def total(self) -> float:
        """Eq. 2 for this task at the current time."""
        return self._total

    def stage(self, j: int) -> float:
        """Eq. 1 for stage j (AFET until stage j has been measured)."""
        return self._stage[j]

    def stages(self) -> tuple[float, ...]:
        return tuple(self._stage)

    def history(self, j: int) -> tuple[float, ...]:
        return tuple(self._windows[j])

    def has_history(self, j: int) -> bool:
        return bool(self._windows[j])

    def record(self, j: int, et: float) -> bool:
        """Add a measured execution time of stage j; return True when mret_i changed."""
        if et < 0:
            raise ValueError(f"execution time must be >= 0, got {et}")
        window = self._windows[j]
        window.append(et)
        new = max(window)
        if new == self._stage[j]:
            return False
        self._stage[j] = new
        self._total = mret_task_eq2(self._stage)
        return True

    def measured(self) -> tuple[bool, ...]:
        """Per stage: whether eq. 1 comes from measurements (True) or still from the AFET (False)."""
        return tuple(bool(w) for w in self._windows)

    def set_afet(self, afet: Sequence[float]) -> bool:
        """Replace the initial estimate. Only stages without measurements use it; return True when mret_i
        changed. (A task that is never admitted never measures itself; see Scheduler.refresh_afet.)"""
        if len(afet) != len(self._afet):
            raise ValueError(f"expected {len(self._afet)} AFET values, got {len(afet)}")
        if any(a < 0 for a in afet):
            raise ValueError(f"AFET values must be >= 0, got {tuple(afet)}")
        self._afet = tuple(float(a) for a in afet)
        old_total = self._total
        self._stage = [max(w) if w else a for w, a in zip(self._windows, self._afet, strict=True)]
        self._total = mret_task_eq2(self._stage)
        return self._total != old_total

    def forget(self) -> bool:
        """Drop every measurement: each stage is back at its AFET (eq. 10) until it is measured again.
        Return True when mret_i changed. (Used to re-probe a task rejected on stale measurements.)"""
        for w in self._windows:
            w.clear()
        old_total = self._total
        self._stage = list(self._afet)
        self._total = mret_task_eq2(self._stage)
        return self._total != old_total

    def set_window(self, ws: int) -> bool:
        """Change ws, keeping the most recent ``ws`` measurements; return True when mret_i changed."""
        if ws < 1:
            raise ValueError(f"window size ws must be >= 1, got {ws}")
        self._ws = ws
        old_total = self._total
        self._windows = [deque(w, maxlen=ws) for w in self._windows]
        self._stage = [max(w) if w else a for w, a in zip(self._windows, self._afet, strict=True)]
        self._total = mret_task_eq2(self._stage)
        return self._total != old_total
