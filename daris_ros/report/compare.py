"""Side-by-side comparison of two runs (two configurations replayed on the same bag).

``compare.md`` / ``compare.html``: the parameters that differ, then one row per (task or priority, metric)
with A, B and B - A; ``compare.json`` (schema ``daris_ros.compare/1``) the same rows with the numbers
exactly as in each run's ``report.json``; ``compare_bars.png`` (DMR, JPS, p99, rejected per task and
priority) and ``compare_cdf.png`` (response-time CDFs, A solid, B dashed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .extract import RunData
from .metrics import PRIORITIES, PriorityFigures, RunFigures, TaskFigures
from .plots import PRIORITY_COLORS, cdf_points
from .tables import Document, Image, Table, dump_json, fmt

SCHEMA = "daris_ros.compare/1"

#: (metric key in the rows, label, unit scale for display, digits, percent)
METRICS: tuple[tuple[str, str, float, int, bool], ...] = (
    ("released", "released", 1.0, 0, False),
    ("admitted", "admitted", 1.0, 0, False),
    ("rejected", "rejected", 1.0, 0, False),
    ("completed", "completed", 1.0, 0, False),
    ("missed", "missed", 1.0, 0, False),
    ("stale", "stale", 1.0, 0, False),
    ("dmr", "DMR", 1.0, 1, True),
    ("jps", "JPS", 1.0, 2, False),
    ("response_p50", "p50 ms", 1e3, 1, False),
    ("response_p99", "p99 ms", 1e3, 1, False),
    ("response_max", "max ms", 1e3, 1, False),
)


@dataclass(slots=True)
class Row:
    scope: str  # task name, "HP", "LP" or "all"
    kind: str  # "task" or "priority"
    metric: str
    a: float | int | None
    b: float | int | None

    @property
    def delta(self) -> float | int | None:
        if self.a is None or self.b is None:
            return None
        if isinstance(self.a, float) and math.isnan(self.a) or isinstance(self.b, float) and math.isnan(self.b):
            return None
        return self.b - self.a


@dataclass(slots=True)
class ComparisonFiles:
    out_dir: Path
    markdown: Path
    html: Path
    json: Path
    plots: dict[str, Path] = field(default_factory=dict)


def metric_values(f: TaskFigures | PriorityFigures) -> dict[str, float | int | None]:
    return {
        "released": f.released, "admitted": f.admitted, "rejected": f.rejected, "completed": f.completed,
        "missed": f.missed, "stale": f.stale, "dmr": f.dmr, "jps": f.jps, "response_p50": f.response.p50,
        "response_p99": f.response.p99, "response_max": f.response.max,
    }


def _scopes(a: RunFigures, b: RunFigures) -> list[tuple[str, str, TaskFigures | PriorityFigures | None,
                                                        TaskFigures | PriorityFigures | None]]:
    tasks = list(a.tasks) + [t for t in b.tasks if t not in a.tasks]
    out: list[tuple[str, str, Any, Any]] = [(t, "task", a.tasks.get(t), b.tasks.get(t)) for t in tasks]
    out += [(p, "priority", a.priorities[p], b.priorities[p]) for p in PRIORITIES]
    out.append(("all", "priority", a.totals, b.totals))
    return out


def comparison_rows(a: RunFigures, b: RunFigures) -> list[Row]:
    rows: list[Row] = []
    for scope, kind, fa, fb in _scopes(a, b):
        va = metric_values(fa) if fa is not None else {}
        vb = metric_values(fb) if fb is not None else {}
        rows += [Row(scope, kind, key, va.get(key), vb.get(key)) for key, *_ in METRICS]
    return rows


def parameter_diff(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """Parameters (flattened names) whose values differ between the two runs' parameter files."""
    a, b = dict(a or {}), dict(b or {})
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _parameters(fig: RunFigures) -> dict[str, Any] | None:
    return (fig.replay or {}).get("parameters")


def comparison_table(rows: list[Row], labels: tuple[str, str]) -> Table:
    spec = {key: (label, scale, digits, pct) for key, label, scale, digits, pct in METRICS}
    t = Table(["scope", "metric", labels[0], labels[1], f"{labels[1]} - {labels[0]}"])
    for r in rows:
        label, scale, digits, pct = spec[r.metric]

        def cell(v: Any, signed: bool = False, scale: float = scale, digits: int = digits,
                 pct: bool = pct) -> str:
            text = fmt(v, digits, scale, pct)
            return f"+{text}" if signed and text != "-" and not text.startswith("-") and v != 0 else text

        t.add(r.scope, label, cell(r.a), cell(r.b), cell(r.delta, signed=True))
    return t


SUMMARY_METRICS = ("completed", "rejected", "missed", "dmr", "jps", "response_p99")


def summary_table(rows: list[Row], labels: tuple[str, str]) -> Table:
    """One row per scope, ``A -> B`` per headline metric."""
    spec = {key: (label, scale, digits, pct) for key, label, scale, digits, pct in METRICS}
    t = Table(["scope", *(spec[m][0] for m in SUMMARY_METRICS)])
    by_scope: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_scope.setdefault(r.scope, {})[r.metric] = r
    for scope, metrics in by_scope.items():
        cells = []
        for m in SUMMARY_METRICS:
            _label, scale, digits, pct = spec[m]
            r = metrics[m]
            cells.append(f"{fmt(r.a, digits, scale, pct)} → {fmt(r.b, digits, scale, pct)}")
        t.add(scope, *cells)
    t.headers[0] = f"scope ({labels[0]} → {labels[1]})"
    return t


def plot_bars(rows: list[Row], labels: tuple[str, str], path: Path) -> Path:
    panels = (("dmr", "DMR [%]", 100.0), ("jps", "JPS", 1.0), ("response_p99", "p99 response [ms]", 1e3),
              ("rejected", "rejected jobs", 1.0))
    scopes = list(dict.fromkeys(r.scope for r in rows))
    fig = Figure(figsize=(max(8.0, 1.1 * len(scopes) * 2), 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    x = np.arange(len(scopes))
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        by_scope = {r.scope: r for r in rows if r.metric == key}
        for i, (label, attr) in enumerate(zip(labels, ("a", "b"), strict=True)):
            vals = [getattr(by_scope[s], attr) if s in by_scope else None for s in scopes]
            ys = [np.nan if v is None else float(v) * scale for v in vals]
            ax.bar(x + (i - 0.5) * 0.4, ys, width=0.4, label=label, color=f"C{i}")
        finite = [v for v in ax.containers for v in v.datavalues if np.isfinite(v)]
        ax.set_ylim(0, None if any(v > 0 for v in finite) else 1)
        ax.set_xticks(x, scopes, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_cdf(run_a: RunData, run_b: RunData, labels: tuple[str, str], path: Path) -> Path:
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for run, label, style in ((run_a, labels[0], "-"), (run_b, labels[1], "--")):
        rows = run.all_results()
        for prio in PRIORITIES:
            values = [r.response_time * 1e3 for r in rows if r.priority == prio]
            if values:
                xs, ys = cdf_points(values)
                ax.step(xs, ys, where="post", ls=style, lw=1.8, color=PRIORITY_COLORS[prio],
                        label=f"{label} {prio} (n={len(values)})")
                drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("response time [ms]")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_comparison(run_a: RunData, fig_a: RunFigures, run_b: RunData, fig_b: RunFigures, out_dir: Path | str,
                     labels: tuple[str, str] = ("A", "B"), reports: tuple[str, str] | None = None
                     ) -> tuple[list[Row], ComparisonFiles]:
    """Write compare.{md,html,json} and the two comparison figures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(fig_a, fig_b)
    params = parameter_diff(_parameters(fig_a), _parameters(fig_b))
    plot_files = {"bars": plot_bars(rows, labels, out / "compare_bars.png"),
                  "cdf": plot_cdf(run_a, run_b, labels, out / "compare_cdf.png")}
    doc = Document(f"daris_ros comparison: {labels[0]} vs {labels[1]}")
    for label, fig, report in zip(labels, (fig_a, fig_b), reports or (None, None), strict=True):
        c = fig.config
        desc = (f"policy {c.get('policy')}, N_c = {c.get('n_contexts')}, N_s = {c.get('n_streams')}, "
                f"OS = {c.get('oversubscription')}") if c else "no stats"
        cfg = (fig.replay or {}).get("config")
        checks = "checks ok" if fig.ok else "some checks FAILED"
        doc.intro.append(f"{label}: `{fig.bag}`" + (f" (config `{cfg}`)" if cfg else "") + f"; {desc}; "
                         f"window {fig.window_s:.2f} s; {checks}" + (f"; report {report}" if report else "") + ".")
    inputs = {(fig.replay or {}).get("input_bag") for fig in (fig_a, fig_b)}
    if len(inputs) > 1:
        doc.intro.append(f"Warning: the runs replayed different bags: {sorted(str(i) for i in inputs)}.")
    ptable = Table(["parameter", labels[0], labels[1]])
    for name, va, vb in params:
        ptable.add(name, fmt(va), fmt(vb))
    psec = doc.section("Parameters that differ")
    psec.blocks.append(ptable if params else "none (or the runs carry no parameter metadata)")
    doc.section("Summary").blocks.append(summary_table(rows, labels))
    doc.section("Side by side").blocks.append(comparison_table(rows, labels))
    figs = doc.section("Figures")
    figs.blocks.append(Image(plot_files["bars"].name, "DMR, JPS, p99 response time and rejections"))
    figs.blocks.append(Image(plot_files["cdf"].name, f"Response-time CDF ({labels[0]} solid, {labels[1]} dashed)"))
    files = ComparisonFiles(out, out / "compare.md", out / "compare.html", out / "compare.json", plot_files)
    files.markdown.write_text(doc.markdown(), encoding="utf-8")
    files.html.write_text(doc.html(), encoding="utf-8")
    data = {
        "schema": SCHEMA,
        "labels": list(labels),
        "runs": [{"label": label, "bag": fig.bag, "report": report, "config": fig.config, "ok": fig.ok,
                  "window_s": fig.window_s}
                 for label, fig, report in zip(labels, (fig_a, fig_b), reports or (None, None), strict=True)],
        "parameters": [{"name": n, "a": va, "b": vb} for n, va, vb in params],
        "rows": [{"scope": r.scope, "kind": r.kind, "metric": r.metric, "a": r.a, "b": r.b, "delta": r.delta}
                 for r in rows],
        "plots": {k: p.name for k, p in plot_files.items()},
    }
    files.json.write_text(dump_json(data), encoding="utf-8")
    return rows, files
