"""Metrics table and JSON export for a simulation result."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

from daris_ros.core import Priority, PriorityStats, TaskStats
from daris_ros.core.accounting import Counters
from daris_ros.sim.engine import SimResult

_COLUMNS = ("class", "released", "admitted", "rejected", "completed", "missed", "skipped", "DMR%", "migr",
            "p50 ms", "p99 ms", "max ms")


def combine(stats: Iterable[Counters]) -> PriorityStats:
    """Sum counters (and concatenate response times) of several stats objects."""
    out = PriorityStats(response_times=array("d"))
    for s in stats:
        out.released += s.released
        out.admitted += s.admitted
        out.rejected += s.rejected
        out.completed += s.completed
        out.missed += s.missed
        out.skipped += s.skipped
        out.rejected_host += s.rejected_host
        out.migrations += s.migrations
        out.response_times.extend(s.response_times)
    return out


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1e3:.2f}"


def _row(label: str, s: Counters) -> list[str]:
    return [label, str(s.released), str(s.admitted), str(s.rejected), str(s.completed), str(s.missed),
            str(s.skipped), f"{100.0 * s.dmr:.2f}", str(s.migrations), _ms(s.p50), _ms(s.p99), _ms(s.max_response)]


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(result: SimResult, per_task: bool = False) -> str:
    """Human-readable summary: one row per priority and a total, optionally one row per task."""
    lay = result.layout
    head = (
        f"scenario {result.scenario}  seed {result.seed}  tasks {result.n_tasks}  "
        f"layout {lay.n_contexts}x{lay.n_streams}_OS{lay.oversubscription:g}  "
        f"SM/ctx {result.sm_per_context}  "
        f"simulated {result.duration:g} s (drained at {result.end_time:.3f} s)"
    )
    rows = [list(_COLUMNS)]
    for p in Priority:
        rows.append(_row(p.name, result.priority_stats[p]))
    rows.append(_row("ALL", combine(result.priority_stats.values())))
    if per_task:
        for name in sorted(result.task_stats):
            ts = result.task_stats[name]
            rows.append(_row(f"{name} ({ts.priority.name})", ts))
    tail = f"throughput {result.jps:.1f} JPS  events {result.events}  dispatches {result.dispatches}"
    return "\n".join([head, _render(rows), tail])


def stats_to_dict(s: Counters) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        "released": s.released,
        "admitted": s.admitted,
        "rejected": s.rejected,
        "completed": s.completed,
        "missed": s.missed,
        "skipped": s.skipped,  # skip_late: admitted, never started (the DMR counts them with the missed)
        "migrations": s.migrations,
        "dmr": s.dmr,
        "response_p50": num(s.p50),
        "response_p99": num(s.p99),
        "response_max": num(s.max_response),
        "response_mean": num(s.mean_response),
    }


def result_to_dict(result: SimResult, per_task: bool = True) -> dict[str, Any]:
    """JSON-ready summary (times in seconds)."""
    lay = result.layout
    out: dict[str, Any] = {
        "scenario": result.scenario,
        "seed": result.seed,
        "duration": result.duration,
        "end_time": result.end_time,
        "layout": {"n_contexts": lay.n_contexts, "n_streams": lay.n_streams,
                   "oversubscription": lay.oversubscription, "sm_per_context": result.sm_per_context},
        "n_tasks": result.n_tasks,
        "jps": result.jps,
        "events": result.events,
        "dispatches": result.dispatches,
        "priority": {p.name: stats_to_dict(result.priority_stats[p]) for p in Priority},
        "all": stats_to_dict(combine(result.priority_stats.values())),
    }
    if per_task:
        tasks: dict[str, Any] = {}
        for name, ts in sorted(result.task_stats.items()):
            entry: dict[str, Any] = {"priority": ts.priority.name}
            entry.update(stats_to_dict(ts))
            tasks[name] = entry
        out["tasks"] = tasks
    return out


def task_rows(result: SimResult) -> list[tuple[str, TaskStats]]:
    return sorted(result.task_stats.items())
