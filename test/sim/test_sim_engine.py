"""The event loop: determinism, draining, accounting consistency, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daris_ros.core import Priority
from daris_ros.sim import Simulation, format_table, load_scenario, result_to_dict, scenario_from_dict, simulate
from daris_ros.sim.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim"

BASE = {
    "name": "small",
    "duration": 2.0,
    "seed": 5,
    "scheduler": {
        "policy": "MPS+STR",
        "n_contexts": 2,
        "n_streams": 2,
        "oversubscription": 1.5,
        "n_sm_max": 68,
    },
    "models": {"m": {"stage_times": [0.0004, 0.0004, 0.0004, 0.0004]}},
    "exec_model": {"kind": "contention", "jitter": {"dist": "uniform", "low": 0.8, "high": 1.2}},
    "tasks": [
        {"name": "h", "model": "m", "priority": "HP", "count": 6, "rate": 30},
        {"name": "l", "model": "m", "priority": "LP", "count": 12, "rate": 30},
    ],
}


def _summary(r: object) -> dict:
    return result_to_dict(r)  # type: ignore[arg-type]


def test_same_seed_same_result_different_seed_differs() -> None:
    sc = scenario_from_dict(BASE)
    a, b = simulate(sc), simulate(sc)
    assert _summary(a) == _summary(b)
    c = simulate(sc, seed=6)
    assert _summary(c) != _summary(a)


def test_constant_model_hand_computed_schedule() -> None:
    tasks = [{"name": "a", "model": "m", "priority": "HP", "count": 5, "rate": 10, "phase": "zero"}]
    r = simulate(scenario_from_dict(BASE, {"exec_model": {"kind": "constant"}, "tasks": tasks}))
    hp = r.priority_stats[Priority.HP]
    # releases at 0, 0.1, ..., 1.9 -> 20 per task
    assert hp.released == 100 and hp.admitted == 100 and hp.completed == 100 and hp.missed == 0
    assert r.end_time >= 1.9 and r.jps == pytest.approx(50.0)
    # Alg. 1 puts a000, a002, a004 on context 0 (2 streams), a001, a003 on context 1. Stages take
    # 0.4 ms; virtual deadlines 25/50/75/100 ms. Context 0, by hand:
    #   0.0 A0 B0 | 0.4 C0 A1 (EDF: 25 < 50) | 0.8 B1 C1 | 1.2 A2 B2 (name order among 75s)
    #   1.6 A3 B3 (last stage, level 1, before C2 at level 3) | 2.0 C2 | 2.4 C3 -> C done at 2.8 ms
    assert max(hp.response_times) == pytest.approx(0.0028)
    assert min(hp.response_times) == pytest.approx(0.0016)
    a004 = r.task_stats["a004"]
    assert {round(x, 6) for x in a004.response_times} == {0.0028}


def test_accounting_is_consistent() -> None:
    r = simulate(scenario_from_dict(BASE))
    for p in Priority:
        ps = r.priority_stats[p]
        assert ps.released == ps.admitted + ps.rejected
        assert ps.completed == ps.admitted  # drained
        assert len(ps.response_times) == ps.completed
    assert sum(t.released for t in r.task_stats.values()) == sum(
        p.released for p in r.priority_stats.values()
    )
    assert r.dispatches == 4 * sum(p.completed for p in r.priority_stats.values())


def test_observer_sees_every_event() -> None:
    seen = {"release": 0, "dispatch": 0, "complete": 0}

    def obs(kind: str, now: float, payload: object) -> None:
        seen[kind] += 1

    r = Simulation(scenario_from_dict(BASE), observer=obs).run()
    assert seen["release"] == sum(p.released for p in r.priority_stats.values())
    assert seen["dispatch"] == seen["complete"] == r.dispatches


def test_run_once() -> None:
    sim = Simulation(scenario_from_dict(BASE))
    sim.run()
    with pytest.raises(RuntimeError):
        sim.run()


def test_table_and_json() -> None:
    r = simulate(scenario_from_dict(BASE))
    text = format_table(r, per_task=True)
    assert "HP" in text and "LP" in text and "ALL" in text and "JPS" in text and "h000 (HP)" in text
    d = result_to_dict(r)
    assert set(d["priority"]) == {"HP", "LP"} and len(d["tasks"]) == 18
    json.dumps(d)


def test_cli_runs_a_scenario_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main([str(CONFIG / "resnet18_100.yaml"), "--seed", "3", "--json", str(out), "--set", "duration=0.5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "resnet18-2to1-100" in text and "seed 3" in text
    data = json.loads(out.read_text())
    assert data["seed"] == 3 and data["duration"] == 0.5 and data["priority"]["HP"]["missed"] == 0


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "cannot load" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(CONFIG / "resnet18_100.yaml"), "--set", "no-equals-sign"])


def test_incremental_utilization_matches_recomputation_during_a_run() -> None:
    """Eqs. 4-7 kept incrementally equal a from-scratch recomputation at every 25th event of an
    overloaded run with migrations, rejections and changing MRETs; all active terms end at zero."""
    tasks = [
        {"name": "h", "model": "m", "priority": "HP", "count": 10, "rate": 40},
        {"name": "l", "model": "m", "priority": "LP", "count": 20, "rate": 40},
    ]
    n = {"events": 0, "checks": 0}

    def obs(kind: str, now: float, payload: object) -> None:
        n["events"] += 1
        if n["events"] % 25:
            return
        n["checks"] += 1
        sched = sim.scheduler
        for k in range(sched.layout.n_contexts):
            inc, ref = sched.utilization(k), sched.utilization_from_scratch(k)
            for field in ("total", "hp", "lp", "active_lp", "active_hp"):
                assert getattr(inc, field) == pytest.approx(getattr(ref, field), abs=1e-9)

    sim = Simulation(scenario_from_dict(BASE, {"tasks": tasks}), observer=obs)
    r = sim.run()
    assert n["checks"] > 100
    assert r.priority_stats[Priority.LP].rejected > 0 and r.priority_stats[Priority.LP].migrations > 0
    for k in range(sim.scheduler.layout.n_contexts):
        u = sim.scheduler.utilization(k)
        assert u.active_lp == 0.0 and u.active_hp == 0.0 and sim.scheduler.backlog(k) == 0.0


def test_module_entry_point_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "daris_ros.sim.cli",
            str(CONFIG / "resnet18_150.yaml"),
            "--set",
            "duration=0.3",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "resnet18-2to1-150" in proc.stdout and "JPS" in proc.stdout


def test_launch_ahead_with_batching_off_in_the_simulator() -> None:
    """The one event loop runs stages queued behind a busy stream (batching off, ``scheduler.launch_ahead``) when
    the stage ahead of them completes, per stream in order; the paper's claims still hold (no HP miss)."""
    over = {"duration": 2.0, "scheduler.launch_ahead": 1, "scheduler.ahead_lead": 0.0005}
    seen: list[tuple[float, object]] = []
    done: dict[int, float] = {}

    def observe(kind: str, now: float, p: object) -> None:
        if kind == "dispatch":
            seen.append((now, p))
        elif kind == "complete":
            done[id(p[0])] = now  # type: ignore[index]

    sim = Simulation(load_scenario(CONFIG / "resnet18_150.yaml", over), seed=1, observer=observe)
    r = sim.run()
    hp, lp = r.hp(), r.lp()
    assert hp.missed == 0 and hp.completed == hp.released and lp.completed == lp.admitted
    behind = [d for _, d in seen if d.behind]  # type: ignore[attr-defined]
    assert behind and all(d.size == 1 and len(d.jobs) == 1 for _, d in seen)  # type: ignore[attr-defined]
    by_stream: dict[tuple[int, int], list[object]] = {}
    for _, d in seen:
        by_stream.setdefault((d.context, d.stream), []).append(d)  # type: ignore[attr-defined]
    for lane in by_stream.values():  # a stream runs its stages one after another, in dispatch order
        ends = [done[id(d)] for d in lane]
        assert ends == sorted(ends)
    plain = simulate(load_scenario(CONFIG / "resnet18_150.yaml", {"duration": 2.0}), seed=1)
    assert r.jps >= 0.97 * plain.jps
