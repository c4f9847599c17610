"""The engine's loop hands a finished job's result out once its post-processing's copy to the host is done, and
does not wait for it (cpu backend, real model, an injected clock). On the CPU a copy is done at once; here the
copies are held back (their ``ready`` false until the test lets them go), as a CUDA device's asynchronous copy
is while the device is busy. Asserted: the core counts the jobs completed while no result is out, the jobs count
as in flight, the loop keeps turning (it does not block on the copy), and the results come out, complete and in
time, once the copies are done."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from clock_helpers import ManualClock, wait_for

import daris_ros.runtime.engine as engine_module
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.results import PendingRows
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

ORIGIN = 100.0
PERIOD = 1.0  # (a deadline far beyond a ResNet18 job on any CPU at a 32x32 input)
CAMERAS = ("a", "b")


class HeldCopy:
    """A started post-processing whose copy counts as not done until ``copies_done`` is set."""

    def __init__(self, pending: PendingRows, copies_done: threading.Event) -> None:
        self._pending = pending
        self._done = copies_done

    def ready(self) -> bool:
        return self._done.is_set() and self._pending.ready()

    def rows(self) -> list[Any]:
        return self._pending.rows()


def test_results_wait_for_their_copy_and_the_loop_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    copies_done = threading.Event()
    started = engine_module.start_classify
    monkeypatch.setattr(engine_module, "start_classify",
                        lambda *args: HeldCopy(started(*args), copies_done))
    tasks = tuple(TaskSettings(name, f"/{name}", "HP", PERIOD, PERIOD, "resnet18", input_size=(32, 32))
                  for name in CAMERAS)
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 worker_stage_timeout=0.0, batching=True, release_trigger="frame")
    clock = ManualClock(ORIGIN)
    results: list[JobResult] = []
    e = Engine(settings, on_result=results.append, clock=clock)
    frame = np.zeros((32, 32, 3), np.uint8)

    def completed() -> int:
        return sum(stats.completed for stats in e.snapshot().tasks.values())

    try:
        e.load_models()
        e.profile()
        e.start(origin=ORIGIN)
        clock.now = ORIGIN + 0.01
        for name in CAMERAS:
            e.offer(name, frame, stamp=clock.now)
        wait_for("both jobs completed by the core", lambda: completed() == len(CAMERAS))
        turns = e._loop_stats.iterations
        wait_for("the loop to turn while the copies are held", lambda: e._loop_stats.iterations >= turns + 5)
        held_results, held_in_flight = len(results), e.in_flight()
        copies_done.set()
        wait_for("the results", lambda: len(results) == len(CAMERAS))
        in_flight_after = e.in_flight()
    finally:
        e.close()
    assert held_results == 0  # completed by the core, not handed out before the copy was done
    assert held_in_flight == len(CAMERAS)  # (a drain waits for them)
    assert in_flight_after == 0
    assert sorted(r.task for r in results) == sorted(CAMERAS)
    for r in results:
        assert not r.error and r.met
        assert len(r.class_ids) == settings.top_k and len(r.scores) == settings.top_k
        assert r.finish_time == pytest.approx(ORIGIN + 0.01)  # the stage's completion, not the hand-out
