"""Engine.feasibility: the core's per-context figures after the offline phase of Engine.start, read through the
loop (cpu backend, a real model, AFET set by hand instead of profiled)."""

from __future__ import annotations

import pytest

from daris_ros.runtime.engine import Engine
from daris_ros.settings import SchedulerSettings, TaskSettings


def test_feasibility_after_the_offline_phase() -> None:
    tasks = (TaskSettings("a", "/a", "HP", 0.1, 0.1, "resnet18", input_size=(32, 32)),
             TaskSettings("b", "/b", "HP", 0.1, 0.1, "resnet18", input_size=(32, 32)),
             TaskSettings("l", "/l", "LP", 0.2, 0.2, "resnet18", input_size=(32, 32)))
    e = Engine(SchedulerSettings(n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks), on_result=lambda r: None)
    try:
        e.load_models()
        (key,) = e.models
        e.afet[key] = (0.015, 0.015, 0.015, 0.015)  # 60 ms a job: profile() keeps it
        e.profile()
        with pytest.raises(RuntimeError):
            e.feasibility()  # no core before the offline phase
        e.start(origin=1e9)  # no camera frame and no release: the figures stay the AFET's (eq. 10)
        r = e.feasibility()
        (c,) = r.contexts
        # eq. 4: 0.06 / 0.1 twice = 1.2 > N_s = 1; eq. 5: 0.06 / 0.2 = 0.3 with eq. 11's 1 - 1.2 = -0.2 left
        assert c.hp_utilization == pytest.approx(1.2) and c.lp_utilization == pytest.approx(0.3)
        assert c.lp_left == pytest.approx(-0.2) and c.lp_expected_rejection == 1.0
        assert not r.feasible and r.lp_oversubscribed
        assert r.hp_problems() == ("context 0: HP utilization 1.20 > 1 (N_s = 1): tasks a (u=0.60: 60.0 ms every "
                                   "100.0 ms), b (u=0.60: 60.0 ms every 100.0 ms)")
    finally:
        e.close()
