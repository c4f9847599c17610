"""The event-driven scheduler facade (docs/core_api.md), on small hand-computed scenarios."""

from __future__ import annotations

import pytest

from daris_ros.core import (
    Dispatch,
    JobOutcome,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
)

HP, LP = Priority.HP, Priority.LP


def one_ctx(**kw: object) -> SchedulerConfig:
    return SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, **kw)  # type: ignore[arg-type]


def run_stage(s: Scheduler, now: float) -> Dispatch:
    ds = s.dispatch(now)
    assert len(ds) == 1
    return ds[0]


def test_single_job_walkthrough() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("a", 8.0, HP, 2, (1.0, 3.0))])
    assert s.mret("a") == 4.0 and s.task_utilization("a") == 0.5
    r = s.release("a", 0.0)
    assert r.admitted and r.reason == "admitted-hp" and r.job_id == 0 and r.context == 0
    job = r.job
    assert job is not None
    assert job.stage_deadlines == (2.0, 8.0) and job.abs_deadline == 8.0 and job.start is None
    d0 = run_stage(s, 0.5)
    assert (d0.stage, d0.stream, d0.level, d0.virtual_deadline, d0.model_stages) == (0, 0, 3, 2.0, (0,))
    assert d0 == Dispatch((job,), 0, 0, 0, 1, "a", (3,), 2.0, 1.5, (0,), 0.5, 0)  # one job, size 1, behind 0
    assert d0.job is job and d0.predicted_finish == 0.5 + 1.0  # start + the stage's MRET (its AFET here)
    assert job.start == 0.5 and d0.start == 0.5
    assert s.dispatch(0.5) == []  # the only stream is busy
    assert s.complete(d0, 1.5) == []  # et = 1.0 (now - start), on time for its virtual deadline 2
    d1 = run_stage(s, 1.5)
    assert (d1.stage, d1.level) == (1, 1)  # HP last stage
    out = s.complete(d1, 5.0, exec_time=3.5)
    assert out == [JobOutcome(job, 5.0, 5.0, True)]
    assert s.stage_mrets("a") == (1.0, 3.5) and s.mret("a") == 4.5
    ts = s.task_stats()["a"]
    assert (ts.released, ts.admitted, ts.completed, ts.missed) == (1, 1, 1, 0)
    assert list(ts.response_times) == [5.0]


def test_missed_virtual_deadline_raises_next_stage() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("a", 12.0, LP, 3, (1.0, 1.0, 1.0))])
    s.release("a", 0.0)  # stage deadlines 4, 8, 12
    d = run_stage(s, 0.0)
    assert d.level == 7  # LP normal
    s.complete(d, 5.0)  # misses virtual deadline 4
    d = run_stage(s, 5.0)
    assert d.level == 6  # LP delayed (not last)
    s.complete(d, 7.0)  # meets 8
    d = run_stage(s, 7.0)
    assert d.level == 5  # LP last, not delayed
    (out,) = s.complete(d, 8.0)
    assert out.met


def test_last_and_delayed_is_the_top_level_of_its_class() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("h", 4.0, HP, 2, (1.0, 1.0))])
    s.release("h", 0.0)  # stage deadlines 2, 4
    s.complete(run_stage(s, 0.0), 3.0)
    assert run_stage(s, 3.0).level == 0  # HP last + delayed


def test_hp_stage_is_served_before_an_earlier_lp_stage() -> None:
    s = Scheduler(
        one_ctx(), [TaskSpec("l", 10.0, LP, 2, (1.0, 1.0)), TaskSpec("h", 100.0, HP, 2, (1.0, 1.0))]
    )
    s.release("l", 0.0)
    d = run_stage(s, 0.0)
    s.release("h", 0.5)  # released later, much later deadline, but HP
    s.complete(d, 1.0)
    assert run_stage(s, 1.0).job.task == "h"


def test_late_job_keeps_running_and_counts_as_missed() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("a", 2.0, LP, 2, (0.5, 0.5))])
    s.release("a", 0.0)
    s.complete(run_stage(s, 0.0), 3.0)  # the whole deadline (2.0) has passed before stage 2
    d = run_stage(s, 3.0)  # still dispatched (soft real time)
    (out,) = s.complete(d, 3.5)
    assert not out.met and out.response_time == 3.5
    assert s.task_stats()["a"].missed == 1
    ps = s.priority_stats()[LP]
    assert (ps.admitted, ps.completed, ps.missed, ps.dmr) == (1, 1, 1, 1.0)


def test_streams_run_one_stage_each_and_lowest_stream_first() -> None:
    cfg = SchedulerConfig(Policy.STR, n_streams=2)
    s = Scheduler(cfg, [TaskSpec(n, 10.0, LP, 1, (0.1,)) for n in ("a", "b", "c")])
    for n in ("a", "b", "c"):
        assert s.release(n, 0.0).admitted
    ds = s.dispatch(0.0)
    assert [(d.job.task, d.stream) for d in ds] == [("a", 0), ("b", 1)]
    assert s.idle_streams(0) == 0 and s.queue_length(0) == 1
    s.complete(ds[1], 1.0)
    (d,) = s.dispatch(1.0)
    assert (d.job.task, d.stream) == ("c", 1)
    with pytest.raises(ValueError):
        s.complete(ds[1], 1.0)  # stream 1 now runs c, not b


def test_job_ids_count_releases_including_rejections() -> None:
    # u = 0.75 each; the second job of the same task is rejected while the first is active
    s = Scheduler(one_ctx(), [TaskSpec("a", 1.0, LP, 1, (0.75,))])
    r0 = s.release("a", 0.0)
    r1 = s.release("a", 0.1)
    assert r0.admitted and r0.job_id == 0
    assert not r1.admitted and r1.job is None and r1.job_id == 1 and r1.reason == "rejected-eq12"
    s.complete(run_stage(s, 0.1), 0.5)
    r2 = s.release("a", 1.0)
    assert r2.admitted and r2.job is not None and r2.job.job_id == 2
    ts = s.task_stats()["a"]
    assert (ts.released, ts.admitted, ts.rejected) == (3, 2, 1)
    assert s.priority_stats()[LP].rejected == 1


def test_hp_is_always_admitted_without_hpa() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("h", 1.0, HP, 1, (5.0,))])  # u = 5
    assert all(s.release("h", t / 10).admitted for t in range(5))


def test_active_lp_utilization_follows_unfinished_jobs() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("l", 4.0, LP, 1, (1.0,))])
    assert s.utilization(0).active_lp == 0.0
    s.release("l", 0.0)
    assert s.utilization(0).active_lp == 0.25 and s.utilization(0).active == 0.25
    s.complete(run_stage(s, 0.0), 2.0)  # measured et 2.0 -> u = 0.5 ; job done -> inactive
    u = s.utilization(0)
    assert (u.lp, u.active_lp, u.total) == (0.5, 0.0, 0.5)
    assert s.backlog(0) == 0.0 and s.outstanding_stages() == 0


def test_lp_migrates_to_passing_context_and_old_job_stays() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=2)
    tasks = [
        TaskSpec("h", 1.0, HP, 1, (0.5,)),
        TaskSpec("l1", 1.0, LP, 1, (0.5,)),
        TaskSpec("l2", 1.0, LP, 1, (0.5,)),
    ]
    s = Scheduler(cfg, tasks)
    # Alg. 1: h -> 0 ; l1 -> 1 ; l2 -> 0 (0.5 = 0.5, lowest index)
    assert [s.context_of(n) for n in ("h", "l1", "l2")] == [0, 1, 0]
    # l2 in ctx0: 0 + 0.5 < 1 - 0.5 fails; ctx1: 0 + 0.5 < 1 passes -> migrate
    r = s.release("l2", 0.0)
    assert r.admitted and (r.context, r.migrated_from, r.reason) == (1, 0, "migrated")
    assert r.job is not None and r.job.context == 1 and r.job.migrated_from == 0
    assert s.context_of("l2") == 1
    assert (s.utilization(0).lp, s.utilization(1).lp, s.utilization(1).active_lp) == (0.0, 1.0, 0.5)
    # l1 in ctx1: 0.5 + 0.5 < 1 fails; ctx0: 0 + 0.5 < 0.5 fails -> rejected, no migration
    r1 = s.release("l1", 0.1)
    assert not r1.admitted and r1.context == 1 and r1.migrated_from is None
    (d,) = s.dispatch(0.1)
    assert d.job is r.job and d.context == 1
    # h gets lighter: ctx0 now has room; l2's next job migrates back while its first job still runs
    s.update_task("h", period=4.0)  # u_h = 0.125
    r2 = s.release("l2", 0.5)
    assert (r2.context, r2.migrated_from) == (0, 1)
    assert s.utilization(1).active_lp == 0.5  # the old job still counts where it runs
    assert s.utilization(0).active_lp == 0.5
    (out,) = s.complete(d, 0.6)
    assert out.job.context == 1
    assert s.utilization(1).active_lp == 0.0
    assert s.task_stats()["l2"].migrations == 2 and s.priority_stats()[LP].migrations == 2


def test_hpa_rejects_and_holds_utilization_until_deadline() -> None:
    tasks = [TaskSpec("a", 1.0, HP, 1, (0.5,)), TaskSpec("b", 1.0, HP, 1, (0.5,))]
    s = Scheduler(one_ctx(hp_admission=True), tasks)
    assert s.release("a", 0.0).admitted  # 0 + 0.5 < 1
    assert s.utilization(0).active_hp == 0.5
    rb = s.release("b", 0.0)
    assert not rb.admitted and rb.reason == "rejected-hpa"
    s.complete(run_stage(s, 0.0), 0.5, exec_time=0.5)
    assert s.utilization(0).active_hp == 0.5  # finished, but its window [0, 1) is still open
    assert not s.release("b", 0.6).admitted
    assert s.release("b", 1.0).admitted  # a's deadline 1.0 has passed: its utilization is released
    assert s.utilization(0).active_hp == 0.5
    s.complete(run_stage(s, 1.0), 1.5)
    s.expire(2.0)
    assert s.utilization(0).active_hp == 0.0
    assert s.priority_stats()[HP].rejected == 2
    # without HPA the same releases are all admitted
    s2 = Scheduler(one_ctx(), tasks)
    assert s2.release("a", 0.0).admitted and s2.release("b", 0.0).admitted


def test_hpa_overrunning_job_releases_at_finish() -> None:
    s = Scheduler(one_ctx(hp_admission=True), [TaskSpec("a", 1.0, HP, 1, (0.25,))])
    s.release("a", 0.0)
    d = run_stage(s, 0.0)
    s.expire(1.5)  # deadline passed, job unfinished: still active
    assert s.utilization(0).active_hp == 0.25
    s.complete(d, 2.0, exec_time=0.25)
    assert s.utilization(0).active_hp == 0.0


def test_no_staging_collapses_the_task_to_one_stage() -> None:
    s = Scheduler(one_ctx(no_staging=True), [TaskSpec("a", 10.0, HP, 4, (1.0, 2.0, 3.0, 4.0))])
    assert s.stage_mrets("a") == (10.0,) and s.mret("a") == 10.0
    r = s.release("a", 0.0)
    assert r.job is not None and r.job.n_stages == 1 and r.job.n_model_stages == 4
    assert r.job.stage_deadlines == (10.0,)
    d = run_stage(s, 0.0)
    assert d.model_stages == (0, 1, 2, 3) and d.level == 1 and d.is_last
    assert len(s.complete(d, 6.0)) == 1 and s.mret("a") == 6.0


def test_ablation_levels_in_the_scheduler() -> None:
    spec = TaskSpec("a", 3.0, HP, 2, (1.0, 1.0))
    for kw, levels in (
        ({}, [3, 0]),
        ({"no_last": True}, [3, 2]),
        ({"no_prior": True}, [3, 1]),
        ({"no_fixed": True}, [0, 0]),
    ):
        s = Scheduler(one_ctx(**kw), [spec])
        s.release("a", 0.0)  # stage deadlines 1.5, 3.0
        d0 = run_stage(s, 0.0)
        s.complete(d0, 2.0)  # misses 1.5
        d1 = run_stage(s, 2.0)
        assert [d0.level, d1.level] == levels, kw


def test_add_remove_update_task() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=1)
    s = Scheduler(cfg, [TaskSpec("a", 1.0, LP, 1, (0.5,))])
    s.add_task(TaskSpec("b", 1.0, LP, 1, (0.25,)))
    assert s.context_of("b") == 1  # minUtil
    with pytest.raises(ValueError):
        s.add_task(TaskSpec("b", 1.0, LP, 1, (0.25,)))
    s.update_task("b", period=0.5)
    assert s.task_utilization("b") == 0.5 and s.utilization(1).lp == 0.5
    s.update_task("b", priority=HP)
    u1 = s.utilization(1)
    assert (u1.hp, u1.lp) == (0.5, 0.0) and s.spec("b").priority is HP
    s.update_task("b", deadline=0.25)
    r = s.release("b", 0.0)
    assert r.job is not None and r.job.abs_deadline == 0.25 and r.job.priority is HP
    d = run_stage(s, 0.0)
    s.remove_task("b")
    assert s.utilization(1).hp == 0.0 and s.utilization(1).active_hp == 0.0
    with pytest.raises(KeyError):
        s.release("b", 1.0)
    (out,) = s.complete(d, 0.1)  # a removed task's running stage still completes and is accounted
    assert out.met
    assert s.task_stats()["b"].completed == 1
    assert [t.name for t in s.tasks()] == ["a"]


def test_set_mret_window_and_afet_source() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("a", 10.0, LP, 1, (1.0,))], afet_source=lambda spec: (2.0,))
    assert s.mret("a") == 2.0  # injected AFET wins over spec.afet
    for et in (5.0, 1.0, 1.0):
        s.release("a", 0.0)
        s.complete(run_stage(s, 0.0), et)
    assert s.mret("a") == 5.0
    s.set_mret_window(2)
    assert s.mret_window == 2 and s.mret("a") == 1.0 and s.task_utilization("a") == 0.1
    with pytest.raises(ValueError):
        s.set_mret_window(0)
    with pytest.raises(ValueError):
        Scheduler(one_ctx(), [TaskSpec("a", 1.0, LP, 2, (1.0, 1.0))], afet_source=lambda spec: (1.0,))


def test_response_window_bounds_history_not_counters() -> None:
    s = Scheduler(one_ctx(), [TaskSpec("a", 10.0, LP, 1, (0.1,))], response_window=2)
    for i in range(4):
        s.release("a", float(i))
        s.complete(run_stage(s, float(i)), i + 0.5 + i)
    ts = s.task_stats()["a"]
    assert ts.completed == 4 and list(ts.response_times) == [2.5, 3.5]
    assert ts.max_response == 3.5 and ts.p50 == 2.5
    assert list(s.priority_stats()[LP].response_times) == [2.5, 3.5]


def test_duplicate_and_unknown_names() -> None:
    with pytest.raises(ValueError):
        Scheduler(one_ctx(), [TaskSpec("a", 1.0, LP, 1, (0.1,)), TaskSpec("a", 1.0, LP, 1, (0.1,))])
    s = Scheduler(one_ctx(), [])
    with pytest.raises(KeyError):
        s.release("nope", 0.0)
    with pytest.raises(KeyError):
        s.context_of("nope")


def test_sm_per_context_and_layout() -> None:
    s = Scheduler(SchedulerConfig(Policy.MPS, n_contexts=6, n_streams=4, oversubscription=2, n_sm_max=68), [])
    assert s.sm_per_context() == 24 and s.layout.n_streams == 1
    assert (
        Scheduler(SchedulerConfig(Policy.STR, n_contexts=6, n_streams=4, n_sm_max=68), []).sm_per_context()
        == 68
    )
