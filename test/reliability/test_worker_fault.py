"""Worker faults on the cpu backend, engine level (issue 8, item 2 on the CPU): real models on real worker
threads, jobs released periodically by a driver thread. A worker killed mid-stage or hung is detected by
the engine's watchdog and replaced; the stage it was running is retried (never lost, never delivered
twice); a second loss of the same stage fails its job (error, not met); HP jobs released after the
recovery all meet their deadlines. When the dead worker was its context's only one, the context is down
in the core until the replacement serves: its tasks and the lost stage move to the other context."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daris_ros.runtime.driver import SyntheticCameras, drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.watchdog import MAX_STAGE_RETRIES
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

HP_PERIOD = 0.1
LP_PERIOD = 0.2
HP_MARGIN = 10  # deadline = HP_MARGIN periods (see _engine)
RECOVERY_MS = 1400  # a lost stage re-run elsewhere within this (tens of ms when quiet), before a 1.5 s replacement


def _engine(stage_timeout: float = 0.3, *, policy: str = "MPS", n_contexts: int = 2, n_streams: int = 1
            ) -> tuple[Engine, list[JobResult]]:
    # small inputs and generous deadlines: the CI machine's 2 cores are shared, and this is about faults.
    # MPS 2x1: a dead worker takes its context down (Engine._context_scoped); STR 1x2: only its stream
    # Deadlines of HP_MARGIN periods: what is asserted is the fault handling (detected, context down, reassigned,
    # retried, replaced); a 100 ms deadline on CI's loaded 2 cores was missed 19-56 times without any fault
    # handling at fault (issue 15); a lost or unretried stage still fails the accounting (its job never ends)
    tasks = (TaskSettings("hp", "/hp", "HP", HP_PERIOD, HP_MARGIN * HP_PERIOD, "resnet18", input_size=(32, 32)),
             TaskSettings("lp", "/lp", "LP", LP_PERIOD, HP_MARGIN * LP_PERIOD, "resnet18", input_size=(32, 32)))
    s = SchedulerSettings(policy=policy, n_contexts=n_contexts, n_streams=n_streams, profile_runs=3, tasks=tasks,
                          worker_stage_timeout=stage_timeout)
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    e.load_models()
    e.profile()
    e.start()
    return e, results


def _driver(e: Engine) -> SyntheticCameras:
    """Cameras that always have a frame: the engine releases hp every HP_PERIOD, lp every LP_PERIOD."""
    return SyntheticCameras(e, ["hp", "lp"], np.zeros((24, 32, 3), np.uint8))


def _drain(e: Engine, timeout: float = 5.0) -> None:
    drain(e, timeout)


def _hp_context(e: Engine) -> int:
    return e.call(lambda core: core.context_of("hp"))


def test_killed_worker_replaced_stage_retried_no_hp_miss_after():
    e, results = _engine()
    try:
        with _driver(e):
            time.sleep(1.0)  # warm
            c = _hp_context(e)
            kills = []
            for _ in range(3):
                assert e.backend.inject_fault("kill", c, 0), "the kill must hit a stage in flight"
                kills.append(time.monotonic())
                time.sleep(0.6)
        _drain(e)
    finally:
        e.close()
    recs = list(e.faults.records)
    assert [(r.reason, r.outcome, r.context) for r in recs] == [("died", "retried", c)] * 3
    for r in recs:
        assert r.detection_ms is not None and 0 <= r.detection_ms < 500, r.as_dict()  # (poll: ms; margin for load)
        assert r.recovery_ms is not None and r.recovery_ms < RECOVERY_MS, r.as_dict()
    assert e.faults.stages_retried == 3 and e.faults.jobs_failed == 0
    # nothing lost, nothing twice: every admitted job has exactly one result, none with an error, unless it was
    # skipped unstarted (skip_late: counted, no result)
    stats = e.scheduler.task_stats()
    for task in ("hp", "lp"):
        ids = [r.job_id for r in results if r.task == task]
        assert len(ids) == len(set(ids)) == stats[task].completed == stats[task].admitted - stats[task].skipped
    assert not [r for r in results if r.error]
    killed = {(r.task, r.job_id) for r in recs}
    assert killed <= {(r.task, r.job_id) for r in results}  # (a retried job has started: never skipped)
    last_recovery = max(r.recovered for r in recs)
    after = [r for r in results if r.priority == "HP" and r.release_time > last_recovery]
    assert len(after) >= 5
    assert [r.job_id for r in after if not r.met] == [], "HP misses after recovery"


def test_hung_worker_replaced_late_result_ignored_and_second_loss_fails_the_job():
    # one context of one stream: a stage lost with its worker is queued again in the core and runs on the hung
    # worker's replacement, so with an input that hangs any worker (hang_times kept across replacements) the retry
    # is lost again, whatever the machine's load does to the timing (with two streams, a loaded CI machine once ran
    # every retry on a worker whose hangs were used up: no second loss)
    e, results = _engine(stage_timeout=0.3, policy="STR", n_contexts=1, n_streams=1)
    try:
        with _driver(e):
            time.sleep(1.0)
            c = _hp_context(e)
            assert e.backend.inject_fault("hang", c, 0, seconds=1.0)  # one stage hangs for 1 s
            time.sleep(2.0)
            first = list(e.faults.records)
            # an input that hangs any worker: the stream hangs on its next stages, so a lost stage is lost again.
            # Which job each hang hits depends on the timing (a job queued before the retry can take a hang), so
            # there are hangs for several jobs, and the test waits for the first job that fails rather than a fixed
            # time (under two CPU hogs a 3 s wait with MAX_STAGE_RETRIES + 1 hangs once saw no second loss)
            e.backend.inject_fault("hang", c, 0, seconds=0.8, times=3 * (MAX_STAGE_RETRIES + 1), wait_busy=0.0)
            t_end = time.monotonic() + 60.0
            while not any(r.outcome == "failed" for r in e.faults.records):
                assert time.monotonic() < t_end, [(r.reason, r.outcome) for r in e.faults.records]
                time.sleep(0.05)
        _drain(e, 30.0)
    finally:
        e.close()
    assert [(r.reason, r.outcome) for r in first] == [("hung", "retried")]
    assert first[0].recovery_ms is not None and first[0].recovery_ms < RECOVERY_MS
    recs = list(e.faults.records)
    assert {r.reason for r in recs} == {"hung"} and {r.outcome for r in recs} <= {"retried", "failed"}
    assert e.faults.stale_completions >= 1  # the hung threads delivered late: ignored
    failed = [r for r in results if r.error]
    assert failed and all(not r.met and "lost twice" in r.error for r in failed), failed
    assert {(r.task, r.job_id) for r in failed} == {(r.task, r.job_id) for r in recs if r.outcome == "failed"}
    assert e.faults.jobs_failed == len(failed)
    stats = e.scheduler.task_stats()
    for task in ("hp", "lp"):
        ids = [r.job_id for r in results if r.task == task]
        assert len(ids) == len(set(ids)) == stats[task].completed == stats[task].admitted - stats[task].skipped


def test_dead_idle_worker_replaced():
    e, _ = _engine()
    try:
        c = 1 - _hp_context(e)
        assert not e.backend.inject_fault("kill", c, 0, wait_busy=0.0)  # nothing released: idle
        t0 = time.monotonic()
        while not e.faults.records:
            assert time.monotonic() - t0 < 2.0
            time.sleep(0.01)
        rec = e.faults.records[0]
        while rec.recovered is None:
            assert time.monotonic() - t0 < 2.0
            time.sleep(0.01)
        assert (rec.reason, rec.outcome) == ("died", "idle") and e.backend.worker_alive(c, 0)
    finally:
        e.close()


def test_context_down_while_a_slow_replacement_starts_hp_reassigned_lp_migrates():
    """A replacement that takes 1.5 s to start (an MPS worker process without a ready spare takes ~5 s on
    the H200): meanwhile the dead worker's context is down in the core, its tasks run on the other
    context (HP reassigned, LP migrated), the lost stage is retried there at once, and nothing misses."""
    e, results = _engine()
    try:
        with _driver(e):
            time.sleep(1.0)
            c_hp, c_lp = e.call(lambda core: (core.context_of("hp"), core.context_of("lp")))
            assert c_hp != c_lp  # Algorithm 1 puts them on different contexts
            assert e.backend.inject_fault("kill", c_hp, 0, seconds=1.5)
            time.sleep(0.5)
            assert e.call(lambda core: (core.context_of("hp"), core.contexts_down)) == (c_lp, {c_hp})
            time.sleep(2.0)  # replaced by now; then the LP task's context
            assert e.backend.inject_fault("kill", c_lp, 0, seconds=1.5, wait_busy=2.0)
            time.sleep(0.5)
            assert e.call(lambda core: (core.context_of("lp"), core.contexts_down)) == (c_hp, {c_lp})
            time.sleep(2.0)
        _drain(e)
    finally:
        e.close()
    r1, r2 = list(e.faults.records)
    assert (r1.context, r1.outcome, r1.moved, r1.moved_back) == (c_hp, "retried", {"hp": c_lp}, {"hp": c_hp})
    assert (r2.context, r2.outcome, r2.moved_back) == (c_lp, "retried", {"lp": c_lp})
    assert r2.moved == {"lp": c_hp}
    for r in (r1, r2):
        assert r.replaced - r.detected >= 1.4  # the slow replacement
        # the lost stage was re-run on the other context long before the replacement served
        assert r.recovery_ms is not None and r.recovery_ms < RECOVERY_MS, r.as_dict()
        assert r.recovered < r.replaced
    stats = e.scheduler.task_stats()  # (the loop has stopped: the core is read directly)
    assert e.scheduler.contexts_down == frozenset()
    assert (e.scheduler.context_of("hp"), e.scheduler.context_of("lp")) == (c_hp, c_lp)
    assert stats["hp"].migrations == 2 and stats["lp"].migrations >= 2
    during = [r for r in results if r.task == "hp" and r1.detected < r.release_time < r1.replaced]
    assert len(during) >= 10 and {r.context for r in during} == {c_lp}  # HP ran on the other context
    hp = [r for r in results if r.task == "hp"]
    assert [r.job_id for r in hp if not r.met] == [], "HP misses"
    assert not [r for r in results if r.error]
    for task in ("hp", "lp"):
        ids = [r.job_id for r in results if r.task == task]
        assert len(ids) == len(set(ids)) == stats[task].completed == stats[task].admitted - stats[task].skipped
