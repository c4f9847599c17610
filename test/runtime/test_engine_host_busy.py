"""lp_host_busy_limit in the engine (cpu backend): while the loop's busy share is over the limit, LP releases are
rejected by the core before their frames are decoded (rejected = rejected_host, no LP result, every frame taken
still a release), HP jobs run; at the default 1.0 nothing is rejected for the host. The loop's load is read
from a stand-in that reports a fixed share (the measurement itself: test_loop_load.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine
from daris_ros.runtime.results import JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings


class _Saturated:
    """A loop that reports itself busy all the time."""

    def busy(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def fraction(self) -> float:
        return 1.0


@pytest.mark.parametrize("limit", [0.9, 1.0])
def test_lp_rejected_for_the_host_over_the_limit(limit: float) -> None:
    tasks = (TaskSettings("hp", "/hp", "HP", 0.05, 0.5, "resnet18", input_size=(32, 32)),
             TaskSettings("lp", "/lp", "LP", 0.05, 0.5, "resnet18", input_size=(32, 32)))
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 release_trigger="clock", lp_host_busy_limit=limit)
    results: list[JobResult] = []
    e = Engine(settings, on_result=results.append)
    decoded: list[str] = []
    try:
        e.load_models()
        e.profile()
        e._loop_load = _Saturated()  # type: ignore[assignment]
        decode = e.decoder.decode

        def recorded_decode(burst_tasks, payloads):  # type: ignore[no-untyped-def]
            decoded.extend(t.name for t in burst_tasks)
            return decode(burst_tasks, payloads)

        e.decoder.decode = recorded_decode  # type: ignore[method-assign]
        frame = np.zeros((24, 32, 3), np.uint8)
        e.start()
        deadline = time.monotonic() + 60.0
        while True:  # until each task has had 5 releases (a new frame before each)
            stats = e.snapshot().tasks
            if min(stats["hp"].released, stats["lp"].released) >= 5:
                break
            assert time.monotonic() < deadline, stats
            for name in ("hp", "lp"):
                e.set_frame(name, frame)
            time.sleep(0.02)
        e.pause_releases()
        drain(e, 30.0)
        snap = e.snapshot()
    finally:
        e.close()
    hp, lp = snap.tasks["hp"], snap.tasks["lp"]
    assert hp.rejected_host == 0 and hp.admitted == hp.released
    assert any(r.task == "hp" for r in results)
    assert snap.intake["lp"][0].taken == lp.released  # every LP frame a release took is a release of the core
    if limit < 1.0:
        assert lp.rejected == lp.rejected_host == lp.released and lp.admitted == 0
        assert not any(r.task == "lp" for r in results)
        assert "lp" not in decoded  # rejected before decoding
        assert snap.priorities[next(p for p in snap.priorities if p.name == "LP")].rejected_host == lp.released
    else:
        assert lp.rejected_host == 0 and lp.admitted > 0 and "lp" in decoded
