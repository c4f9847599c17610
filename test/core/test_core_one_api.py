"""One core API (issue 14 item 1): ``dispatch`` / ``complete`` / ``abort`` / ``next_wakeup`` with batching on
and off, and the features that used to work in one mode only: abort and context_down/up with batching,
launch-ahead with batching off, re-probing and HPA with batching. Hand-computed scenarios; the random ones
are in test_core_properties.py (``test_property_one_api_invariants``)."""

from __future__ import annotations

import pytest

from daris_ros.core import (
    BatchingConfig,
    Dispatch,
    JobOutcome,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
)

HP, LP = Priority.HP, Priority.LP


def linear_batch_time(base: float, per_job: float):
    """An injected batch-time estimate: base + per_job * size for every (model, stage)."""
    return lambda model, stage, size: base + per_job * size


def drain(s: Scheduler, now: float, running: list[Dispatch], step: float = 0.01) -> tuple[float, list[JobOutcome]]:
    """Complete the running dispatches one at a time (oldest first) and dispatch after each, until nothing is
    left. Returns the time and the outcomes."""
    outcomes: list[JobOutcome] = []
    running += s.dispatch(now)
    while running or s.outstanding_stages():
        assert running, "stages outstanding but nothing runs"
        d = running.pop(0)
        now = max(now, d.start) + step
        outcomes += s.complete(d, now, step)
        running += s.dispatch(now)
    return now, outcomes


# ---------------------------------------------------------------------------- abort with batching
def test_abort_of_a_batch_of_three_requeues_all_three_and_measures_nothing() -> None:
    tasks = [TaskSpec(f"t{i}", 0.1, LP, 2, (1e-3, 1e-3), model="m") for i in range(3)]
    cfg = SchedulerConfig(Policy.STR, n_streams=1, batching=BatchingConfig(sizes=(1, 3), lp_admit_margin=None))
    s = Scheduler(cfg, tasks, batch_afet=linear_batch_time(1e-3, 1e-4))
    jobs = [s.release(t.name, 0.0).job for t in tasks]
    queued_before, backlog_before = s.queued(0), s.backlog(0)
    mret_before, times_before = [s.mret(t.name) for t in tasks], s.batch_times()
    (d,) = s.dispatch(0.0)
    assert d.jobs == tuple(jobs) and d.size == 3 and d.levels == (7, 7, 7)  # LP, not last
    assert s.queue_length(0) == 0 and s.idle_streams(0) == 0
    s.abort(d, 0.001)
    assert s.running(0) == [] and s.idle_streams(0) == 1  # the stream is free
    assert s.queued(0) == queued_before and s.queue_length(0) == 3  # every stage back, level and deadline kept
    assert s.outstanding_stages() == 3 and s.backlog(0) == pytest.approx(backlog_before)
    assert [s.mret(t.name) for t in tasks] == mret_before and s.batch_times() == times_before  # nothing measured
    (d2,) = s.dispatch(0.001)  # the next dispatch takes them again
    assert (d2.jobs, d2.stage, d2.levels, d2.virtual_deadline, d2.size) == (
        d.jobs, 0, d.levels, d.virtual_deadline, 3)
    assert d2.start == 0.001 and d2.predicted_finish == pytest.approx(0.001 + 1.3e-3)
    with pytest.raises(ValueError, match="not running this dispatch"):
        s.abort(d, 0.002)  # already aborted
    assert s.complete(d2, 0.003, 0.002) == []
    assert s.batch_times()[("m", 0, 3)] == pytest.approx(0.002)  # the run that happened is measured, once
    _, outcomes = drain(s, 0.003, [])
    assert sorted(o.job.task for o in outcomes) == ["t0", "t1", "t2"] and all(o.met for o in outcomes)
    assert s.outstanding_stages() == 0 and s.backlog(0) == 0.0
    bs = s.batch_stats()
    assert bs.batches == 3 and bs.jobs == 9  # the aborted batch counts as dispatched


# ---------------------------------------------------------------------------- abort behind (launch-ahead)
def ahead_scheduler(batching: bool, n_tasks: int = 3) -> Scheduler:
    """1 stream, one-stage LP tasks; a stage (a batch of 1) takes 2 ms; launch-ahead 1 with a 0.5 ms lead."""
    tasks = [TaskSpec(f"t{i}", 0.1, LP, 1, (2e-3,), model="m") for i in range(n_tasks)]
    cfg = SchedulerConfig(Policy.STR, n_streams=1, launch_ahead=1, ahead_lead=0.5e-3,
                          batching=BatchingConfig(sizes=(1, 2), lp_admit_margin=None) if batching else None)
    return Scheduler(cfg, tasks, batch_afet=linear_batch_time(1e-3, 1e-3) if batching else None)


@pytest.mark.parametrize("batching", [False, True])
def test_abort_of_a_dispatch_queued_behind_another(batching: bool) -> None:
    s = ahead_scheduler(batching)
    job0 = s.release("t0", 0.0).job
    (d1,) = s.dispatch(0.0)
    assert d1.predicted_finish == pytest.approx(2e-3)
    job1 = s.release("t1", 1e-3).job
    assert s.dispatch(1e-3) == [] and s.next_wakeup() == pytest.approx(1.5e-3)
    (d2,) = s.dispatch(1.5e-3)
    assert (d2.jobs, d2.behind, d2.stream, d2.start) == ((job1,), 1, d1.stream, pytest.approx(2e-3))
    assert s.queued_behind(0) == [d2] and s.running(0) == [d1]
    times = s.batch_times(), s.stage_mrets("t1")
    s.abort(d2, 1.6e-3)  # lost while queued behind d1: its stage is queued again, d1 keeps running
    assert s.queued_behind(0) == [] and s.running(0) == [d1] and s.idle_streams(0) == 0
    assert s.queued(0) == [(d2.level, job1, 0)] and s.outstanding_stages() == 2
    assert s.next_wakeup() == pytest.approx(1.5e-3)  # the stream's predicted free time is d1's finish again
    (d3,) = s.dispatch(1.6e-3)
    assert (d3.jobs, d3.behind, d3.start, d3.level, d3.virtual_deadline) == (
        (job1,), 1, pytest.approx(2e-3), d2.level, d2.virtual_deadline)
    s.abort(d1, 1.7e-3)  # the running one is lost: the one queued behind it runs now
    assert s.running(0) == [d3] and s.queued_behind(0) == [] and s.idle_streams(0) == 0
    assert s.queued(0) == [(d1.level, job0, 0)]
    assert s.next_wakeup() == pytest.approx(3.7e-3 - 0.5e-3)  # d3 starts 0.3 ms early: so does the stream's tail
    assert (s.batch_times(), s.stage_mrets("t1")) == times  # nothing measured for the lost runs
    (out,) = s.complete(d3, 3.5e-3, 1.8e-3)
    assert out.job is job1
    (d4,) = s.dispatch(3.5e-3)
    assert d4.jobs == (job0,) and d4.behind == 0
    (out0,) = s.complete(d4, 5.5e-3, 2e-3)
    assert out0.job is job0 and s.outstanding_stages() == 0 and s.idle_streams(0) == 1
    stats = s.task_stats()
    assert stats["t0"].completed == stats["t1"].completed == 1


# ---------------------------------------------------------------------------- launch-ahead, batching off
def test_launch_ahead_with_batching_off_queues_the_next_stage_behind_the_busy_stream() -> None:
    s = ahead_scheduler(batching=False, n_tasks=4)
    jobs = [s.release("t0", 0.0).job]
    (d1,) = s.dispatch(0.0)
    assert (d1.behind, d1.start, d1.size, d1.predicted_finish) == (0, 0.0, 1, pytest.approx(2e-3))
    jobs.append(s.release("t1", 1e-3).job)
    assert s.dispatch(1e-3) == []  # the only stream is busy, its predicted finish 1 ms away (lead 0.5 ms)
    w = s.next_wakeup()
    assert w == pytest.approx(1.5e-3) and s.dispatch(w - 1e-5) == []
    (d2,) = s.dispatch(w)
    assert (d2.job, d2.behind, d2.stream, d2.start) == (jobs[1], 1, d1.stream, pytest.approx(2e-3))
    assert d2.predicted_finish == pytest.approx(4e-3) and d2.virtual_deadline == jobs[1].stage_deadlines[0]
    assert jobs[1].start == pytest.approx(2e-3)  # its predicted start
    assert s.running(0) == [d1] and s.queued_behind(0) == [d2] and s.idle_streams(0) == 0
    jobs.append(s.release("t2", 1.6e-3).job)
    assert s.dispatch(1.6e-3) == [] and s.next_wakeup() is None  # one dispatch behind the running one at most
    with pytest.raises(ValueError, match="in order"):
        s.complete(d2, 1.7e-3, 1e-3)  # a stream's dispatches complete in order
    assert [o.job for o in s.complete(d1, 1.8e-3, 1.8e-3)] == [jobs[0]]  # 0.2 ms early: d2 starts now
    assert s.running(0) == [d2] and s.queued_behind(0) == []
    w = s.next_wakeup()
    assert w == pytest.approx(3.8e-3 - 0.5e-3)  # d2 is predicted to end 0.2 ms earlier too
    (d3,) = s.dispatch(w)
    assert (d3.job, d3.behind, d3.start) == (jobs[2], 1, pytest.approx(3.8e-3))
    assert [o.job for o in s.complete(d2, 3.9e-3, 2.1e-3)] == [jobs[1]]
    assert [o.job for o in s.complete(d3, 5.9e-3, 2e-3)] == [jobs[2]]
    assert s.running(0) == [] and s.idle_streams(0) == 1 and s.outstanding_stages() == 0
    assert s.stage_mrets("t1") == (pytest.approx(2.1e-3),)  # eq. 1 per task, as without launch-ahead
    bs = s.batch_stats()
    assert (bs.batches, bs.jobs, bs.by_size, bs.padding) == (3, 3, {1: 3}, 0.0)


def test_launch_ahead_with_batching_off_keeps_the_paper_order() -> None:
    # t1's deadline is 3.7 ms: alone on a stream freeing at 1.5 ms it makes it (3.5 ms), behind the running
    # stage (free at 2 ms) it does not (4 ms); t2 (deadline 100 ms) ranks after it (EDF) and must not overtake it
    tasks = [TaskSpec("t0", 0.1, LP, 1, (2e-3,)), TaskSpec("t1", 0.1, LP, 1, (2e-3,), deadline=0.01),
             TaskSpec("t2", 0.1, LP, 1, (2e-3,)), TaskSpec("t3", 0.1, LP, 1, (2e-3,), deadline=0.01)]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1, launch_ahead=1, ahead_lead=0.5e-3), tasks)
    s.release("t0", 0.0)
    (d1,) = s.dispatch(0.0)
    j1 = s.release("t1", -6.3e-3).job
    s.release("t2", 0.0)
    assert s.dispatch(1.5e-3) == [] and s.queue_length(0) == 2  # the head waits; nothing lower is queued instead
    s.complete(d1, 1.6e-3, 1.6e-3)
    (d2,) = s.dispatch(1.6e-3)  # the stream is free: the head goes first and makes its deadline
    assert d2.job is j1 and d2.behind == 0 and d2.predicted_finish == pytest.approx(3.6e-3)
    # a head that is late even on a free stream cannot be saved by waiting: it is queued behind at once
    late = s.release("t3", -9e-3).job  # deadline 1 ms, already past: it ranks before t2 (EDF)
    (d3,) = s.dispatch(3.6e-3 - 0.5e-3)
    assert d3.job is late and d3.behind == 1 and d3.start == pytest.approx(3.6e-3)
    assert d3.predicted_finish > d3.virtual_deadline and s.queue_length(0) == 1


def test_launch_ahead_with_batching_off_prefers_an_idle_stream() -> None:
    cfg = SchedulerConfig(Policy.STR, n_streams=2, launch_ahead=1, ahead_lead=10e-3)
    s = Scheduler(cfg, [TaskSpec(f"t{i}", 0.1, LP, 1, (2e-3,)) for i in range(3)])
    s.release("t0", 0.0)
    (d1,) = s.dispatch(0.0)
    s.release("t1", 1e-3)
    (d2,) = s.dispatch(1e-3)
    assert d2.behind == 0 and d2.stream != d1.stream  # the lead is open, but stream 1 is idle
    s.release("t2", 1e-3)
    (d3,) = s.dispatch(1e-3)
    assert d3.behind == 1 and d3.stream == d1.stream and d3.start == pytest.approx(2e-3)  # the earlier free time


def test_launch_ahead_off_is_the_paper_rule() -> None:
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1), [TaskSpec(f"t{i}", 0.1, LP, 1, (2e-3,)) for i in range(2)])
    s.release("t0", 0.0)
    (d1,) = s.dispatch(0.0)
    s.release("t1", 1.99e-3)
    assert s.dispatch(1.99e-3) == [] and s.next_wakeup() is None and s.queued_behind(0) == []
    s.complete(d1, 2e-3)
    (d2,) = s.dispatch(2e-3)
    assert d2.behind == 0 and d2.start == 2e-3


# ---------------------------------------------------------------------------- context faults with batching
def fault_tasks() -> list[TaskSpec]:
    # each task its own model (model key = task name), so Algorithm 1 places them as in
    # test_core_context_faults.py: h0:0, h1:1, h2:2, l0:2, l1:0, l2:1
    return [
        TaskSpec("h0", 10.0, HP, 2, (1.0, 1.0)),
        TaskSpec("h1", 10.0, HP, 2, (1.5, 1.5)),
        TaskSpec("h2", 10.0, HP, 2, (0.5, 0.5)),
        TaskSpec("l0", 10.0, LP, 2, (1.0, 1.0)),
        TaskSpec("l1", 10.0, LP, 2, (0.5, 0.5)),
        TaskSpec("l2", 10.0, LP, 2, (0.5, 0.5)),
    ]


def test_context_down_and_up_with_batching() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=3, batching=BatchingConfig(sizes=(1, 2, 4), lp_admit_margin=None))
    s = Scheduler(cfg, fault_tasks())
    assert {t.name: s.context_of(t.name) for t in fault_tasks()} == {
        "h0": 0, "h1": 1, "h2": 2, "l0": 2, "l1": 0, "l2": 1}
    a = s.release("h0", 0.0).job
    a2 = s.release("h0", 0.0).job
    b = s.release("l1", 0.0).job
    assert a is not None and a2 is not None and b is not None
    (d_a,) = s.dispatch(0.0)  # one batch of h0's two jobs on (0, 0); l1 (another model) waits
    assert d_a.jobs == (a, a2) and d_a.context == 0 and d_a.size == 2
    assert s.queued(0) == [(7, b, 0)]
    moved = s.context_down(0, now=0.1)
    assert moved == {"h0": 2, "l1": 1} and s.contexts_down == frozenset({0})
    # queued entries move with their level and deadline; the running batch stays accounted on 0
    assert s.queue_length(0) == 0 and s.queued(1) == [(7, b, 0)] and b.context == 1
    assert a.context == a2.context == 2 and s.running(0) == [d_a] and s.backlog(0) == pytest.approx(2.0)
    # releases avoid the down context; nothing is dispatched there
    assert s.release("h0", 0.2).context == 2 and s.release("l1", 0.2).context == 1
    running = s.dispatch(0.2)
    assert running and all(d.context != 0 for d in running)
    assert s.complete(d_a, 2.0, 2.0) == []  # the batch ends on 0; its jobs' next stages go to context 2
    assert s.idle_streams(0) == 1 and s.backlog(0) == 0.0
    assert sorted((j.job_id, st) for _, j, st in s.queued(2)) == [(0, 1), (1, 1)]  # behind h0's 3rd job on 2
    for k in range(3):
        inc, ref = s.utilization(k), s.utilization_from_scratch(k)
        assert inc.active_hp == pytest.approx(ref.active_hp) and inc.active_lp == pytest.approx(ref.active_lp)
    assert s.context_up(0, now=3.0) == {"h0": 0, "l1": 0} and s.contexts_down == frozenset()
    assert s.release("l1", 3.0).context == 0
    # a batch lost on a context that goes down: aborted, its stage goes to the job's new context
    c = s.release("h0", 3.0).job
    assert c is not None
    running += s.dispatch(3.0)
    (d_c,) = [d for d in running if d.context == 0]
    assert d_c.jobs == (c,)  # HP first: l1's stage waits on 0
    running.remove(d_c)
    s.context_down(0, now=3.1)
    s.abort(d_c, 3.1)
    assert s.running(0) == [] and s.queue_length(0) == 0 and s.backlog(0) == 0.0 and c.context == 2
    assert (d_c.level, c, 0) in s.queued(2)
    s.context_up(0, now=3.2)
    _, outcomes = drain(s, 3.2, running)
    stats = s.task_stats()
    assert all(ts.completed == ts.admitted for ts in stats.values())
    assert len(outcomes) == sum(ts.completed for ts in stats.values()) == 7  # h0: 4 jobs, l1: 3
    s.expire(1e6)
    for k in range(3):
        assert s.utilization(k).active_lp == 0.0 and s.utilization(k).active_hp == 0.0 and s.backlog(k) == 0.0


# ---------------------------------------------------------------------------- re-probing and HPA with batching
def test_reprobing_with_batching_admits_a_probe_and_keeps_the_shared_cost() -> None:
    # one stream; h (HP, u 0.5); l and k share the model "lm" (AFET 0.2). k's batch of 1 is measured at 0.9 s:
    # the model's per-job cost is 0.9 for both, and eq. 12 (0.9 < 1 - 0.5) rejects l
    cfg = SchedulerConfig(Policy.STR, n_streams=1, reprobe_after=3,
                          batching=BatchingConfig(sizes=(1, 2), lp_admit_margin=None))
    s = Scheduler(cfg, [TaskSpec("h", 1.0, HP, 1, (0.5,), model="hm"), TaskSpec("l", 1.0, LP, 1, (0.2,), model="lm"),
                        TaskSpec("k", 1.0, LP, 1, (0.2,), model="lm")])
    assert s.release("k", 0.0).admitted
    (d,) = s.dispatch(0.0)
    s.complete(d, 0.9, 0.9)
    assert s.mret("l") == pytest.approx(0.9) == s.mret("k")
    decisions = [s.release("l", 1.0 + i) for i in range(4)]
    assert [r.admitted for r in decisions] == [False, False, False, True]
    assert decisions[-1].reason == "admitted-probe" and s.reprobes() == {"l": 1}
    assert s.mret("l") == pytest.approx(0.9) == s.mret("k")  # the shared cost is the model's: not forgotten
    assert s.batch_times()[("lm", 0, 1)] == pytest.approx(0.9)
    (d,) = s.dispatch(4.0)
    assert d.jobs == (decisions[-1].job,)
    (out,) = s.complete(d, 4.1, 0.1)
    assert out.job.task == "l"
    assert not s.release("l", 5.0).admitted  # an ordinary release again: eq. 12, count restarted
    assert s.task_stats()["l"].rejected == 4 and s.reprobes() == {"l": 1}


def test_hpa_with_batching() -> None:
    tasks = [TaskSpec("a", 1.0, HP, 1, (0.5,), model="m"), TaskSpec("b", 1.0, HP, 1, (0.5,), model="m")]
    cfg = SchedulerConfig(Policy.STR, n_streams=1, hp_admission=True, batching=BatchingConfig(sizes=(1, 2)))
    s = Scheduler(cfg, tasks)
    assert s.release("a", 0.0).admitted and s.utilization(0).active_hp == 0.5
    rb = s.release("b", 0.0)
    assert not rb.admitted and rb.reason == "rejected-hpa"  # 0.5 + 0.5 < 1 fails
    (d,) = s.dispatch(0.0)
    assert [o.job.task for o in s.complete(d, 0.5, 0.5)] == ["a"]
    assert s.utilization(0).active_hp == 0.5  # finished, but its window [0, 1) is still open
    assert not s.release("b", 0.6).admitted
    assert s.release("b", 1.0).admitted  # a's deadline has passed: its utilization is released
    (d,) = s.dispatch(1.0)
    s.complete(d, 1.5, 0.5)
    s.expire(2.0)
    assert s.utilization(0).active_hp == 0.0 and s.priority_stats()[HP].rejected == 2
    # two streams: both HP jobs pass (U^r = 2), run as one batch, and hold their windows until their deadline
    cfg2 = SchedulerConfig(Policy.STR, n_streams=2, hp_admission=True, batching=BatchingConfig(sizes=(1, 2)))
    s2 = Scheduler(cfg2, tasks)
    assert s2.release("a", 0.0).admitted and s2.release("b", 0.0).admitted
    (d,) = s2.dispatch(0.0)
    assert len(d.jobs) == 2 and d.size == 2
    assert len(s2.complete(d, 0.6, 0.6)) == 2 and s2.utilization(0).active_hp == pytest.approx(1.0)
    s2.expire(1.0)
    assert s2.utilization(0).active_hp == 0.0
    u, ref = s2.utilization(0), s2.utilization_from_scratch(0)
    assert u.total == pytest.approx(ref.total) and u.active_hp == ref.active_hp
