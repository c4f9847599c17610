"""Scale: 1,000 tasks. A short run always; the full 60 s run (docs/simulator.md) on request."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daris_ros.core import Priority
from daris_ros.sim import load_scenario, simulate

SCALE = Path(__file__).resolve().parents[2] / "config" / "sim" / "scale_1000.yaml"


def test_scale_scenario_short_run() -> None:
    r = simulate(load_scenario(SCALE, {"duration": 1.5}))
    assert r.n_tasks == 1000
    hp = r.priority_stats[Priority.HP]
    assert hp.missed == 0 and hp.rejected == 0 and hp.completed == hp.released


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DARIS_SIM_SCALE"), reason="set DARIS_SIM_SCALE=1 for the 60 s scale run"
)
def test_scale_1000_tasks_60_seconds_under_10_seconds() -> None:
    t0 = time.process_time()
    r = simulate(load_scenario(SCALE))
    elapsed = time.process_time() - t0
    assert r.n_tasks == 1000 and r.duration == 60.0
    assert elapsed < 10.0, f"took {elapsed:.1f} s of CPU"
