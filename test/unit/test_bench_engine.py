"""daris-bench runs DARIS through the engine (the scheduler node's one execution path) on the cpu backend: the CLI
end to end, the accounting of a run against the engine's own counters, phased releases, a batching mode's
parameters on the engine, and the mps micro-bench's protocol round trip. Accounting only: nothing here depends on
how fast the machine is."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from daris_ros.bench.batching import Mode, mode_params, set_min_size
from daris_ros.bench.cli import main
from daris_ros.bench.engine_run import bench_settings, run_engine
from daris_ros.bench.workload import make_taskset
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

SIZE = (32, 32)
CPU = {"policy": "STR", "backend": "cpu", "device": "cpu", "n_contexts": 1, "n_streams": 2, "profile_runs": 1,
       "reprobe_after": 0, "skip_late": 0}


def test_daris_bench_on_the_cpu_backend_writes_its_report(tmp_path: Path) -> None:
    rc = main(["--device", "cpu", "--configs", "cpu:STR:1x2:1,cpu:MPS:2x1:2", "--models", "resnet18",
               "--seconds", "1.2", "--warmup", "0.4", "--offered", "30", "--task-rate", "10", "--input-size", "32",
               "--no-baselines", "--out", str(tmp_path)])
    assert rc == 0
    for name in ("results.csv", "summary.md", "summary.json", "resnet18.png"):
        assert (tmp_path / name).is_file(), name
    with (tmp_path / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["policy"], r["n_contexts"], r["n_streams"]) for r in rows] == [
        ("cpu", "STR", "1", "2"), ("cpu", "MPS", "2", "1")]
    for r in rows:
        assert float(r["offered_jps"]) == pytest.approx(30.0)  # 3 tasks at 10 Hz (2:1 LP:HP)
        assert int(r["hp_released"]) > 0 and int(r["lp_released"]) > 0
        assert float(r["jps"]) > 0.0 and float(r["jps_window"]) > 0.0
        assert 0.0 <= float(r["hp_dmr"]) <= 1.0 and 0.0 <= float(r["lp_dmr"]) <= 1.0
        assert float(r["host_us_per_release"]) > 0.0
        assert r["afet_ms"].startswith("resnet18@32x32: ")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["path"] == "engine"
    assert summary["commit"] and "dirty" in summary
    assert summary["models"]["resnet18"]["offered_jps"] == 30.0
    assert summary["models"]["resnet18"]["lower_jps"] is None  # --no-baselines
    assert summary["models"]["resnet18"]["best"]["config"] in ("1x2_1", "2x1_2")
    assert "cpu:STR" in (tmp_path / "summary.md").read_text()


def test_a_failing_configuration_is_reported_and_the_run_fails(tmp_path: Path) -> None:
    # STR with two contexts is refused by the settings, as the node refuses it
    rc = main(["--device", "cpu", "--configs", "cpu:STR:2x2:1", "--seconds", "1", "--offered", "30",
               "--no-baselines", "--out", str(tmp_path)])
    assert rc == 1


def test_cpu_runs_need_cpu_configurations_and_a_load(tmp_path: Path) -> None:
    assert main(["--device", "cpu", "--configs", "str:STR:1x2:1", "--offered", "30", "--no-baselines",
                 "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--configs", "cpu:STR:1x2:1", "--no-baselines", "--out", str(tmp_path)])


def test_a_run_accounts_for_every_job_as_the_engine_does() -> None:
    tasks = make_taskset(("resnet18",), 60.0, 10.0)  # 6 tasks at 10 Hz: 2 HP, 4 LP
    settings = bench_settings(CPU, tasks, lambda _m: SIZE)
    assert [t.name for t in settings.tasks] == [t.name for t in tasks]
    assert [t.priority for t in settings.tasks] == [t.priority.name for t in tasks]
    assert all(t.deadline == t.period == pytest.approx(0.1) and t.input_size == SIZE for t in settings.tasks)
    run = run_engine(settings, seconds=1.2, warmup=0.4, phases={t.name: t.phase for t in tasks})
    assert run.offered_jps == pytest.approx(60.0)
    assert run.undrained == 0 and run.errors == 0
    # every admitted job finished and gave one result; the core counted the same
    assert run.completed == run.snapshot_completed
    assert run.completed == run.admitted
    assert sum(run.released.values()) == run.extra["releases"]  # one core release per frame the loop took
    for p in ("HP", "LP"):
        assert run.released[p] >= run.admitted[p] > 0
        assert 0 <= run.missed[p] <= run.completed[p]
        assert run.dmr(p) == (run.missed[p] / run.completed[p])
    # JPS counts results in the steady window; the whole window holds at least those
    n_steady = round(run.jps * 0.8)
    assert run.jps * 0.8 == pytest.approx(n_steady)
    assert 0 < n_steady <= round(run.jps_window * 1.2) <= sum(run.completed.values())
    assert run.host_us_per_release > 0.0 and run.cpu_us_per_job >= run.release_us_per_job > 0.0
    assert run.batch.batches > 0 and run.batch.mean_batch == 1.0  # batching off: every dispatch is one job


def test_staggered_releases_follow_each_tasks_phase() -> None:
    period = 0.2
    tasks = tuple(TaskSettings(f"t{i}", f"/t{i}", "HP" if i == 0 else "LP", period, 1.0, "resnet18",
                               input_size=SIZE) for i in range(2))
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    e = Engine(SchedulerSettings(policy="STR", n_streams=2, profile_runs=1, tasks=tasks), on_result=on_result)
    try:
        e.load_models()
        e.profile()
        frame = np.zeros((*SIZE, 3), dtype=np.uint8)
        for t in tasks:
            e.set_frame(t.name, frame)
        origin = time.monotonic() + 0.2
        e.start(origin=origin, phases={"t0": 0.0, "t1": 0.05})
        t_end = time.monotonic() + 30.0
        while len({(r.task, r.job_id) for r in results if r.job_id < 3}) < 6:
            assert time.monotonic() < t_end, results
            time.sleep(0.02)
    finally:
        e.close()
    for r in results:
        if r.job_id < 3:
            phase = 0.0 if r.task == "t0" else 0.05
            # on the task's grid (a late loop may skip instants); the release time is when the loop took the frame,
            # a little after its instant on a busy machine
            k = (r.release_time - origin - phase) / period
            assert 0 <= k - round(k) < 0.2 and round(k) >= r.job_id


def test_a_batching_mode_runs_on_the_engine_with_its_parameters() -> None:
    mode = Mode.parse("batch-2s-m0.5-ahead1-max8-pad0")
    params = mode_params(mode, (1, 2, 4, 8, 16, 32))
    params.update(backend="cpu", device="cpu", profile_runs=1)
    tasks = make_taskset(("resnet18",), 60.0, 10.0)
    settings = bench_settings(params, tasks, lambda _m: SIZE)
    assert (settings.batching, settings.batch_sizes, settings.batch_pad_limit, settings.batch_lp_admit_margin,
            settings.launch_ahead, settings.ahead_lead, settings.no_staging, settings.n_streams) == (
        True, (1, 2, 4, 8), 0.0, 0.5, 1, pytest.approx(0.001), True, 2)
    chosen: list[int] = []

    def prepare(engine: Engine) -> None:
        chosen.append(set_min_size(engine))
        assert engine.settings.batch_min_size == chosen[0]

    run = run_engine(settings, seconds=1.2, warmup=0.4, prepare=prepare)  # a rig: every task at once
    assert chosen and chosen[0] in (1, 2, 4, 8)
    assert run.completed == run.admitted == run.snapshot_completed and run.undrained == 0
    assert set(run.batch.by_size) <= {1, 2, 4, 8}
    assert run.batch.jobs == sum(run.completed.values())  # one stage per job (No Staging): one slot each


@pytest.mark.parametrize("blocking", [False, True])
def test_mps_micro_round_trip_through_the_protocol(blocking: bool) -> None:
    import torch

    from daris_ros.bench.mps_micro import round_trip
    from daris_ros.runtime.backends import create_backend
    from daris_ros.runtime.models import build_staged_model

    b = create_backend("cpu", n_contexts=1, n_streams=1)
    b.start({"r": build_staged_model("resnet18", input_size=SIZE)})
    try:
        res = round_trip(b, "r", torch.zeros(1, 3, *SIZE), 4, 3, blocking=blocking, warmup=1)
    finally:
        b.close()
    assert res["stage_us_p50"] > 0.0 and res["launch_cpu_us_p50"] >= 0.0
    assert res["overhead_us_p99"] >= res["overhead_us_p50"]


def test_the_batching_bench_runs_its_modes_on_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--batching`` end to end on the cpu backend, with the GPU-only references (CUDA-graph upper baseline,
    reduced-precision output check) replaced by fixed numbers: rows, tables and the summary.json section."""
    from daris_ros.bench import batching
    from daris_ros.bench.cli import parse_args

    monkeypatch.setattr(batching, "upper", lambda *a, **k: (40.0, 8, {8: 40.0}))
    monkeypatch.setattr(batching, "precision_difference",
                        lambda *a, **k: {"max_abs": 0.0, "rel_l2": 0.0, "top1_agree": 1.0, "finite": True})
    (tmp_path / "summary.json").write_text(json.dumps({"engine_acceptance": {"kept": True}}))
    args = parse_args(["--device", "cpu", "--batching", "b1-2s,batch-2s-m0.5-ahead1-max8-pad0,batch-lpmax5",
                       "--batch-models", "resnet18", "--batch-sizes", "1,2,4,8,16", "--input-size", "32",
                       "--task-rate", "10", "--seconds", "1.2", "--warmup", "0.4", "--batch-tag", "t",
                       "--out", str(tmp_path)])
    assert batching.main_batching(args, None, "daris-bench --batching ...") == 0
    with (tmp_path / "batching_t.csv").open(newline="") as f:
        rows = {r["mode"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"b1-2s", "batch-2s-m0.5-ahead1-max8-pad0"}  # lpmax: no engine parameter, logged
    for r in rows.values():
        assert float(r["offered_jps"]) == pytest.approx(60.0)  # 150% of the upper baseline: 6 tasks at 10 Hz
        assert float(r["x_upper"]) == pytest.approx(float(r["jps"]) / 40.0, rel=1e-3)
    assert rows["b1-2s"]["mean_batch"] == "1" and rows["b1-2s"]["min_size"] == "1"
    assert int(rows["batch-2s-m0.5-ahead1-max8-pad0"]["min_size"]) in (1, 2, 4, 8)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine_acceptance"] == {"kept": True}  # other sections are kept
    section = summary["batching_t"]
    assert section["path"] == "engine" and section["commit"] and "dirty" in section and section["device"] == "cpu"
    assert set(section["models"]["resnet18"]["runs"]) == set(rows)
    assert "batch-2s-m0.5-ahead1-max8-pad0" in (tmp_path / "batching_results_t.md").read_text()
