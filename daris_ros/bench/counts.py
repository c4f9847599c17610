"""Per-priority counters of a bench run, read from the policy core at its end."""

from __future__ import annotations

from typing import Any

from daris_ros.core import Priority, percentile

COUNTERS = ("released", "admitted", "completed", "missed")


def priority_counts(core: Any) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """``({counter: {"HP": n, "LP": n}}, {"HP": p99 ms, "LP": p99 ms})`` of ``core.priority_stats()``."""
    stats = core.priority_stats()
    out: dict[str, dict[str, int]] = {c: {} for c in COUNTERS}
    p99: dict[str, float] = {}
    for p in Priority:
        s = stats[p]
        for c in COUNTERS:
            out[c][p.name] = getattr(s, c)
        rts = list(s.response_times)
        p99[p.name] = percentile(rts, 99) * 1e3 if rts else 0.0
    return out, p99
