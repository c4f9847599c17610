"""The report files: PNG figures, markdown / HTML, report.json (numbers equal the computed figures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_records import is_png, result

from daris_ros.report import plots
from daris_ros.report.extract import RunData
from daris_ros.report.render import PLOT_FILES, write_report


def test_plot_functions_write_pngs(run: RunData, tmp_path: Path) -> None:
    t0 = min(r.release_ns for r in run.all_results())
    files = [
        plots.plot_mret(run.results, t0, tmp_path / "mret.png"),
        plots.plot_stage_exec(run.results, t0, tmp_path / "stages.png"),
        plots.plot_timeline(run.results, t0, tmp_path / "timeline.png"),
        plots.plot_timeline(run.results, t0, tmp_path / "zoom.png", window=(0.0, 0.3)),
        plots.plot_response_cdf(run.results, tmp_path / "cdf.png", {"hp": 0.1, "lp": 0.2}),
    ]
    assert all(is_png(f) for f in files)


def test_plots_of_a_run_without_results_still_exist(tmp_path: Path) -> None:
    empty: dict[str, list] = {"x": []}
    assert is_png(plots.plot_mret(empty, None, tmp_path / "a.png"))
    assert is_png(plots.plot_timeline(empty, None, tmp_path / "b.png"))
    assert is_png(plots.plot_response_cdf(empty, tmp_path / "c.png"))


def test_cdf_points() -> None:
    xs, ys = plots.cdf_points([3.0, 1.0, 2.0, 2.0])
    assert list(xs) == [1.0, 2.0, 2.0, 3.0]
    assert list(ys) == [0.25, 0.5, 0.75, 1.0]


def test_write_report_files_and_json_numbers(run: RunData, tmp_path: Path) -> None:
    figures, files = write_report(run, tmp_path / "rep", zoom_s=0.25)
    assert files.markdown.is_file() and files.html.is_file() and files.json.is_file()
    assert set(files.plots) == set(PLOT_FILES)  # the 1.08 s window is longer than twice the zoom
    assert all(is_png(p) for p in files.plots.values())
    text = files.json.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["schema"] == "daris_ros.report/1" and data["ok"] is True
    hp = data["tasks"]["hp"]
    assert (hp["completed"], hp["missed"], hp["released"], hp["rejected"], hp["stale"]) == (10, 1, 10, 0, 1)
    assert hp["response"]["p99"] == pytest.approx(figures.tasks["hp"].response.p99)
    assert data["priorities"]["LP"]["rejected"] == 2
    assert data["plots"]["timeline"] == "timeline.png"
    md = files.markdown.read_text()
    for needle in ("## Per task", "## Per priority", "## Frame accounting", "| hp | HP | resnet18 | 10 | 10 | 0 | 10 |",
                   "![MRET vs execution time", "(timeline.png)", "10.0%"):
        assert needle in md, needle
    html = files.html.read_text()
    assert html.startswith("<!DOCTYPE html>") and '<img src="timeline.png"' in html and "<td>hp</td>" in html


def test_failed_checks_are_visible(run: RunData, tmp_path: Path) -> None:
    del run.results["hp"][0]
    figures, files = write_report(run, tmp_path)
    assert not figures.ok
    md = files.markdown.read_text()
    assert "FAILED" in md
    assert json.loads(files.json.read_text())["ok"] is False


def test_no_zoom_for_short_runs(tmp_path: Path) -> None:
    run = RunData(path=tmp_path / "bag", results={"a": [result("a", 0, response=0.05)]})
    _, files = write_report(run, tmp_path / "out", zoom_s=1.0)
    assert "timeline_zoom" not in files.plots and is_png(files.plots["timeline"])
    data = json.loads(files.json.read_text())
    assert data["tasks"]["a"]["released"] is None  # no stats: unknown, written as null
