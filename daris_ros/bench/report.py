"""Bench outputs: results.csv, Figure 4-8 style plots (PNG), summary.md and summary.json."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(slots=True)
class Row:
    model: str
    kind: str  # "daris" | "ablation:<name>"
    backend: str
    policy: str
    n_contexts: int
    n_streams: int
    oversubscription: float
    graphs: bool
    offered_jps: float
    jps: float
    hp_dmr: float
    lp_dmr: float
    hp_p99_ms: float
    lp_p99_ms: float
    lp_admit_rate: float
    hp_released: int
    lp_released: int
    migrations: int
    cpu_us_per_job: float  # the engine loop thread's CPU time per finished job
    release_us_per_job: float  # of which releases: take frames, decode, admission, preprocessing
    rest_us_per_job: float  # of which the rest: completions, dispatches, launches, post-processing
    sm_per_context: str = ""
    afet_ms: str = ""
    host_us_per_release: float = 0.0  # the loop thread's CPU time per release (EngineSnapshot.loop)
    jps_window: float = 0.0  # jobs finished in the whole release window / its length (JPS: the steady part)

    @property
    def n_parallel(self) -> int:
        return self.n_contexts * self.n_streams

    @property
    def config(self) -> str:
        return f"{self.n_contexts}x{self.n_streams}_{self.oversubscription:g}"

    def meets(self, lp_dmr_max: float = 0.02) -> bool:
        return self.hp_dmr == 0.0 and self.lp_dmr <= lp_dmr_max


@dataclass(slots=True)
class ModelBaselines:
    lower_jps: float
    upper_jps: float
    upper_batch: int
    upper_by_batch: dict[int, float]
    naive_jps: float
    naive_hp_dmr: float
    naive_lp_dmr: float
    naive_threads: int
    ceiling_jps: float
    ceiling_staged_jps: float
    load_reference: str
    offered_jps: float
    extra: dict[str, Any] = field(default_factory=dict)


def environment() -> dict[str, str]:
    env = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        env["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        env["driver"] = "unknown"
    return env


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool | None}`` of the checkout this code runs from: ``DARIS_COMMIT`` if set (a copy
    without ``.git``, e.g. on a device machine), else ``git rev-parse HEAD``; ``dirty``: tracked files differ from
    that commit (None: unknown). ``"unknown"`` when neither says."""
    import os

    root = repo or Path(__file__).resolve().parents[2]
    dirty: bool | None = None
    commit = os.environ.get("DARIS_COMMIT", "").strip()
    try:
        if not commit:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=20, check=False)
            commit = out.stdout.strip() if out.returncode == 0 else ""
        if commit:
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=False)
            dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    if dirty is None and os.environ.get("DARIS_COMMIT_DIRTY"):
        dirty = os.environ["DARIS_COMMIT_DIRTY"].strip().lower() in ("1", "true", "yes")
    return {"commit": commit or "unknown", "dirty": dirty}


def merge_summary(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """``path`` (summary.json) with ``updates`` written over its keys; the other keys (other runs' sections,
    ``engine_acceptance``) are kept."""
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        summary = {}
    summary.update(updates)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def best_row(rows: Sequence[Row]) -> tuple[Row | None, bool]:
    """The highest-JPS DARIS row with 0 HP misses and LP DMR <= 2%, else the highest-JPS row (False)."""
    daris = [r for r in rows if r.kind == "daris"]
    ok = [r for r in daris if r.meets()]
    if ok:
        return max(ok, key=lambda r: r.jps), True
    return (max(daris, key=lambda r: r.jps), False) if daris else (None, False)


def write_csv(path: Path, rows: Sequence[Any], cls: type[DataclassInstance] = Row) -> None:
    """One row per dataclass instance (``cls``: their type, for the header), floats to 4 significant digits."""
    names = list(cls.__dataclass_fields__)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            d = asdict(r)
            w.writerow([f"{d[n]:.4g}" if isinstance(d[n], float) else d[n] for n in names])


def series_label(r: Row) -> str:
    """A plot series: backend and policy, and OS as a number or ``N_c`` (the paper's full oversubscription,
    one series across N_c instead of one point per value)."""
    if r.policy == "STR":
        return f"{r.backend}:{r.policy}"
    os_ = "N_c" if r.n_contexts > 2 and r.oversubscription == r.n_contexts else f"{r.oversubscription:g}"
    return f"{r.backend}:{r.policy} OS={os_}"


def read_results(out: Path) -> tuple[list[Row], dict[str, ModelBaselines]]:
    """``results.csv`` and the baselines of ``summary.json`` in a bench output folder (to plot again); a folder
    with only ``summary.md`` (results.csv did not come back from the run's machine) is read from its tables."""
    if not (out / "results.csv").exists() or not (out / "summary.json").exists():
        return read_summary_md(out)
    types = {n: f.type for n, f in Row.__dataclass_fields__.items()}
    conv: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "bool": lambda v: v == "True"}
    rows = []
    with (out / "results.csv").open(newline="") as f:
        for rec in csv.DictReader(f):
            rec = {OLD_COLUMNS.get(k, k): v for k, v in rec.items()}
            rows.append(Row(**{k: conv[str(types[k])](v) for k, v in rec.items() if k in types}))
    bases = {}
    for name, m in json.loads((out / "summary.json").read_text())["models"].items():
        bases[name] = ModelBaselines(m["lower_jps"] or 0.0, m["batching_upper_jps"] or 0.0, m["upper_batch"] or 0,
                                     {}, m["naive_jps"] or 0.0, 0.0, 0.0, 0, m["b1_ceiling_jps"] or 0.0,
                                     m["b1_ceiling_staged_jps"] or 0.0, m["load_reference"], m["offered_jps"])
    return rows, bases


#: Columns of results.csv files written before the bench ran the engine (their own loop's CPU split).
OLD_COLUMNS = {"core_us_per_job": "release_us_per_job", "launch_us_per_job": "rest_us_per_job"}


def _num(text: str) -> float:
    return float(text.strip().rstrip("%").replace(",", ""))


def read_summary_md(out: Path) -> tuple[list[Row], dict[str, ModelBaselines]]:
    """The rows and baselines of a bench folder's ``summary.md`` (when its results.csv is missing).

    The table keeps what the figures plot (JPS, DMRs, p99s, CPU per job, SMs per context) at its printed
    precision; what it does not print (released jobs, migrations, AFETs, mps round trips) reads as 0 / "".
    """
    text = (out / "summary.md").read_text()
    graphs = "--no-graphs" not in text.split("```")[1] if "```" in text else True
    rows: list[Row] = []
    bases: dict[str, ModelBaselines] = {}
    for section in text.split("\n## ")[1:]:
        model, _, body = section.partition("\n")
        base: dict[str, float] = {}
        offered, reference, upper_batch = 0.0, "ceiling", 0
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("Offered load:"):
                offered = _num(line.split()[2])
                reference = "upper" if "of the upper" in line else "offered" if "given" in line else "ceiling"
            elif len(cells) == 2 and cells[1] and (cells[1][0].isdigit() or cells[1] == "-"):
                key = cells[0].split(" (")[0]
                base[key] = 0.0 if cells[1] == "-" else _num(cells[1])
                if key == "upper" and "best bs " in cells[0]:
                    upper_batch = int(cells[0].split("best bs ")[1].rstrip(")"))
            elif len(cells) in (11, 12) and ":" in cells[0] and cells[3][:1].isdigit():
                backend, policy = cells[0].split(":", 1)
                layout, os_ = cells[1].split("_")
                nc, ns = (int(v) for v in layout.split("x"))
                cpu, rest = cells[9].split(" (", 1)
                release, other = (_num(v) for v in rest.split(")")[0].split(" + ")[:2])
                rows.append(Row(model, cells[10], backend, policy, nc, ns, float(os_), graphs, offered,
                                _num(cells[3]), _num(cells[4]) / 100, _num(cells[5]) / 100, _num(cells[7]),
                                _num(cells[8]), _num(cells[6]) / 100, 0, 0, 0, _num(cpu), release, other, cells[2]))
        bases[model] = ModelBaselines(base["lower"], base["upper"], upper_batch, {}, base["naive"], 0.0, 0.0, 0,
                                      base["batch-1 ceiling"], base["batch-1 ceiling, staged"], reference, offered)
    return rows, bases


def replot(out: Path) -> list[Path]:
    """Draw the per-model figures of a bench output folder again from its files."""
    rows, bases = read_results(out)
    paths = []
    for name, base in bases.items():
        plot_model(out / f"{name}.png", name, rows, base)
        paths.append(out / f"{name}.png")
    return paths


def plot_model(path: Path, model: str, rows: Sequence[Row], base: ModelBaselines) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    daris = [r for r in rows if r.kind == "daris" and r.model == model]
    series: dict[str, list[Row]] = {}
    for r in daris:
        series.setdefault(series_label(r), []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r.n_parallel)
        xs = [r.n_parallel for r in rs]
        ax1.plot(xs, [r.jps for r in rs], marker="o", label=label)
        ax2.plot(xs, [100 * r.lp_dmr for r in rs], marker="o", label=label)
    for value, name, style in ((base.upper_jps, f"upper (batching bs {base.upper_batch})", "--"),
                               (base.ceiling_jps, "batch-1 ceiling", "-."), (base.lower_jps, "lower", ":"),
                               (base.naive_jps, "naive", (0, (1, 3)))):
        if not value:  # not measured (e.g. the CUDA-graph baselines of a CPU run)
            continue
        ax1.axhline(value, color="gray", linestyle=style, linewidth=1)
        ax1.annotate(name, (ax1.get_xlim()[0], value), fontsize=7, va="bottom")
    ax1.set(xlabel="N_p = N_c x N_s", ylabel="throughput (JPS)", title=f"{model}: throughput")
    ax2.set(xlabel="N_p = N_c x N_s", ylabel="LP DMR (%)", title=f"{model}: LP deadline miss rate")
    if series:
        ax1.legend(fontsize=7, loc="upper right", ncol=2)
        ax2.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jps(value: float) -> float | None:
    """A baseline's JPS for summary.json (None: not measured)."""
    return round(value, 1) if value else None


def _cell(value: float) -> str:
    return f"{value:,.0f}" if value else "-"


def write_summary(out: Path, rows: Sequence[Row], bases: dict[str, ModelBaselines], env: dict[str, str],
                  command: str, date: str, notes: Sequence[str], commit: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """summary.md, and summary.json's run keys (``device``, ``commit``, ``models``...; its other keys, e.g.
    the batching runs' sections, are kept)."""
    commit = commit if commit is not None else git_commit()
    models: dict[str, Any] = {}
    for model, b in bases.items():
        best, ok = best_row([r for r in rows if r.model == model])
        entry: dict[str, Any] = {
            "batching_upper_jps": _jps(b.upper_jps), "lower_jps": _jps(b.lower_jps),
            "naive_jps": _jps(b.naive_jps), "b1_ceiling_jps": _jps(b.ceiling_jps),
            "b1_ceiling_staged_jps": _jps(b.ceiling_staged_jps), "upper_batch": b.upper_batch or None,
            "load_reference": b.load_reference, "offered_jps": round(b.offered_jps, 1),
        }
        if "naive_warmup_s" in b.extra:
            entry["naive_warmup_s"] = round(b.extra["naive_warmup_s"], 2)
        if best is not None:
            entry["best"] = {
                "config": best.config, "policy": f"{best.backend}:{best.policy}", "jps": round(best.jps, 1),
                "jps_window": round(best.jps_window, 1), "hp_dmr": round(best.hp_dmr, 5),
                "lp_dmr": round(best.lp_dmr, 5), "hp_p99_ms": round(best.hp_p99_ms, 3),
                "lp_p99_ms": round(best.lp_p99_ms, 3), "meets_dmr_targets": ok,
                "cpu_us_per_job": round(best.cpu_us_per_job, 1),
                "host_us_per_release": round(best.host_us_per_release, 2),
                "x_naive": round(best.jps / b.naive_jps, 2) if b.naive_jps else None,
                "x_b1_ceiling": round(best.jps / b.ceiling_jps, 3) if b.ceiling_jps else None,
                "x_upper": round(best.jps / b.upper_jps, 3) if b.upper_jps else None,
            }
        models[model] = entry
    summary = merge_summary(out / "summary.json", {
        "device": env["device"], "torch": env["torch"], "date": date, "driver": env["driver"], "cuda": env["cuda"],
        "command": command, "commit": commit["commit"], "dirty": commit["dirty"], "path": "engine",
        "models": models})
    dirty = {True: " (with uncommitted changes)", False: "", None: " (clean or not: unknown)"}[commit["dirty"]]
    lines = [f"# daris-bench results ({date})", "",
             f"Device: **{env['device']}**, driver {env['driver']}, torch {env['torch']}, CUDA {env['cuda']}, "
             f"cuDNN {env['cudnn']}. Commit `{commit['commit']}`{dirty}.", "",
             "Command (every figure and number below comes from this run):", "", f"```\n{command}\n```", ""]
    lines += [f"- {n}" for n in notes]
    lines.append("")
    for model, b in bases.items():
        lines += [f"## {model}", "", "| baseline | JPS |", "| --- | ---: |",
                  f"| lower (one DNN, one stream, eager) | {_cell(b.lower_jps)} |",
                  f"| upper (batching + CUDA graph, best bs {b.upper_batch}) | {_cell(b.upper_jps)} |",
                  f"| batch-1 ceiling (whole-model graphs on 8 streams, no scheduler) | {_cell(b.ceiling_jps)} |",
                  f"| batch-1 ceiling, staged (4 stage graphs per job) | {_cell(b.ceiling_staged_jps)} |",
                  f"| naive ({b.naive_threads} threads, default stream; HP DMR {100 * b.naive_hp_dmr:.1f}%, "
                  f"LP DMR {100 * b.naive_lp_dmr:.1f}%"
                  + (f"; the threads' first jobs, before the window, took {b.extra['naive_warmup_s']:.1f} s"
                     if "naive_warmup_s" in b.extra else "") + f") | {_cell(b.naive_jps)} |", "",
                  "Batching by batch size: " + (", ".join(f"bs {k}: {v:,.0f}" for k, v in b.upper_by_batch.items())
                                                or "not measured"),
                  "", f"Offered load: {b.offered_jps:,.0f} JPS = " + (
                      f"150% of the {b.load_reference} ("
                      f"{'batch-1 ceiling' if b.load_reference == 'ceiling' else 'batching upper baseline'})"
                      if b.load_reference in ("ceiling", "upper") else "given (--offered)")
                  + ", 2:1 LP:HP tasks.", "", f"![{model}]({model}.png)", "",
                  "| backend:policy | N_c x N_s _OS | SMs/ctx | JPS | HP DMR | LP DMR | LP admitted | HP p99 ms "
                  "| LP p99 ms | CPU us/job (release + rest) | kind | host us/release |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for r in sorted((r for r in rows if r.model == model), key=lambda r: (r.kind, r.backend, r.policy,
                                                                               r.n_parallel, r.oversubscription)):
            lines.append(f"| {r.backend}:{r.policy} | {r.config} | {r.sm_per_context} | {r.jps:,.0f} | "
                         f"{100 * r.hp_dmr:.2f}% | {100 * r.lp_dmr:.2f}% | {100 * r.lp_admit_rate:.0f}% | "
                         f"{r.hp_p99_ms:.2f} | {r.lp_p99_ms:.2f} | {r.cpu_us_per_job:.0f} "
                         f"({r.release_us_per_job:.0f} + {r.rest_us_per_job:.0f}) | {r.kind} | "
                         f"{r.host_us_per_release:.1f} |")
        best, ok = best_row([r for r in rows if r.model == model])
        if best is not None:
            ratios = ", ".join(f"{best.jps / v:.2f}x {name}" for v, name in (
                (b.naive_jps, "naive"), (b.ceiling_jps, "the batch-1 ceiling"), (b.upper_jps, "batching")) if v)
            lines += ["", f"Best DARIS: {best.backend}:{best.policy} {best.config}, {best.jps:,.0f} JPS"
                      + (f" ({ratios})" if ratios else "") + f", HP DMR {100 * best.hp_dmr:.2f}%, "
                      f"LP DMR {100 * best.lp_dmr:.2f}%{'' if ok else ' (no run met 0 HP misses and LP DMR <= 2%)'}."]
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Plot the figures of a daris-bench output folder again "
                                "(results.csv + summary.json).")
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    for path in replot(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
