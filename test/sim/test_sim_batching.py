"""Cross-task stage batching in the simulator: batch-time model, wake-ups, and the H200 scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.core import Priority
from daris_ros.sim import Simulation, load_scenario, result_to_dict, scenario_from_dict, simulate
from daris_ros.sim.batching import batch_factor
from daris_ros.sim.exec_models import ContentionModel, Geometry, build_exec_model

SCENARIO = Path(__file__).resolve().parents[2] / "config" / "sim" / "resnet18_batching_h200.yaml"


def test_batch_factor_is_piecewise_linear_through_the_points() -> None:
    pts = ((8, 2.0), (32, 5.0))
    assert batch_factor(pts, 1) == 1.0
    assert batch_factor(pts, 8) == 2.0
    assert batch_factor(pts, 20) == pytest.approx(3.5)
    assert batch_factor(pts, 64) == pytest.approx(9.0)  # the last slope (1/8 per job) continues
    assert batch_factor(None, 16) == 16.0  # no gain when the model gives none


def test_contention_model_rates_big_batches_with_their_own_exponent() -> None:
    g = Geometry(132, 132, 1, 2, 1.0)
    m = ContentionModel(g, beta=0.4, alpha=0.0, batch_beta=1.0)
    assert m.beta_for(1) == 0.4 and m.beta_for(256) == 1.0 and 0.4 < m.beta_for(16) < 1.0
    assert m.slowdown(2, 2, 256) == pytest.approx(2.0)  # two full batches share the GPU: no gain
    assert m.slowdown(2, 2, 1) == pytest.approx(2 ** 0.4)
    built = build_exec_model({"kind": "contention", "batch_sm_exponent": 0.9}, g)
    assert isinstance(built, ContentionModel) and built.batch_beta == 0.9
    with pytest.raises(ValueError):
        build_exec_model({"kind": "contention", "batch_sm_exponent": 1.5}, g)


def short(duration: float = 1.0, **over: object) -> dict:
    o: dict[str, object] = {"duration": duration}
    o.update(over)
    return o


def test_h200_scenario_batching_beats_the_batch1_ceiling_with_deadlines_kept() -> None:
    r = simulate(load_scenario(SCENARIO, short()))
    hp, lp = r.hp(), r.lp()
    assert hp.missed == 0 and hp.admitted == hp.released
    assert lp.dmr <= 0.01 and lp.rejected > 0  # 150% overload: LP is shed by admission, not by misses
    assert r.jps > 19_000  # the scenario's GPU: ~2.1k JPS batch-1 alone, ~22k batched at 256
    off = simulate(load_scenario(SCENARIO, short(**{"scheduler.batching": None})))
    assert off.jps < 6_000 and off.hp().missed > 0  # the HP load alone is beyond batch-1 execution


def test_batched_run_is_deterministic_and_drains() -> None:
    a = result_to_dict(simulate(load_scenario(SCENARIO, short(0.3)), seed=4))
    b = result_to_dict(simulate(load_scenario(SCENARIO, short(0.3)), seed=4))
    assert a == b
    assert a["all"]["admitted"] == a["all"]["completed"]


def test_staged_batching_and_lp_slack_wake_ups() -> None:
    raw = {
        "name": "tiny", "duration": 0.5, "seed": 2,
        "scheduler": {"policy": "STR", "n_streams": 1, "n_sm_max": 132,
                      "batching": {"sizes": [1, 2, 4, 8], "lp_slack": 0.004, "lp_fill": 4, "lp_admit_margin": None}},
        "models": {"m": {"stage_times": [0.0002, 0.0002], "batch_factor": {8: 2.0}}},
        "exec_model": {"kind": "constant"},
        "tasks": [{"name": "lp", "model": "m", "priority": "LP", "count": 6, "rate": 20, "phase": "spread"},
                  {"name": "hp", "model": "m", "priority": "HP", "count": 2, "rate": 20, "phase": "spread"}],
    }
    seen: list[tuple[float, object]] = []
    sim = Simulation(scenario_from_dict(raw), observer=lambda kind, now, p: seen.append((now, p))
                     if kind == "dispatch" else None)
    r = sim.run()
    assert r.priority_stats[Priority.HP].missed == 0 and r.priority_stats[Priority.LP].missed == 0
    stats = sim.scheduler.batch_stats()
    assert stats.holds > 0 and stats.mean_batch > 1.0
    # a first-stage LP-only batch smaller than lp_fill started only once its slack ran out (a wake-up)
    small = [(now, d) for now, d in seen
             if d.stage == 0 and len(d.jobs) < 4 and all(j.priority is Priority.LP for j in d.jobs)]
    assert small
    for now, d in small:
        assert now >= min(j.release for j in d.jobs) + 0.004 - 1e-12


def test_launch_ahead_in_the_simulator_queues_batches_behind_running_ones_and_keeps_deadlines() -> None:
    over = short(0.5, **{"scheduler.launch_ahead": 1, "scheduler.ahead_lead": 0.0005})
    seen: list[tuple[float, object]] = []
    done: list[tuple[float, object]] = []

    def observe(kind: str, now: float, p: object) -> None:
        if kind == "dispatch":
            seen.append((now, p))
        elif kind == "complete":
            done.append((now, p[0]))  # type: ignore[index]

    sim = Simulation(load_scenario(SCENARIO, over), observer=observe)
    r = sim.run()
    assert r.hp().missed == 0 and r.lp().dmr <= 0.01
    behind = [d for _, d in seen if d.behind]
    assert behind, "no batch was queued behind a running one"
    end_of = {id(d): t for t, d in done}
    by_stream: dict[tuple[int, int], list[object]] = {}
    for _, d in seen:
        by_stream.setdefault((d.context, d.stream), []).append(d)
    for lane in by_stream.values():  # a stream runs its batches one after another, in dispatch order
        ends = [end_of[id(d)] for d in lane if id(d) in end_of]
        assert ends == sorted(ends)
    for d in behind:  # formed within the lead of its stream's predicted free time, and checked from there
        (t,) = [now for now, x in seen if x is d]
        assert d.start - 0.0005 <= t + 1e-12 and d.predicted_finish > d.start
    plain = simulate(load_scenario(SCENARIO, short(0.5)))
    assert r.jps >= 0.97 * plain.jps  # the simulator has no host lag to hide: launch-ahead must not cost throughput
