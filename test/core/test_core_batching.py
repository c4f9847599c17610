"""Cross-task stage batching in the policy core (docs/policy.md, "Cross-task stage batching")."""

from __future__ import annotations

import math

import pytest

from daris_ros.core import (
    BatchingConfig,
    Dispatch,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
)
from daris_ros.core.batching import BatchQueue, BatchTimes, SharedStageCost

HP, LP = Priority.HP, Priority.LP


def linear_batch_time(base: float = 1e-3, per_job: float = 1e-4):
    """An injected batch-time estimate: base + per_job * size for every (model, stage)."""
    return lambda model, stage, size: base + per_job * size


def sched(tasks: list[TaskSpec], *, n_streams: int = 1, batch_afet=None, launch_ahead: int = 0,
          ahead_lead: float = 0.001, **bcfg) -> Scheduler:
    cfg = SchedulerConfig(Policy.STR, n_streams=n_streams, launch_ahead=launch_ahead, ahead_lead=ahead_lead,
                          batching=BatchingConfig(**bcfg))
    return Scheduler(cfg, tasks, batch_afet=batch_afet if batch_afet is not None else linear_batch_time())


def task(i: int, prio: Priority = LP, model: str = "m", n_stages: int = 2, period: float = 0.1) -> TaskSpec:
    return TaskSpec(f"t{i}", period, prio, n_stages, (1e-3,) * n_stages, model=model)


# ---------------------------------------------------------------------------- config and pieces
def test_batching_is_off_by_default_and_one_api_serves_both_modes() -> None:
    assert SchedulerConfig().batching is None
    plain = Scheduler(SchedulerConfig(Policy.STR, n_streams=2), [task(0), task(1)])
    batched = sched([task(0), task(1)], n_streams=2)
    for s, sizes in ((plain, [1, 1]), (batched, [2])):
        s.release("t0", 0.0)
        s.release("t1", 0.0)
        ds = s.dispatch(0.0)  # stage 0 of both jobs: two dispatches of one job, or one batch of two
        assert all(isinstance(d, Dispatch) for d in ds) and [d.size for d in ds] == sizes
        assert sorted(j.task for d in ds for j in d.jobs) == ["t0", "t1"]
        assert all(d.model == "m" and d.stage == 0 and d.behind == 0 and d.start == 0.0 for d in ds)
        assert all(d.levels == (7,) * len(d.jobs) and d.level == 7 for d in ds)  # LP, not last
        assert s.next_wakeup() is None
        for d in ds:
            assert s.complete(d, 0.002) == []  # stage 0 of 2: no job finishes
        outcomes = [o for d in s.dispatch(0.002) for o in s.complete(d, 0.004)]
        assert sorted(o.job.task for o in outcomes) == ["t0", "t1"] and all(o.met for o in outcomes)
        bs = s.batch_stats()
        assert bs.jobs == 4 and bs.batches == 2 * len(sizes) and bs.by_size == {sizes[0]: 2 * len(sizes)}


def test_config_sizes_rounding_and_parse() -> None:
    c = BatchingConfig(sizes=(8, 1, 4, 4))
    assert c.sizes == (1, 4, 8) and c.max_size == 8
    assert [c.size_for(n) for n in (1, 2, 4, 5, 8)] == [1, 4, 4, 8, 8]
    assert [c.floor_size(n) for n in (1, 3, 4, 7, 8)] == [1, 1, 4, 4, 8]
    assert BatchingConfig.parse({"sizes": [1, 2], "lp_slack": 0.01}) == BatchingConfig(sizes=(1, 2), lp_slack=0.01)
    assert SchedulerConfig(batching={"sizes": [1, 16]}).batching == BatchingConfig(sizes=(1, 16))
    for bad in ({"sizes": (2, 4)}, {"pad_limit": 1.0}, {"lp_slack": -1.0}, {"lp_fill": -1},
                {"lp_admit_margin": 0.0}):
        with pytest.raises(ValueError):
            BatchingConfig(**bad)


def test_batch_times_eq1_per_size_and_scaling_fallback() -> None:
    bt = BatchTimes(ws=2)
    key = ("m", 0)
    bt.set_stage_afet(key, 1e-3)
    assert bt.estimate(key, 4) == pytest.approx(4e-3)  # nothing known: size x the stage AFET
    assert bt.record(key, 4, 2e-3)
    assert bt.estimate(key, 8) == pytest.approx(4e-3)  # linear up from the nearest smaller size
    assert bt.estimate(key, 2) == pytest.approx(2e-3)  # never slower than a larger batch
    assert bt.record(key, 4, 3e-3) and not bt.record(key, 4, 1e-3)  # max of the last ws = 2
    assert bt.estimate(key, 4) == pytest.approx(3e-3)
    bt.record(key, 4, 1e-3)  # 3e-3 leaves the window
    assert bt.estimate(key, 4) == pytest.approx(1e-3)
    assert bt.best_per_job(key, (1, 4)) == pytest.approx(1e-3 / 4)


def test_shared_cost_interface() -> None:
    c = SharedStageCost((1e-3, 2e-3), ws=3)
    assert c.total == pytest.approx(3e-3) and c.measured() == (False, False)
    assert c.set_stage(0, 1e-4) and c.stages() == (1e-4, 2e-3) and c.measured() == (True, False)
    assert c.set_afet((5e-3, 4e-3)) and c.stages() == (1e-4, 4e-3)  # only the stage without a cost moves
    with pytest.raises(RuntimeError):
        c.record(0, 1e-3)


def test_batch_queue_keeps_stage_queue_order_per_key() -> None:
    q: BatchQueue[tuple[str, int]] = BatchQueue(lambda item: item[0])
    q.push(5, 2.0, 0.0, "a", 0, ("x", 1))
    q.push(3, 9.0, 0.0, "b", 0, ("y", 2))
    q.push(5, 1.0, 0.0, "c", 0, ("x", 3))
    assert len(q) == 3 and q.keys_in_order() == ["y", "x"]
    assert [item for _, item in q.items()] == [("y", 2), ("x", 3), ("x", 1)]
    assert q.pop() == (3, ("y", 2)) and q.peek() == (5, ("x", 3)) and len(q) == 2


# ---------------------------------------------------------------------------- the rule
def test_stages_of_different_models_or_stages_never_share_a_batch() -> None:
    tasks = [task(i, model="a" if i % 2 else "b") for i in range(8)]
    s = sched(tasks, n_streams=4)
    for t in tasks:
        s.release(t.name, 0.0)
    ds = s.dispatch(0.0)
    assert sorted((d.model, len(d.jobs)) for d in ds) == [("a", 4), ("b", 4)]
    for d in ds:
        assert {j.task for j in d.jobs} == {t.name for t in tasks if t.model == d.model}
        assert d.stage == 0 and d.size == 4
    s.complete(ds[0], 0.01)
    s.release("t0", 0.01)  # t0 (model b, stage 0) and the first batch's jobs at stage 1
    for d in s.dispatch(0.01):
        assert len({(j.task, d.stage) for j in d.jobs}) == len(d.jobs)
        assert all(tasks[int(j.task[1:])].model == d.model for j in d.jobs)


def test_batch_is_cut_where_the_predicted_finish_would_pass_the_earliest_virtual_deadline() -> None:
    # 2 stages, D = 0.1: the stage-0 virtual deadline is release + 0.05; a batch of s takes 1 ms + s * 1 ms
    tasks = [task(i, n_stages=2) for i in range(64)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), pad_limit=0.0, sizes=(1, 2, 4, 8, 16, 32, 64),
              lp_admit_margin=None)
    admitted = sum(s.release(t.name, 0.0).admitted for t in tasks)  # eq. 12 admits 49 of them
    (d,) = s.dispatch(0.0)
    assert d.predicted_finish <= d.virtual_deadline == pytest.approx(0.05)
    assert d.size == 32 and len(d.jobs) == 32  # 1 + 32 = 33 ms fits 50 ms; a 33rd job needs size 64: 65 ms
    assert d.predicted_finish == pytest.approx(0.033)
    assert s.queue_length(0) == admitted - 32 > 0


def test_hp_never_waits_and_leads_the_batch() -> None:
    tasks = [task(0, HP), task(1, LP), task(2, LP)]
    s = sched(tasks, lp_slack=0.01, lp_fill=64)
    s.release("t1", 0.0)
    assert s.dispatch(0.0) == []  # LP alone waits for more (within the slack)
    s.release("t0", 0.001)
    (d,) = s.dispatch(0.001)  # HP arrives: goes at once, the waiting LP stage joins it
    assert [j.task for j in d.jobs] == ["t0", "t1"] and d.levels[0] < d.levels[1]


def test_lp_waits_at_most_the_slack() -> None:
    s = sched([task(i) for i in range(3)], lp_slack=0.004, lp_fill=8)
    s.release("t0", 0.0)
    s.release("t1", 0.001)
    assert s.dispatch(0.001) == [] and s.next_wakeup() == pytest.approx(0.004)
    assert s.dispatch(0.0039) == []
    (d,) = s.dispatch(0.004)
    assert [j.task for j in d.jobs] == ["t0", "t1"] and s.next_wakeup() is None
    assert s.batch_stats().holds >= 1


def test_lp_does_not_wait_when_waiting_would_break_its_deadline() -> None:
    s = sched([task(i) for i in range(2)], lp_slack=0.2, lp_fill=8)
    s.release("t0", 0.0)
    (d,) = s.dispatch(0.0)  # slack 200 ms > its 50 ms virtual deadline: no wait
    assert len(d.jobs) == 1


def test_hp_fill_only_keeps_lp_in_the_padding() -> None:
    tasks = [task(0, HP), task(1, HP), task(2, HP)] + [task(i) for i in range(3, 10)]
    s = sched(tasks, hp_fill_only=True, pad_limit=0.5)
    for t in tasks:
        s.release(t.name, 0.0)
    (d,) = s.dispatch(0.0)
    assert d.size == 4 and [j.priority for j in d.jobs] == [HP, HP, HP, LP]


def test_padding_above_the_limit_is_cut_to_a_captured_size() -> None:
    s = sched([task(i) for i in range(5)], sizes=(1, 4, 8), pad_limit=0.25)
    for i in range(5):
        s.release(f"t{i}", 0.0)
    (d,) = s.dispatch(0.0)
    assert (len(d.jobs), d.size) == (4, 4)  # 5 in 8 wastes 37.5%: run 4, one stays queued
    assert s.queue_length(0) == 1
    s2 = sched([task(i) for i in range(5)], sizes=(1, 4, 8), pad_limit=0.5)
    for i in range(5):
        s2.release(f"t{i}", 0.0)
    (d2,) = s2.dispatch(0.0)
    assert (len(d2.jobs), d2.size) == (5, 8)


def test_hp_is_padded_rather_than_left_to_miss() -> None:
    # 5 HP stages, sizes 1/4/8; a batch takes 20 ms + 1 ms per slot; stage-0 deadline 25 ms:
    # cutting to 4 would leave one HP stage for 24 + 21 ms > 25 ms, so the batch is padded to 8
    tasks = [TaskSpec(f"h{i}", 0.05, HP, 2, (1e-3, 1e-3), model="m") for i in range(5)]
    s = Scheduler(SchedulerConfig(Policy.STR, batching=BatchingConfig(sizes=(1, 4, 8), pad_limit=0.1)), tasks,
                  batch_afet=linear_batch_time(0.020, 0.0005))
    for t in tasks:
        s.release(t.name, 0.0)
    (d,) = s.dispatch(0.0)
    assert (len(d.jobs), d.size) == (5, 8)


def test_every_job_advances_through_its_stages_in_order_and_finishes() -> None:
    tasks = [task(i, HP if i < 3 else LP, n_stages=3) for i in range(10)]
    s = sched(tasks, n_streams=2)
    for t in tasks:
        s.release(t.name, 0.0)
    seen: dict[str, list[int]] = {}
    now, outcomes = 0.0, []
    running = s.dispatch(now)
    while running:
        d = running.pop(0)
        now += 0.002
        for j in d.jobs:
            seen.setdefault(j.task, []).append(d.stage)
        outcomes += s.complete(d, now, 0.002)
        running += s.dispatch(now)
    assert all(stages == [0, 1, 2] for stages in seen.values()) and len(seen) == 10
    assert len(outcomes) == 10 and all(o.met for o in outcomes)
    assert s.outstanding_stages() == 0 and s.utilization(0).active_lp == 0.0
    ps = s.priority_stats()
    assert ps[HP].completed == 3 and ps[LP].completed == 7


def test_batch_times_feed_the_shared_capacity_cost_and_utilization() -> None:
    tasks = [task(i, n_stages=1, period=0.1) for i in range(4)]
    s = sched(tasks, sizes=(1, 4))  # estimates: size 1 -> 1.1 ms, size 4 -> 1.4 ms: 0.35 ms per job
    assert s.mret("t0") == pytest.approx(1.4e-3 / 4)
    for t in tasks:
        s.release(t.name, 0.0)
    (d,) = s.dispatch(0.0)
    s.complete(d, 0.006, 0.006)  # a batch of 4 took 6 ms: 1.5 ms per job
    assert s.batch_times()[("m", 0, 4)] == pytest.approx(0.006)
    assert s.mret("t1") == pytest.approx(1.1e-3)  # size 1 (1.1 ms per job) is now cheaper per job
    assert s.task_utilization("t1") == pytest.approx(1.4e-3 / 4 / 0.1)  # u_i follows at the next release
    s.release("t1", 0.1)
    assert s.task_utilization("t1") == pytest.approx(1.1e-3 / 0.1)


def test_lp_admit_margin_rejects_when_the_queue_is_long() -> None:
    tasks = [task(i, n_stages=1, period=0.1) for i in range(50)]
    s = sched(tasks, batch_afet=linear_batch_time(0.0, 1e-3), lp_admit_margin=0.1)
    admitted = [s.release(t.name, 0.0).admitted for t in tasks]
    # 1 ms per job: a backlog above 10 ms (10% of D) stops admission
    assert admitted.count(True) == 10 and not any(admitted[10:])
    off = sched(tasks, batch_afet=linear_batch_time(0.0, 1e-3), lp_admit_margin=None)
    assert sum(off.release(t.name, 0.0).admitted for t in tasks) > 10


def test_queue_delay_and_batch_stats() -> None:
    s = sched([task(i, n_stages=1) for i in range(3)])
    s.release("t0", 0.0)
    (d,) = s.dispatch(0.0)
    s.release("t1", 0.001)
    s.release("t2", 0.002)
    s.complete(d, 0.005)
    (d2,) = s.dispatch(0.005)
    assert isinstance(d2, Dispatch) and len(d2.jobs) == 2
    bs = s.batch_stats()
    assert bs.batches == 2 and bs.jobs == 3 and bs.mean_batch == 1.5
    assert bs.mean_queue_delay("LP") == pytest.approx((0.0 + 0.004 + 0.003) / 3)
    assert bs.by_size == {1: 1, 2: 1} and bs.padding == 0.0


def test_late_stage_does_not_hold_the_batch_back() -> None:
    tasks = [task(i, n_stages=1, period=0.01) for i in range(8)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), pad_limit=0.0)
    s.release("t0", 0.0)
    for t in tasks[1:]:
        s.release(t.name, 0.02)  # t0's deadline (10 ms) has passed
    # the dispatch at 20 ms sees t0 as late: it joins, and the batch size follows the others' deadlines
    (d,) = s.dispatch(0.02)
    assert "t0" in {j.task for j in d.jobs}
    assert d.virtual_deadline == pytest.approx(0.03) and d.predicted_finish <= d.virtual_deadline
    assert math.isfinite(d.virtual_deadline)


def test_late_stages_yield_to_stages_that_can_still_meet_their_deadline() -> None:
    # one stream, batches of at most 4 taking 1 ms + 1 ms per slot; D = 10 ms
    tasks = [TaskSpec(f"t{i}", 0.1, LP, 1, (1e-3,), deadline=0.01, model="m") for i in range(8)]
    s = sched(tasks, sizes=(1, 2, 4), batch_afet=linear_batch_time(1e-3, 1e-3), pad_limit=0.0, lp_admit_margin=None)
    for t in tasks[:4]:
        s.release(t.name, 0.0)  # these four are late at 12 ms
    for t in tasks[4:]:
        s.release(t.name, 0.012)  # these can still make 22 ms
    (d,) = s.dispatch(0.012)
    assert {j.task for j in d.jobs} == {"t4", "t5", "t6", "t7"}  # the ones that can still make it go first
    assert d.predicted_finish <= d.virtual_deadline == pytest.approx(0.022)
    s.complete(d, 0.017, 0.005)
    (d2,) = s.dispatch(0.017)
    assert {j.task for j in d2.jobs} == {"t0", "t1", "t2", "t3"} and d2.virtual_deadline == math.inf


def test_min_size_keeps_nearly_late_stages_from_shrinking_the_batch() -> None:
    tasks = [TaskSpec(f"t{i}", 0.1, LP, 1, (1e-3,), deadline=0.01, model="m") for i in range(8)]
    for min_size, want in ((1, 1), (8, 8)):
        s = sched(tasks, sizes=(1, 2, 4, 8), batch_afet=linear_batch_time(1e-3, 1e-3), pad_limit=0.0,
                  lp_admit_margin=None, min_size=min_size)
        s.release("t0", 0.0)
        for t in tasks[1:]:
            s.release(t.name, 0.0075)
        # t0 has 2.5 ms left at 7.5 ms: a batch of 1 (2 ms) saves it; a batch of 8 (9 ms) cannot
        (d,) = s.dispatch(0.0075)
        assert len(d.jobs) == want


# ---------------------------------------------------------------------------- launch-ahead
def test_launch_ahead_queues_the_next_batch_on_the_busy_stream_near_its_predicted_finish() -> None:
    # 1 stream, a batch of s takes 1 ms + s * 1 ms; the lead is 0.5 ms
    tasks = [task(i, n_stages=1) for i in range(8)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), sizes=(1, 2, 4, 8), lp_admit_margin=None,
              launch_ahead=1, ahead_lead=0.5e-3)
    for t in tasks[:4]:
        assert s.release(t.name, 0.0).admitted
    (d1,) = s.dispatch(0.0)
    assert d1.behind == 0 and len(d1.jobs) == 4 and d1.predicted_finish == pytest.approx(5e-3)
    for t in tasks[4:6]:
        s.release(t.name, 1e-3)
    assert s.dispatch(1e-3) == []  # the stream is busy and its predicted finish is 4 ms away
    w = s.next_wakeup()
    assert w == pytest.approx(4.5e-3)  # the launch-ahead window opens lead before 5 ms
    assert s.dispatch(w - 1e-5) == []
    (d2,) = s.dispatch(w)
    # queued behind d1: it starts at d1's predicted finish, and its own finish counts from there
    assert d2.behind == 1 and d2.stream == d1.stream and d2.start == pytest.approx(5e-3)
    assert d2.predicted_finish == pytest.approx(5e-3 + 3e-3) and len(d2.jobs) == 2
    assert s.running(0) == [d1] and s.idle_streams(0) == 0
    s.release(tasks[6].name, 4.6e-3)
    assert s.dispatch(4.6e-3) == []  # one batch queued behind the running one at most
    assert s.next_wakeup() is None
    s.complete(d1, 4.7e-3, 4.7e-3)  # d1 ends 0.3 ms early: d2 starts then, not at 5 ms
    assert s.running(0) == [d2] and s.idle_streams(0) == 0  # d2 runs now, the stream stays busy
    assert s.dispatch(4.7e-3) == []  # the window behind d2 (now predicted to end at 7.7 ms) opens at 7.2
    w = s.next_wakeup()
    assert w == pytest.approx(7.2e-3)
    (d3,) = s.dispatch(w)
    assert d3.behind == 1 and d3.start == pytest.approx(7.7e-3) and len(d3.jobs) == 1
    s.complete(d2, 8e-3, 2.9e-3)
    s.complete(d3, 10e-3, 2e-3)
    assert s.running(0) == [] and s.idle_streams(0) == 1 and s.outstanding_stages() == 0
    assert s.priority_stats()[LP].completed == 7


def test_launch_ahead_off_keeps_batches_for_idle_streams_only() -> None:
    tasks = [task(i, n_stages=1) for i in range(4)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), sizes=(1, 2, 4), lp_admit_margin=None)
    s.release("t0", 0.0)
    (d1,) = s.dispatch(0.0)
    s.release("t1", 1e-3)
    assert s.dispatch(1.99e-3) == [] and s.next_wakeup() is None  # no launch-ahead: wait for d1
    s.complete(d1, 2e-3)
    (d2,) = s.dispatch(2e-3)
    assert d2.behind == 0 and d2.start == 2e-3


def test_launch_ahead_prefers_an_idle_stream_and_leaves_queued_a_stage_late_only_behind_a_busy_one() -> None:
    # 2 streams, a batch of s takes 1 ms + s * 1 ms, one stage per job, D = 10 ms, lead 10 ms (always open)
    tasks = [TaskSpec(f"t{i}", 0.01, LP, 1, (1e-3,), model="m") for i in range(4)]
    s = sched(tasks, n_streams=2, batch_afet=linear_batch_time(1e-3, 1e-3), sizes=(1, 2), lp_admit_margin=None,
              launch_ahead=1, ahead_lead=10e-3, pad_limit=0.0)
    s.release("t0", 0.0)
    s.release("t1", 0.0)
    (d1,) = s.dispatch(0.0)  # both stages in one batch of 2 on stream 0: predicted finish 3 ms
    assert len(d1.jobs) == 2 and d1.predicted_finish == pytest.approx(3e-3)
    s.release("t2", 1e-3)
    (d2,) = s.dispatch(1e-3)  # stream 1 is idle: the stage goes there at once, not behind d1
    assert d2.behind == 0 and d2.stream != d1.stream and d2.start == 1e-3
    # t3's deadline (release -1.5 ms + 10 ms = 8.5 ms): behind d2 (finish 3 ms) a batch of 1 ends at 5 ms: fine
    s.release("t3", -1.5e-3)
    (d3,) = s.dispatch(1e-3)
    assert d3.behind == 1 and d3.stream == d1.stream  # the earlier predicted free time of the two


def test_launch_ahead_does_not_mark_late_a_stage_that_is_late_only_behind_the_running_batch() -> None:
    # 1 stream, a batch of s takes 1 ms + s * 1 ms, one stage per job, D = 10 ms, lead 1 ms
    tasks = [TaskSpec(f"t{i}", 0.01, LP, 1, (1e-3,), model="m") for i in range(2)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), sizes=(1, 2), lp_admit_margin=None,
              launch_ahead=1, ahead_lead=1e-3)
    s.release("t0", 0.0)
    (d1,) = s.dispatch(0.0)
    assert d1.predicted_finish == pytest.approx(2e-3)
    # t1 released at -6.3 ms: deadline 3.7 ms. At 1.5 ms alone it would end at 3.5 ms (on time), behind d1 at
    # 4 ms (late): no batch is queued behind d1 for it
    s.release("t1", -6.3e-3)
    assert s.dispatch(1.5e-3) == []
    assert s.queue_length(0) == 1
    s.complete(d1, 1.6e-3, 1.6e-3)  # d1 ends early: the stream is free, the stage can make its deadline
    (d2,) = s.dispatch(1.6e-3)
    assert d2.behind == 0 and d2.virtual_deadline == pytest.approx(3.7e-3)  # sized against it: not late
    assert d2.predicted_finish == pytest.approx(1.6e-3 + 1.6e-3)  # (size 1 now measured: 1.6 ms)


def test_launch_ahead_config_is_checked() -> None:
    for bad in ({"launch_ahead": -1}, {"ahead_lead": -1e-3}, {"ahead_lead": math.inf}, {"launch_ahead": 1.5}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BatchingConfig(launch_ahead=1)  # type: ignore[call-arg]  (one setting for both modes: SchedulerConfig)


def test_lp_max_time_caps_lp_only_batches_but_not_batches_with_hp() -> None:
    # a batch of s takes 1 ms + s * 1 ms; LP-only batches may take at most 5 ms: 4 stages (size 4)
    tasks = [task(i, LP, n_stages=1) for i in range(8)] + [task(8 + i, HP, n_stages=1) for i in range(8)]
    s = sched(tasks, batch_afet=linear_batch_time(1e-3, 1e-3), sizes=(1, 2, 4, 8), lp_admit_margin=None,
              lp_max_time=5e-3, pad_limit=0.0)
    for t in tasks[:8]:
        assert s.release(t.name, 0.0).admitted
    (d,) = s.dispatch(0.0)
    assert len(d.jobs) == 4 and d.size == 4 and d.predicted_finish - d.start <= 5e-3 + 1e-12
    s.complete(d, 5e-3, 5e-3)
    for t in tasks[8:]:
        assert s.release(t.name, 5e-3).admitted
    (d,) = s.dispatch(5e-3)  # HP leads: 8 stages (HP and the LP left), 9 ms > the LP cap
    assert len(d.jobs) == 8 and d.size == 8 and d.jobs[0].priority is HP
    with pytest.raises(ValueError, match="lp_max_time"):
        BatchingConfig(lp_max_time=0.0)
