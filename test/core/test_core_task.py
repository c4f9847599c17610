"""Task model (section III-A) and accounting helpers."""

from __future__ import annotations

import math
from array import array

import pytest

from daris_ros.core import Priority, PriorityStats, TaskSpec, deadline_miss_rate, jobs_per_second, percentile


def test_taskspec_defaults_and_deadline() -> None:
    t = TaskSpec("a", 0.04, Priority.LP, 2, [0.001, 0.002])  # type: ignore[arg-type]
    assert t.afet == (0.001, 0.002) and t.relative_deadline == 0.04  # D_i = T_i unless configured
    assert TaskSpec("b", 0.04, "HP", 1, (0.001,), deadline=0.03).relative_deadline == 0.03  # type: ignore[arg-type]
    assert TaskSpec("b", 0.04, "hp", 1, (0.001,)).priority is Priority.HP  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        {"period": 0.0},
        {"period": math.inf},
        {"n_stages": 0},
        {"afet": (0.1, 0.2)},
        {"afet": (-0.1,)},
        {"deadline": 0.0},
        {"phase": -1.0},
        {"name": ""},
        {"priority": "MEDIUM"},
    ],
)
def test_taskspec_validation(kw: dict) -> None:
    base = {"name": "a", "period": 1.0, "priority": Priority.HP, "n_stages": 1, "afet": (0.1,)}
    base.update(kw)
    with pytest.raises(ValueError):
        TaskSpec(**base)


def test_percentile_dmr_jps() -> None:
    vals = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(vals, 50) == 3.0
    assert percentile(vals, 99) == 5.0
    assert percentile(vals, 0) == 1.0
    assert math.isnan(percentile([], 50))
    assert deadline_miss_rate(1, 4) == 0.25 and deadline_miss_rate(0, 0) == 0.0
    assert jobs_per_second(300, 10.0) == 30.0
    ps = PriorityStats(released=4, admitted=4, completed=4, missed=1, response_times=array("d", vals))
    assert ps.dmr == 0.25 and ps.p50 == 3.0 and ps.max_response == 5.0 and ps.mean_response == 3.0
    assert ps.copy() == ps and ps.copy().response_times is not ps.response_times
