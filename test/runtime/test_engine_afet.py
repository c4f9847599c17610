"""Engine.refresh_unmeasured_afet: a task that never ran takes the per-stage median of the MRETs its
model's stages have in the tasks that did (cpu backend, real models, the core driven by hand)."""

from __future__ import annotations

import pytest

from daris_ros.runtime.engine import Engine
from daris_ros.settings import SchedulerSettings, TaskSettings


def test_unmeasured_task_takes_the_median_of_its_models_measured_mrets() -> None:
    names = ("a", "b", "c", "idle")
    tasks = tuple(TaskSettings(n, f"/{n}", "LP", 1.0, 1.0, "resnet18", input_size=(32, 32)) for n in names)
    e = Engine(SchedulerSettings(n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks), on_result=lambda r: None)
    try:
        e.load_models()
        e.profile()
        e.start()
        sched = e.scheduler
        now = 0.0
        for name, et in (("a", 0.001), ("b", 0.002), ("c", 0.009)):  # every stage of a job takes `et`
            assert sched.release(name, now).admitted
            while True:
                (d,) = sched.dispatch(now)
                now += et
                if sched.complete(d, now, et):
                    break
        assert sched.measured_stages("idle") == (False,) * 4
        assert e.refresh_unmeasured_afet() == 1  # only "idle" had stages never measured
        assert sched.stage_mrets("idle") == pytest.approx((0.002,) * 4)  # the median, not the max (0.009)
        assert sched.stage_mrets("c") == pytest.approx((0.009,) * 4)  # measured tasks keep their own
    finally:
        e.close()
