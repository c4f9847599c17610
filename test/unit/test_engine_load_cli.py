"""daris-engine-load on the cpu backend (the GPU figures: docs/benchmarks/engine/): the run writes its JSON and
Markdown with the loop's busy share and the LP releases rejected for the host (lp_host_busy_limit), and refuses a
limit outside the parameter's range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daris_ros.bench.engine_load import main

ARGS = ["--backend", "cpu", "--device", "cpu", "--tasks", "3", "--rate", "2", "--seconds", "2.5", "--warmup", "0.5",
        "--modes", "on", "--sizes", "1,2", "--height", "48", "--width", "64"]


def test_a_run_reports_the_loop_and_host_rejections(tmp_path: Path) -> None:
    assert main([*ARGS, "--lp-host-busy-limit", "1.0", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "engine_load.json").read_text())
    (run,) = doc["runs"]
    assert run["lp_rejected_host"] == 0  # 1: off
    assert 0.0 < run["loop_busy_share"] <= 1.0
    assert run["released"] >= 3 and doc["config"]["lp_host_busy_limit"] == 1.0
    assert "| loop busy | LP rejected (host) |" in (tmp_path / "engine_load.md").read_text()


@pytest.mark.parametrize("limit", ["0.01", "1.5"])
def test_a_limit_out_of_range_is_refused(tmp_path: Path, limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*ARGS, "--lp-host-busy-limit", limit, "--out", str(tmp_path)])
    assert info.value.code == 2 and "--lp-host-busy-limit" in capsys.readouterr().err
