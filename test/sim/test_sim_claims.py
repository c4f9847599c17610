"""The paper's qualitative claims, reproduced by the simulator on the shipped scenarios.

Scenarios are shortened (a few simulated seconds) to keep the suite fast; each claim is checked on
more than one seed where it is cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.core import Priority
from daris_ros.sim import SimResult, load_scenario, simulate

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim"
HP, LP = Priority.HP, Priority.LP


def run(name: str, seed: int = 1, duration: float = 3.0, **overrides: object) -> SimResult:
    return simulate(load_scenario(CONFIG / name, {"duration": duration, **overrides}), seed=seed)


@pytest.mark.parametrize("seed", [1, 2])
def test_full_load_2to1_no_hp_misses(seed: int) -> None:
    r = run("resnet18_100.yaml", seed)
    hp, lp = r.priority_stats[HP], r.priority_stats[LP]
    assert hp.completed > 1000 and hp.missed == 0 and hp.rejected == 0
    assert lp.dmr < 0.02  # the paper sees no LP misses at full load either
    assert lp.admitted > 0.95 * lp.released


@pytest.mark.parametrize("seed", [1, 2])
def test_150_percent_overload_hp_unharmed_lp_rejected(seed: int) -> None:
    r = run("resnet18_150.yaml", seed)
    hp, lp = r.priority_stats[HP], r.priority_stats[LP]
    assert hp.missed == 0 and hp.rejected == 0 and hp.completed == hp.released
    assert lp.rejected > 0.1 * lp.released  # admission control sheds LP work
    assert lp.dmr < 0.10  # and keeps the LP miss rate low (paper: < 7% with MPS)
    assert hp.p99 < lp.p99  # HP responds faster


def test_no_staging_raises_hp_response_times() -> None:
    staged = run("resnet18_150.yaml").priority_stats[HP]
    whole = run("resnet18_no_staging.yaml").priority_stats[HP]
    assert whole.mean_response > 1.15 * staged.mean_response
    assert whole.p50 > staged.p50 and whole.max_response > staged.max_response


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hpa_keeps_hp_misses_at_zero_when_hp_load_exceeds_capacity(seed: int) -> None:
    r = run("resnet18_hpa_overload.yaml", seed)
    hp = r.priority_stats[HP]
    assert hp.rejected > 0  # HP load alone is above 100%: some HP jobs are dropped
    assert hp.missed == 0 and hp.completed > 2000


def test_without_hpa_the_same_hp_overload_misses_deadlines() -> None:
    r = run("resnet18_hpa_overload.yaml", **{"scheduler.hp_admission": False})
    hp = r.priority_stats[HP]
    assert hp.rejected == 0 and hp.dmr > 0.5


def test_oversubscription_shortens_response_times_at_partial_load() -> None:
    """Section VI-E: SM oversubscription helps; here, at half load, through idle SMs of other contexts."""
    tasks = [
        {"name": "h", "model": "resnet18", "priority": "HP", "count": 6, "rate": 30},
        {"name": "l", "model": "resnet18", "priority": "LP", "count": 12, "rate": 30},
    ]
    shared = run("resnet18_100.yaml", tasks=tasks, **{"scheduler.oversubscription": 6})
    isolated = run("resnet18_100.yaml", tasks=tasks, **{"scheduler.oversubscription": 1})
    for p in (HP, LP):
        assert shared.priority_stats[p].mean_response < 0.8 * isolated.priority_stats[p].mean_response
