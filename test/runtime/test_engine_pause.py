"""Releases paused and resumed (the managed node's deactivate / activate) on the engine's path: cpu backend, a
real 32x32 ResNet18. While paused nothing is released and no stale period is counted, a frame left waiting is
dropped as ``inactive`` (every frame stays accounted), jobs in flight still finish with a result, and releases
start again on resume. Counts only: no wall-clock bound (CI's 2 loaded cores)."""

from __future__ import annotations

import time

import numpy as np

from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

PERIOD = 0.05


def _wait(cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        time.sleep(0.01)


def test_pause_stops_releases_lets_jobs_finish_and_resume_releases_again() -> None:
    tasks = (TaskSettings("cam", "/cam", "HP", PERIOD, PERIOD, "resnet18", input_size=(32, 32)),)
    s = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                          worker_stage_timeout=0.0, skip_late=0.0)
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    frame = np.zeros((32, 32, 3), np.uint8)
    try:
        e.load_models()
        e.profile()
        assert e.pause_releases() == 0  # before start: the engine starts paused
        e.start()
        assert not e.releasing
        e.offer("cam", frame)
        time.sleep(0.3)  # several periods: nothing released, no stale period counted
        counters, pending = e.inbox.snapshot()["cam"]
        assert (counters.taken, counters.stale, pending) == (0, 0, 1)

        e.resume_releases()
        assert e.releasing
        _wait(lambda: e.inbox.snapshot()["cam"][0].taken == 1)  # the waiting frame goes at once
        for _ in range(5):  # frames at the camera's pace
            e.offer("cam", frame)
            time.sleep(PERIOD)
        e.offer("cam", frame)
        dropped = e.pause_releases()
        released = e.scheduler.task_stats()["cam"].released
        drain(e, 60.0)  # jobs in flight run to their results
        assert len(results) == e.scheduler.task_stats()["cam"].admitted
        time.sleep(0.3)
        assert e.scheduler.task_stats()["cam"].released == released  # nothing released while paused
        counters, pending = e.inbox.snapshot()["cam"]
        assert pending == 0 and counters.dropped.get("inactive", 0) == dropped
        assert counters.frames == counters.taken + counters.superseded + counters.dropped_total + pending

        e.resume_releases()
        e.offer("cam", frame)
        _wait(lambda: e.scheduler.task_stats()["cam"].released > released)
        drain(e, 60.0)
        assert len(results) == e.scheduler.task_stats()["cam"].admitted
    finally:
        e.close()
