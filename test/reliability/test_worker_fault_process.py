"""A worker *process* SIGKILLed mid-run (issue 8, item 2), in CI: the ``mps`` backend's worker processes
and shared-memory protocol, with CPU workers (``cpu_workers=True``: no GPU, no MPS daemon; the GPU run of
the same scenario is test/gpu/test_gpu_reliability.py).

Without a ready spare the replacement is a fresh process (it imports torch and loads the models: seconds).
Meanwhile the dead worker's context is down in the core: its HP task is reassigned to the other context
and its LP task migrates there, the stage that was lost is re-queued there at once, and HP keeps meeting
its deadlines. A job whose intermediate output was inside the dead worker cannot continue: it fails with
an error that says so (accounted as missed)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.driver import SyntheticCameras, drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

PERIOD = 0.1
# generous: while the replacement process starts (torch import, model load) it competes with the surviving
# worker for the CI machine's 2 cores; on the H200 the same scenario meets 30 Hz deadlines (docs/reliability)
DEADLINE = 0.4


@pytest.mark.parametrize("n_streams", [1, 2])
def test_sigkilled_worker_process_context_down_until_replaced(n_streams: int) -> None:
    # with 2 streams the dead process held up to two stages: both are re-queued, one fault, no "hung" later
    tasks = tuple(TaskSettings(name, f"/{name}", prio, PERIOD, DEADLINE, "resnet18", input_size=(32, 32))
                  for name, prio in (("hp", "HP"), ("lp", "LP"), ("lp2", "LP")))
    s = SchedulerSettings(policy="MPS+STR" if n_streams > 1 else "MPS", backend="mps", n_contexts=2,
                          n_streams=n_streams, profile_runs=3, tasks=tasks, worker_stage_timeout=10.0)
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    backend = MpsBackend(n_contexts=2, n_streams=n_streams, cpu_workers=True, spares=0)
    eng = Engine(s, on_result=on_result, backend=backend)
    driver = SyntheticCameras(eng, [t.name for t in tasks], np.zeros((24, 32, 3), np.uint8))
    try:
        eng.load_models()
        eng.profile()
        eng.start()
        c_hp = eng.call(lambda core: core.context_of("hp"))
        lp_home = eng.call(lambda core: {t: core.context_of(t) for t in ("lp", "lp2")})
        assert sorted(lp_home.values()) == [0, 1]  # Algorithm 1: HP first, then each LP to the least loaded context
        driver.start()
        time.sleep(1.5)
        old = backend.worker_pid(c_hp)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        while not eng.faults.records or eng.faults.records[0].replaced is None:
            assert time.monotonic() - t0 < 120, "the killed worker process was not replaced"
            time.sleep(0.01)
        time.sleep(2.0 if n_streams == 1 else 11.0)  # (2 streams: past the 10 s stage timeout: no stage hangs)
        driver.stop()
        drain(eng, 10.0)
        stats, down, hp_context = eng.call(lambda core: (core.task_stats(), core.contexts_down,
                                                         core.context_of("hp")))
        assert down == frozenset()
        assert hp_context == c_hp  # back home
    finally:
        driver.stop()
        eng.close()
    assert backend.worker_pid(c_hp) != old
    (rec,) = eng.faults.records
    other = 1 - c_hp
    moved_lp = {t for t, c in lp_home.items() if c == c_hp}
    assert rec.reason == "died" and rec.moved == {"hp": other, **{t: other for t in moved_lp}}
    assert rec.moved_back == {"hp": c_hp, **{t: c_hp for t in moved_lp}}
    assert rec.replaced - rec.detected > 0.3  # a fresh process, not a spare
    hp = [r for r in results if r.task == "hp"]
    during = [r for r in hp if rec.detected < r.release_time < rec.replaced]
    assert len(during) >= 3 and {r.context for r in during} == {other}, [(r.job_id, r.context) for r in during]
    assert [r.job_id for r in during if not r.met] == []
    after = [r for r in hp if r.release_time > rec.replaced]
    assert len(after) >= 10 and [r.job_id for r in after if not r.met] == []
    # every admitted job has one result (unless skipped unstarted, skip_late); the ones whose intermediate output
    # died with the worker say so
    for task in ("hp", "lp", "lp2"):
        ids = [r.job_id for r in results if r.task == task]
        assert len(ids) == len(set(ids)) == stats[task].completed == stats[task].admitted - stats[task].skipped
    # the stage in flight was re-run; a job whose intermediate output was in the dead worker says so
    assert rec.outcome == "retried" and rec.recovery_ms is not None and rec.recovery_ms < 1000, rec.as_dict()
    failed = [r for r in results if r.error]
    assert len(failed) <= 2 and all("lost with a replaced worker" in r.error and not r.met for r in failed), [
        r.error for r in failed]
