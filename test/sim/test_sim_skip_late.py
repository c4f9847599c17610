"""Bounded staleness under overload in the simulator (``scheduler.skip_late``, docs/policy.md).

The HP load of resnet18_hpa_overload.yaml is ~125% of the GPU. Without HPA and without skip_late (the paper)
every HP job runs, late: the work outstanding and the response times grow with the length of the run. With
``skip_late: 2`` a job not started within two deadlines of its release is skipped: both stay bounded, whatever
the length, and the skipped jobs are counted per task, in the table and in the JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.core import Priority
from daris_ros.sim import SimResult, Simulation, format_table, load_scenario, result_to_dict

SCENARIO = Path(__file__).resolve().parents[2] / "config" / "sim" / "resnet18_hpa_overload.yaml"
DEADLINE = 1 / 30  # rate 30: D = T


def _run(skip_late: float | None, duration: float) -> tuple[SimResult, int, int]:
    """The run, the most stages outstanding at any event, and the 'skip' events seen."""
    sc = load_scenario(SCENARIO, {"scheduler.hp_admission": False, "scheduler.skip_late": skip_late,
                                  "duration": duration})
    seen = {"max": 0, "skip": 0}
    sim: Simulation

    def observe(kind: str, now: float, payload: object) -> None:
        if kind == "skip":
            seen["skip"] += 1
        seen["max"] = max(seen["max"], sim.scheduler.outstanding_stages())

    sim = Simulation(sc, observer=observe)
    return sim.run(), seen["max"], seen["skip"]


def test_without_skip_late_the_backlog_and_the_response_times_grow_with_the_run() -> None:
    short, short_max, _ = _run(None, 1.5)
    long, long_max, skips = _run(None, 3.0)
    assert skips == 0 and long.hp().skipped == 0 and long.hp().completed == long.hp().admitted
    assert long_max > 1.8 * short_max and long_max > 500  # twice the run, about twice the backlog
    assert long.hp().max_response > 1.8 * short.hp().max_response > 0.5  # results half a second old, and older


@pytest.mark.parametrize("skip_late", [1.0, 2.0])
def test_with_skip_late_both_stay_bounded_and_skipped_jobs_are_counted_per_task(skip_late: float) -> None:
    short, short_max, _ = _run(skip_late, 1.5)
    long, long_max, skips = _run(skip_late, 3.0)
    hp = long.hp()
    assert long_max == short_max and long_max <= 48 * (skip_late + 1) + 12  # not growing with the run
    assert hp.max_response == pytest.approx(short.hp().max_response)
    # a job starts within skip_late deadlines of its release, and a started HP job runs its stages first
    assert hp.max_response < (skip_late + 1) * DEADLINE
    assert hp.skipped > 0 and skips == hp.skipped  # one 'skip' event per skipped job
    hp_tasks = [t for t in long.task_stats.values() if t.priority is Priority.HP]
    assert sum(t.skipped for t in hp_tasks) == hp.skipped
    assert all(t.completed + t.skipped == t.admitted for t in long.task_stats.values())  # drained: all ended
    assert hp.dmr == pytest.approx((hp.missed + hp.skipped) / hp.admitted)
    d = result_to_dict(long)
    assert d["priority"]["HP"]["skipped"] == hp.skipped and d["all"]["skipped"] == hp.skipped
    assert sum(t["skipped"] for t in d["tasks"].values()) == hp.skipped
    table = format_table(long, per_task=True).splitlines()
    assert "skipped" in table[1].split()
    hp_row = next(line.split() for line in table if line.startswith("HP "))
    assert int(hp_row[table[1].split().index("skipped")]) == hp.skipped


def test_skip_late_off_keeps_the_simulators_results() -> None:
    a, _, _ = _run(None, 1.0)
    b, _, _ = _run(0, 1.0)
    assert result_to_dict(a) == result_to_dict(b)
