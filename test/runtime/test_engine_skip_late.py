"""Bounded staleness under overload on the engine's path (cpu backend, real models and worker threads).

The single stream is made slow at run time (the cpu backend's fault injection: every stage of the next ones takes
``HANG`` s longer, as if another process held the device; the watchdog is off, so nothing is retried): the HP
task's jobs take far longer than its period. Without ``skip_late`` every admitted job stays in flight until it
has run, so the jobs in flight pile up for as long as the device is slow. With ``skip_late: 2`` a job not
started within two deadlines of its release is skipped: the jobs in flight stay a handful, the skipped ones are
counted (``TaskStats.skipped``), give no result, and every admitted job ends once (completed or skipped).

The assertions are about what the engine and the core decide (counts, the jobs in flight), with margins that
hold on a loaded 2-core machine: the bound with skipping is a third of what the slowdown piles up without it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daris_ros.core import Priority
from daris_ros.runtime.driver import SyntheticCameras, drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

PERIOD = 0.05  # 20 Hz, deadline = period
HANG = 0.1  # s added to each slow stage
SLOW_STAGES = 16  # ~1.6 s of a device 8x slower than the task needs (a ResNet18 job is 4 stages)


def _engine(skip_late: float) -> tuple[Engine, list[JobResult]]:
    tasks = (TaskSettings("hp", "/hp", "HP", PERIOD, PERIOD, "resnet18", input_size=(32, 32)),)
    s = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                          worker_stage_timeout=0.0, skip_late=skip_late, release_trigger="clock")
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    e.load_models()
    e.profile()
    e.start()
    return e, results


def _slow_run(skip_late: float) -> tuple[Engine, list[JobResult], int, float]:
    """Warm up, slow the stream down, sample the jobs in flight until it is fast again, then drain. Returns the
    engine, the results, the most jobs in flight and when the slowdown began (the engine's clock)."""
    e, results = _engine(skip_late)
    peak = 0
    try:
        with SyntheticCameras(e, ["hp"], np.zeros((32, 32, 3), np.uint8)):
            time.sleep(0.5)  # warm: a few jobs run at full speed
            began = time.monotonic()
            e.backend.inject_fault("hang", 0, 0, seconds=HANG, times=SLOW_STAGES, wait_busy=0.0)
            t_end = began + SLOW_STAGES * HANG + 0.3
            while time.monotonic() < t_end:
                peak = max(peak, e.in_flight())
                time.sleep(0.01)
        drain(e, 30.0)
    finally:
        e.close()
    return e, results, peak, began


@pytest.mark.slow
def test_a_slow_stream_piles_up_jobs_without_skip_late_and_not_with_it() -> None:
    off, off_results, off_peak, _ = _slow_run(0.0)
    on, on_results, on_peak, began = _slow_run(2.0)

    # without: the paper's rule, every admitted job runs however late; ~1.6 s of releases pile up
    s_off = off.scheduler.task_stats()["hp"]
    assert s_off.skipped == 0 and s_off.completed == s_off.admitted == len(off_results)
    assert off_peak >= 15, off_peak

    # with: unstarted jobs stay within 2 deadlines of their release (3 per task at 20 Hz) plus the started one(s)
    s_on = on.scheduler.task_stats()["hp"]
    assert on_peak <= 6 and on_peak * 3 <= off_peak, (on_peak, off_peak)
    assert s_on.skipped >= 5, s_on
    assert s_on.completed + s_on.skipped == s_on.admitted  # every admitted job ended once
    ids = [r.job_id for r in on_results]
    assert len(ids) == len(set(ids)) == s_on.completed  # a skipped job has no result, a completed one one
    assert not [r for r in on_results if r.error]
    # the results of the slow period are fresh: no job started later than 2 deadlines after its release
    slow = [r for r in on_results if r.release_time >= began]
    assert slow and max(r.start_time - r.release_time for r in slow) < 2 * PERIOD + 0.05
    assert on.scheduler.priority_stats()[Priority.HP].skipped == s_on.skipped
    assert s_on.dmr == pytest.approx((s_on.missed + s_on.skipped) / s_on.admitted)
