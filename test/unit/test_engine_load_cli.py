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


def test_the_instant_backend_runs_the_whole_path_with_no_device(tmp_path: Path) -> None:
    args = ["--backend", "instant", "--tasks", "6", "--rate", "20", "--seconds", "2.0", "--warmup", "0.5",
            "--modes", "off,on", "--sizes", "1,2,4", "--height", "24", "--width", "32", "--input-size", "32"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "engine_load.json").read_text())
    assert doc["device"] == "none (instant backend)"
    off, on = doc["runs"]
    for run in (off, on):
        assert run["admitted"] == run["released"] >= 6  # (its stages take 10 us: nothing is rejected)
        assert run["host_us_per_release"] > 0 and run["jps"] > 0
    assert on["mean_batch"] > 1  # six cameras released together: batched through every stage


def test_the_instant_backend_has_no_device_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--backend", "instant", "--frames", "device", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--frames host" in capsys.readouterr().err


def test_free_running_cameras_released_on_a_window(tmp_path: Path) -> None:
    args = ["--backend", "instant", "--tasks", "6", "--rate", "20", "--seconds", "2.0", "--warmup", "0.5",
            "--modes", "on", "--sizes", "1,2,4", "--height", "24", "--width", "32", "--input-size", "32",
            "--trigger", "frame", "--release-window", "0.025"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "engine_load.json").read_text())
    (run,) = doc["runs"]
    assert run["admitted"] == run["released"] >= 6  # frames offered by the free-running cameras were released
    assert doc["config"]["trigger"] == "frame" and doc["config"]["release_window"] == 0.025
    assert "release_window 0.025 s" in (tmp_path / "engine_load.md").read_text()


def test_a_release_window_needs_the_frame_trigger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--backend", "instant", "--release-window", "0.01", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--trigger frame" in capsys.readouterr().err
