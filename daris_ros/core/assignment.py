"""Offline phase, section IV-A2: Algorithm 1 (initial context assignment)."""

from __future__ import annotations

from collections.abc import Sequence

from daris_ros.core.task import Priority


def min_util_context(context_utils: Sequence[float]) -> int:
    """``minUtil(pool)``: the context with the smallest total utilization; ties go to the lowest index."""
    if not context_utils:
        raise ValueError("empty context pool")
    best = 0
    for k in range(1, len(context_utils)):
        if context_utils[k] < context_utils[best]:
            best = k
    return best


def populate_contexts_alg1(
    tasks: Sequence[tuple[str, Priority, float]],
    n_contexts: int,
    initial_utils: Sequence[float] | None = None,
) -> dict[str, int]:
    """Algorithm 1 (POPULATECONTEXTS): HP tasks first, then LP, each to ``minUtil(pool)``.

    ``tasks`` are ``(name, priority, u_i)`` with u_i from eq. 10 (AFET / T_i); within each class the
    given order is kept (lines 3 and 8 iterate the task lists as given). Each placement adds u_i to
    the chosen context's total utilization (lines 6 and 11). Returns ``{name: context}``.
    """
    if n_contexts < 1:
        raise ValueError("n_contexts must be >= 1")
    pool = list(initial_utils) if initial_utils is not None else [0.0] * n_contexts
    if len(pool) != n_contexts:
        raise ValueError("initial_utils must have n_contexts entries")
    out: dict[str, int] = {}
    for wanted in (Priority.HP, Priority.LP):  # lines 3-7, then lines 8-12
        for name, priority, u in tasks:
            if priority is not wanted:
                continue
            if name in out:
                raise ValueError(f"duplicate task name {name!r}")
            ctx = min_util_context(pool)  # lines 4 / 9
            out[name] = ctx  # lines 5 / 10
            pool[ctx] += u  # lines 6 / 11
    return out
