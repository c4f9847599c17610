"""Scenario YAML loading, overrides and validation; every shipped scenario parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.core import Policy, Priority
from daris_ros.sim import load_scenario, scenario_from_dict

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim"

MINIMAL = {
    "name": "mini",
    "duration": 1.0,
    "scheduler": {"policy": "MPS", "n_contexts": 2, "oversubscription": 2},
    "models": {"m": {"stage_times": [0.001, 0.002]}},
    "tasks": [
        {"name": "h", "model": "m", "priority": "HP", "count": 2, "rate": 10},
        {"name": "l", "model": "m", "priority": "LP", "period": 0.2, "phase": 0.05, "deadline": 0.15},
    ],
}


def test_all_shipped_scenarios_parse() -> None:
    files = sorted(CONFIG.glob("*.yaml"))
    names = {f.name for f in files}
    for required in (
        "resnet18_100.yaml",
        "resnet18_150.yaml",
        "resnet18_hpa_overload.yaml",
        "resnet18_no_staging.yaml",
        "scale_1000.yaml",
    ):
        assert required in names
    for f in files:
        sc = load_scenario(f)
        assert sc.n_tasks > 0 and sc.duration > 0
    assert load_scenario(CONFIG / "scale_1000.yaml").n_tasks == 1000
    r150 = load_scenario(CONFIG / "resnet18_150.yaml")
    hp = sum(g.count for g in r150.groups if g.priority is Priority.HP)
    lp = sum(g.count for g in r150.groups if g.priority is Priority.LP)
    assert (hp, lp) == (17, 34)  # Table II


def test_minimal_scenario_expansion() -> None:
    sc = scenario_from_dict(MINIMAL)
    assert sc.config.policy is Policy.MPS and sc.config.n_contexts == 2
    specs = sc.task_specs({"m": (0.003, 0.004)})
    assert [s.name for s in specs] == ["h000", "h001", "l"]
    assert specs[0].period == pytest.approx(0.1) and specs[0].afet == (0.003, 0.004)
    assert specs[2].phase == 0.05 and specs[2].relative_deadline == 0.15
    assert 0.0 <= specs[0].phase < 0.1
    # random phases depend on the seed only
    assert [s.phase for s in sc.task_specs({"m": (1, 1)}, seed=3)] == [
        s.phase for s in sc.task_specs({"m": (1, 1)}, seed=3)
    ]


def test_overrides_by_dotted_key() -> None:
    sc = scenario_from_dict(
        MINIMAL, {"scheduler.hp_admission": True, "duration": 2.5, "scheduler.policy": "STR"}
    )
    assert sc.config.hp_admission and sc.duration == 2.5 and sc.config.policy is Policy.STR


@pytest.mark.parametrize(
    "override",
    [
        {"bogus": 1},
        {"scheduler.bogus": 1},
        {"tasks": [{"name": "x", "model": "nope", "rate": 1}]},
        {"tasks": [{"name": "x", "model": "m", "rate": 1, "period": 1}]},
        {"tasks": [{"name": "x", "model": "m", "rate": 1, "colour": "red"}]},
        {"tasks": []},
        {"models": {"m": {"stage_times": []}}},
        {"models": {"m": {"stage_times": [0.1], "afet": [0.1, 0.2]}}},
        {"duration": 0},
        {"tasks": [{"name": "x", "model": "m", "rate": 1}, {"name": "x", "model": "m", "rate": 2}]},
    ],
)
def test_invalid_scenarios_are_rejected(override: dict) -> None:
    with pytest.raises(ValueError):
        scenario_from_dict(MINIMAL, override)


def test_oversubscription_full_keyword(tmp_path: Path) -> None:
    sc = scenario_from_dict(MINIMAL, {"scheduler.oversubscription": "full"})
    assert sc.config.oversubscription == 2.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TypeError):
        load_scenario(bad)
