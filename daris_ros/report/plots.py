"""Report figures (PNG, matplotlib's Agg canvas; no pyplot, no display needed).

- :func:`plot_mret` - like the paper's Figure 9: per task, the measured execution time of every job
  and the task's MRET at its release, over time (missed jobs marked);
- :func:`plot_stage_exec` - per task, the execution time of each stage over time;
- :func:`plot_timeline` - Gantt chart of stage executions, one row per (context, stream), coloured by
  task; absolute time = ``release_time`` + the StageRecord's start/finish (relative to the release);
- :func:`plot_response_cdf` - response-time CDF per priority (and per task, thin).

Times on the x axes are seconds since the run's first release (``t0_ns``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .extract import ResultRecord

MISSED_COLOR = "#d62728"
PRIORITY_COLORS = {"HP": "#1f77b4", "LP": "#ff7f0e", "all": "#444444"}
DPI = 100


#: task colours: tab10 without the two used for the priorities
TASK_PALETTE = ("C2", "C4", "C3", "C5", "C6", "C8", "C9", "C7", "C0", "C1")


def _task_colors(tasks: Sequence[str]) -> dict[str, str]:
    return {t: TASK_PALETTE[i % len(TASK_PALETTE)] for i, t in enumerate(tasks)}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _empty(path: Path, title: str) -> Path:
    fig = Figure(figsize=(6, 2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{title}: no results", ha="center", va="center")
    return _save(fig, path)


def _rel(ns: int, t0_ns: int) -> float:
    return (ns - t0_ns) * 1e-9


def plot_mret(results: Mapping[str, Sequence[ResultRecord]], t0_ns: int | None, path: Path) -> Path:
    """Per task: execution time per job (dots; missed jobs as red crosses) and MRET at release (line)."""
    tasks = [t for t, rows in results.items() if rows]
    if not tasks or t0_ns is None:
        return _empty(path, "MRET vs execution time")
    fig = Figure(figsize=(9, 1.0 + 2.2 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 1, sharex=True, squeeze=False)[:, 0]
    for ax, task in zip(axes, tasks, strict=True):
        rows = sorted(results[task], key=lambda r: r.release_ns)
        x = np.array([_rel(r.release_ns, t0_ns) for r in rows])
        exec_ms = np.array([r.exec_time * 1e3 for r in rows])
        mret_ms = np.array([r.mret * 1e3 for r in rows])
        missed = np.array([not r.met for r in rows])
        ax.plot(x[~missed], exec_ms[~missed], ".", ms=4, color="C0", label="execution time")
        if missed.any():
            ax.plot(x[missed], exec_ms[missed], "x", ms=5, color=MISSED_COLOR, label="execution time (missed)")
        ax.step(x, mret_ms, where="post", color="C1", lw=1.5, label="MRET at release")
        ax.set_ylabel("ms")
        ax.set_title(f"{task} ({rows[0].priority}, {rows[0].model})", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="upper right", fontsize=8, ncols=3)
    axes[-1].set_xlabel("release time [s since first release]")
    return _save(fig, path)


def plot_stage_exec(results: Mapping[str, Sequence[ResultRecord]], t0_ns: int | None, path: Path) -> Path:
    """Per task: measured execution time of each stage (StageRecord.exec_time) per job over time."""
    tasks = [t for t, rows in results.items() if rows and any(r.stages for r in rows)]
    if not tasks or t0_ns is None:
        return _empty(path, "stage execution times")
    fig = Figure(figsize=(9, 1.0 + 2.0 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 1, sharex=True, squeeze=False)[:, 0]
    for ax, task in zip(axes, tasks, strict=True):
        rows = sorted(results[task], key=lambda r: r.release_ns)
        n_stages = max(len(r.stages) for r in rows)
        for j in range(n_stages):
            pts = [(_rel(r.release_ns, t0_ns), s.exec_time * 1e3) for r in rows for s in r.stages if s.stage == j]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, ".-", ms=3, lw=0.8, label=f"stage {j}")
        ax.set_ylabel("ms")
        ax.set_title(task, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=7, ncols=min(n_stages, 6))
    axes[-1].set_xlabel("release time [s since first release]")
    return _save(fig, path)


def plot_timeline(results: Mapping[str, Sequence[ResultRecord]], t0_ns: int | None, path: Path,
                  window: tuple[float, float] | None = None) -> Path:
    """Gantt chart of stage executions per (context, stream); ``window`` = (from, to) seconds since t0."""
    rows_all = [r for rows in results.values() for r in rows]
    if not rows_all or t0_ns is None:
        return _empty(path, "stage timeline")
    lanes = sorted({(s.context, s.stream) for r in rows_all for s in r.stages})
    lane_index = {lane: i for i, lane in enumerate(lanes)}
    colors = _task_colors(list(results))
    fig = Figure(figsize=(11, 1.2 + 0.55 * max(len(lanes), 2)), layout="constrained")
    ax = fig.add_subplot()
    for task, rows in results.items():
        bars: dict[int, list[tuple[float, float]]] = {}
        missed_bars: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            base = _rel(r.release_ns, t0_ns)
            for s in r.stages:
                start, width = base + s.start, max(s.finish - s.start, 1e-6)
                if window is not None and (start + width < window[0] or start > window[1]):
                    continue
                target = bars if r.met else missed_bars
                target.setdefault(lane_index[(s.context, s.stream)], []).append((start, width))
        for lane, spans in bars.items():  # thin white edges separate consecutive stages
            ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors=colors[task], edgecolor="white", lw=0.4)
        for lane, spans in missed_bars.items():
            ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors=colors[task], edgecolor=MISSED_COLOR, lw=1.0)
        ax.plot([], [], "s", color=colors[task], label=task)
    ax.plot([], [], "s", mfc="none", mec=MISSED_COLOR, label="missed job")
    ax.set_yticks(range(len(lanes)), [f"ctx {c} / stream {s}" for c, s in lanes])
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.invert_yaxis()
    if window is not None:
        ax.set_xlim(*window)
    ax.set_xlabel("time [s since first release]")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside upper right", fontsize=8, ncols=min(len(results) + 1, 6))
    return _save(fig, path)


def cdf_points(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their empirical CDF (k/n)."""
    xs = np.sort(np.asarray(values, dtype=float))
    return xs, np.arange(1, len(xs) + 1) / max(len(xs), 1)


def plot_response_cdf(results: Mapping[str, Sequence[ResultRecord]], path: Path,
                      deadlines: Mapping[str, float] | None = None) -> Path:
    """Response-time CDF per priority (thick) and per task (thin); task deadlines as dotted lines."""
    rows_all = [r for rows in results.values() for r in rows]
    if not rows_all:
        return _empty(path, "response time CDF")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _task_colors(list(results))
    for task, rows in results.items():
        if rows:
            xs, ys = cdf_points([r.response_time * 1e3 for r in rows])
            ax.step(xs, ys, where="post", lw=0.8, alpha=0.6, color=colors[task], label=f"{task} (n={len(rows)})")
    for prio in ("HP", "LP"):
        values = [r.response_time * 1e3 for r in rows_all if r.priority == prio]
        if values:
            xs, ys = cdf_points(values)
            ax.step(xs, ys, where="post", lw=2.2, color=PRIORITY_COLORS[prio], label=f"{prio} (n={len(values)})")
    for task, d in (deadlines or {}).items():
        if d > 0 and task in results:
            ax.axvline(d * 1e3, ls=":", lw=1, color=colors[task])
    ax.set_xlabel("response time [ms] (dotted: deadlines)")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
