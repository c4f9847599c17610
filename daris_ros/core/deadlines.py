"""Virtual deadlines, section III-B4 (eq. 8), and their accumulation along a job."""

from __future__ import annotations

from collections.abc import Sequence


def virtual_deadline_eq8(stage_mret: float, task_mret: float, deadline: float, n_stages: int = 1) -> float:
    """Eq. 8: ``D_{i,j}(t) = mret_{i,j}(t) / mret_i(t) * D_i``.

    When ``mret_i`` is 0 (no work estimated at all) the deadline is split evenly over ``n_stages``.
    """
    if task_mret <= 0.0:
        return deadline / n_stages
    return stage_mret / task_mret * deadline


def absolute_stage_deadlines(
    release: float, stage_mrets: Sequence[float], deadline: float
) -> tuple[float, ...]:
    """Absolute virtual deadline of every stage of a job released at ``release``.

    Stage j's deadline is ``release + sum_{m<=j} D_{i,m}`` (eq. 8 accumulated along the job). It is
    computed from the cumulative MRET so that rounding cannot drift, and the last entry is exactly
    ``release + D_i``.
    """
    n = len(stage_mrets)
    if n == 0:
        raise ValueError("a job needs at least one stage")
    total = sum(stage_mrets)
    out: list[float] = []
    cum = 0.0
    for j, m in enumerate(stage_mrets):
        if j == n - 1:
            out.append(release + deadline)
            break
        cum += m
        share = cum / total if total > 0.0 else (j + 1) / n
        out.append(release + share * deadline)
    return tuple(out)
