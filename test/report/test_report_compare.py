"""Side-by-side comparison of two runs: rows, table, JSON and figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from report_records import is_png, make_run

from daris_ros.report.compare import comparison_rows, comparison_table, parameter_diff, write_comparison
from daris_ros.report.metrics import compute


def _runs() -> tuple:
    a = make_run("a/output")
    b = make_run("b/output")
    # B: one more HP miss and an LP config with another context count
    b.results["hp"][4] = dataclasses.replace(b.results["hp"][4], met=False)
    last = b.stats[-1]
    last.tasks["hp"] = dataclasses.replace(last.tasks["hp"], missed=2)
    assert b.replay is not None
    b.replay = {**b.replay, "config": "b.yaml", "parameters": {"n_contexts": 1, "policy": "MPS", "extra": True}}
    return a, compute(a), b, compute(b)


def test_rows_hold_both_values_and_the_difference() -> None:
    _, fa, _, fb = _runs()
    rows = {(r.scope, r.metric): r for r in comparison_rows(fa, fb)}
    r = rows[("hp", "missed")]
    assert (r.a, r.b, r.delta) == (1, 2, 1)
    assert rows[("hp", "dmr")].delta == pytest.approx(0.1)
    assert rows[("HP", "missed")].b == 2 and rows[("all", "completed")].a == 14
    assert rows[("lp", "rejected")].delta == 0
    scopes = list(dict.fromkeys(s for s, _ in rows))
    assert scopes == ["hp", "lp", "HP", "LP", "all"]


def test_parameter_diff() -> None:
    assert parameter_diff({"a": 1, "b": [64, 64]}, {"a": 2, "b": [64, 64], "c": "x"}) == [("a", 1, 2), ("c", None, "x")]
    assert parameter_diff(None, None) == []


def test_table_formats_units_and_signs() -> None:
    _, fa, _, fb = _runs()
    md = comparison_table(comparison_rows(fa, fb), ("one", "two")).markdown()
    assert "| scope | metric | one | two | two - one |" in md
    assert "| hp | missed | 1 | 2 | +1 |" in md
    assert "| hp | DMR | 10.0% | 20.0% | +10.0% |" in md
    assert "| hp | p99 ms | 100.0 | 100.0 | 0.0 |" in md


def test_write_comparison_files(tmp_path: Path) -> None:
    a, fa, b, fb = _runs()
    rows, files = write_comparison(a, fa, b, fb, tmp_path, ("N_c=2", "N_c=1"))
    assert is_png(files.plots["bars"]) and is_png(files.plots["cdf"])
    md = files.markdown.read_text()
    assert "## Parameters that differ" in md and "| n_contexts | 2 | 1 |" in md
    assert "| N_c=2 | N_c=1 |" in md.replace("scope | metric | ", "")
    data = json.loads(files.json.read_text())
    assert data["schema"] == "daris_ros.compare/1" and data["labels"] == ["N_c=2", "N_c=1"]
    by_key = {(r["scope"], r["metric"]): r for r in data["rows"]}
    for scope, f in (("hp", fa.tasks["hp"]), ("lp", fa.tasks["lp"])):
        assert by_key[(scope, "completed")]["a"] == f.completed
        assert by_key[(scope, "response_p99")]["a"] == pytest.approx(f.response.p99)
    assert by_key[("hp", "missed")]["b"] == fb.tasks["hp"].missed
    assert {p["name"] for p in data["parameters"]} == {"n_contexts", "extra"}
    assert len(data["rows"]) == len(rows)
