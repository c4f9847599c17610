"""Write the report of one run: ``report.md``, ``report.html``, ``report.json`` and the PNG figures.

``report.json`` (schema ``daris_ros.report/1``) holds every number of the markdown: per task and per
priority figures (times in seconds), the frame accounting, the consistency checks, the configuration
read from the stats messages, the replay metadata when the bag came from ``daris-replay``, and the
file names of the figures and of the pictures of sampled jobs (``frame_<task>_<job>.png``,
:mod:`daris_ros.report.pictures`: their frames with boxes or masks and their timing, in the "Frames" section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plots
from .extract import RunData, read_run
from .metrics import PRIORITIES, PriorityFigures, RunFigures, TaskFigures, compute
from .pictures import DEFAULT_PICTURES, PictureSet, make_pictures
from .tables import Document, Image, Table, dump_json, fmt

SCHEMA = "daris_ros.report/1"

PLOT_FILES = {
    "mret": "mret_vs_exec.png",
    "stages": "stage_exec.png",
    "timeline": "timeline.png",
    "timeline_zoom": "timeline_zoom.png",
    "response_cdf": "response_cdf.png",
}


@dataclass(slots=True)
class ReportFiles:
    out_dir: Path
    markdown: Path
    html: Path
    json: Path
    plots: dict[str, Path] = field(default_factory=dict)
    pictures: list[Path] = field(default_factory=list)  # frame_<task>_<job>.png


def ms(value: float) -> str:
    return fmt(value, 1, 1e3)


def _counter_cells(f: TaskFigures | PriorityFigures) -> list[str]:
    return [fmt(f.released), fmt(f.admitted), fmt(f.rejected), fmt(f.completed), fmt(f.missed), fmt(f.stale)]


def task_table(figures: RunFigures) -> Table:
    t = Table(["task", "prio", "model", "released", "admitted", "rejected", "completed", "missed", "stale",
               "DMR", "JPS", "p50 ms", "p99 ms", "max ms", "exec ms (mean)", "MRET ms (last)"])
    for f in figures.tasks.values():
        t.add(f.task, f.priority, f.model, *_counter_cells(f), fmt(f.dmr, 1, pct=True), fmt(f.jps, 2),
              ms(f.response.p50), ms(f.response.p99), ms(f.response.max), ms(f.exec_mean), ms(f.mret_last))
    return t


def priority_table(figures: RunFigures) -> Table:
    t = Table(["priority", "tasks", "released", "admitted", "rejected", "completed", "missed", "stale", "DMR",
               "JPS", "p50 ms", "p99 ms", "max ms"])
    for p in [*(figures.priorities[name] for name in PRIORITIES), figures.totals]:
        t.add(p.priority, fmt(p.tasks), *_counter_cells(p), fmt(p.dmr, 1, pct=True), fmt(p.jps, 2),
              ms(p.response.p50), ms(p.response.p99), ms(p.response.max))
    return t


def accounting_table(figures: RunFigures) -> Table:
    t = Table(["task", "published", "received", "met", "missed", "skipped", "rejected", "superseded", "dropped",
               "in flight", "pending", "accounted", "stale periods"])
    for f in figures.tasks.values():
        parts = [f.met, f.missed, f.skipped, f.rejected, f.superseded, f.dropped, f.in_flight, f.pending]
        total = sum(p for p in parts if p is not None) if all(p is not None for p in parts) else None
        ok = "-" if total is None or f.frames is None else ("yes" if total == f.frames else f"NO ({total})")
        t.add(f.task, fmt(f.input_frames), fmt(f.frames), *(fmt(p) for p in parts), ok, fmt(f.stale))
    return t


def checks_table(figures: RunFigures, failed_only: bool) -> Table:
    t = Table(["task", "check", "result", "detail"])
    for c in figures.checks:
        if failed_only and c.ok is not False:
            continue
        t.add(c.task, c.name, {True: "ok", False: "FAILED", None: "n/a"}[c.ok], c.detail)
    return t


def diagnostics_table(figures: RunFigures) -> Table:
    t = Table(["status", "OK", "WARN", "ERROR", "last level", "last message"])
    for name, d in figures.diagnostics.items():
        counts = d["counts"]
        t.add(name, *(str(counts.get(k, 0)) for k in ("OK", "WARN", "ERROR")), d["last_level"], d["last_message"])
    return t


def _intro(figures: RunFigures) -> list[str]:
    c = figures.config
    lines = [f"Output bag: `{figures.bag}`."]
    if c:
        lines.append(f"Node `{c['node']}`: policy {c['policy']}, backend {c['backend']} on {c['device']}, "
                     f"N_c = {c['n_contexts']}, N_s = {c['n_streams']}, OS = {c['oversubscription']:g}, "
                     f"{c['sm_per_context']} SMs per context"
                     + (f" (confined to {c['sm_limit']} SMs: sm_limit)." if c.get("sm_limit") else "."))
    r = figures.replay
    if r:
        mode = "as fast as possible (sim time)" if r.get("fast") else f"rate {r.get('rate', 1.0):g}"
        if r.get("use_sim_time") and not r.get("fast"):
            mode += ", sim time (/clock)"
        lines.append(f"Replay of `{r.get('input_bag')}` with `{r.get('config')}`, {mode}; "
                     f"{sum((r.get('published') or {}).values())} frames published; "
                     f"drained: {'yes' if r.get('drained') else 'NO'}.")
    lines.append(f"Window: {figures.window_s:.2f} s from the first release to the last finish "
                 "(JPS = completed / window; DMR = missed / admitted; response times are finish - release).")
    failed = [c for c in figures.checks if c.ok is False]
    unknown = sum(1 for c in figures.checks if c.ok is None)
    verdict = "all passed" if not failed else f"{len(failed)} FAILED"
    lines.append(f"Checks: {len(figures.checks)} ({verdict}" + (f", {unknown} not checkable" if unknown else "")
                 + ").")
    return lines


def frames_section(doc: Document, pictures: PictureSet) -> None:
    """The "Frames" section: the sampled jobs' pictures, or why there are none."""
    sec = doc.section("Frames")
    if pictures.pictures:
        sec.blocks.append(f"{len(pictures.pictures)} jobs, every HP miss first (up to half of them), the rest spread "
                          "over the run and the tasks; frames from " + pictures.source + ". Boxes (detection) in "
                          "their class colour with class name and score, masks (segmentation) blended per class, "
                          "top classes (classification); above each frame the job's response time against its "
                          "deadline, MET or MISSED (red, red border).")
    if pictures.note:
        sec.blocks.append(pictures.note)
    for pic in pictures.pictures:
        sec.blocks.append(Image(pic.path.name, pic.caption))


def build_document(figures: RunFigures, plot_files: dict[str, Path], title: str,
                   pictures: PictureSet | None = None) -> Document:
    doc = Document(title, intro=_intro(figures))
    doc.section("Per task").blocks.append(task_table(figures))
    doc.section("Per priority").blocks.append(priority_table(figures))
    acc = doc.section("Frame accounting")
    acc.blocks.append("Every frame the node received ends as met, missed, rejected (admission test), superseded "
                      "(replaced by a newer frame before a release took it), dropped (malformed), in flight or "
                      "pending. Stale periods (a release with no new frame) are counted over the recording.")
    acc.blocks.append(accounting_table(figures))
    failed = any(c.ok is False for c in figures.checks)
    doc.section("Checks").blocks.append(checks_table(figures, failed_only=False))
    if figures.diagnostics:
        doc.section("Diagnostics (/diagnostics)").blocks.append(diagnostics_table(figures))
    fig = doc.section("Figures")
    captions = {
        "mret": "MRET vs execution time per task (like the paper's Figure 9)",
        "stages": "Execution time per stage",
        "timeline": "Stage timeline per context and stream",
        "timeline_zoom": "Stage timeline (zoom)",
        "response_cdf": "Response-time CDF per priority",
    }
    for key, path in plot_files.items():
        fig.blocks.append(Image(path.name, captions.get(key, key)))
    if pictures is not None and (pictures.pictures or pictures.note):
        frames_section(doc, pictures)
    if failed:
        doc.intro.append("Some checks FAILED: see the Checks section.")
    return doc


def make_plots(run: RunData, figures: RunFigures, out_dir: Path, zoom_s: float = 1.0) -> dict[str, Path]:
    t0 = figures.t0_ns
    files = {
        "mret": plots.plot_mret(run.results, t0, out_dir / PLOT_FILES["mret"]),
        "stages": plots.plot_stage_exec(run.results, t0, out_dir / PLOT_FILES["stages"]),
        "timeline": plots.plot_timeline(run.results, t0, out_dir / PLOT_FILES["timeline"]),
    }
    if zoom_s > 0 and figures.window_s > 2 * zoom_s:
        files["timeline_zoom"] = plots.plot_timeline(run.results, t0, out_dir / PLOT_FILES["timeline_zoom"],
                                                     window=(0.0, zoom_s))
    deadlines = {name: f.deadline for name, f in figures.tasks.items()}
    files["response_cdf"] = plots.plot_response_cdf(run.results, out_dir / PLOT_FILES["response_cdf"], deadlines)
    return files


def report_dict(figures: RunFigures, plot_files: dict[str, Path], pictures: PictureSet | None = None
                ) -> dict[str, Any]:
    data = {"schema": SCHEMA, **figures.to_dict()}
    data["plots"] = {key: path.name for key, path in plot_files.items()}
    if pictures is not None:
        data["pictures"] = [{"file": p.path.name, "task": p.task, "job_id": p.job_id, "priority": p.priority,
                             "kind": p.kind, "met": p.met, "size": list(p.size), "frame_rect": list(p.frame_rect),
                             "boxes": [{"rect": list(b.rect), "label": b.label} for b in p.boxes],
                             "mask_classes": [c for c, _n, _rgb in p.mask_classes], "notes": list(p.notes)}
                            for p in pictures.pictures]
        data["pictures_source"] = pictures.source
        data["pictures_note"] = pictures.note
    return data


def write_report(run: RunData, out_dir: Path | str, *, title: str = "daris_ros replay report",
                 zoom_s: float = 1.0, pictures: int = DEFAULT_PICTURES, frames_bag: Path | str | None = None
                 ) -> tuple[RunFigures, ReportFiles]:
    """Compute the figures of ``run`` and write the report files into ``out_dir``; ``pictures``: how many
    jobs to draw on their frames (0: none), ``frames_bag``: the bag with the camera frames when the output
    bag has none (default: the replay's input bag, where it exists)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = compute(run)
    plot_files = make_plots(run, figures, out, zoom_s)
    picture_set = make_pictures(run, out, pictures, frames_bag=None if frames_bag is None else Path(frames_bag),
                                t0_ns=figures.t0_ns) if pictures > 0 else None
    doc = build_document(figures, plot_files, title, picture_set)
    files = ReportFiles(out, out / "report.md", out / "report.html", out / "report.json", plot_files,
                        [p.path for p in picture_set.pictures] if picture_set is not None else [])
    files.markdown.write_text(doc.markdown(), encoding="utf-8")
    files.html.write_text(doc.html(), encoding="utf-8")
    files.json.write_text(dump_json(report_dict(figures, plot_files, picture_set)), encoding="utf-8")
    return figures, files


def report_bag(bag: Path | str, out_dir: Path | str, **kwargs: Any) -> tuple[RunFigures, ReportFiles]:
    """Read an output bag and write its report."""
    return write_report(read_run(bag), out_dir, **kwargs)
