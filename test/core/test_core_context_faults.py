"""A context whose worker died: Scheduler.context_down / context_up (issue 8, "LP tasks migrate meanwhile,
and HP tasks are reassigned"). Hand-computed scenarios, then the invariants under random faults."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_core_properties import World, check_invariants, do_dispatch, worlds

from daris_ros.core import Policy, Priority, Scheduler, SchedulerConfig, TaskSpec

HP, LP = Priority.HP, Priority.LP


def three_ctx(**kw: object) -> SchedulerConfig:
    return SchedulerConfig(Policy.MPS, n_contexts=3, n_streams=1, **kw)  # type: ignore[arg-type]


def tasks() -> list[TaskSpec]:
    # Algorithm 1: HP first, each to minUtil -> h0:0 (u .2), h1:1 (u .3), h2:2 (u .1); then LP: l0 -> 2
    # (.1 + .2), l1 -> 0 (.2 + .1 = .3, ties to the lowest index), l2 -> 1 (.3 + .1)
    return [
        TaskSpec("h0", 10.0, HP, 2, (1.0, 1.0)),
        TaskSpec("h1", 10.0, HP, 2, (1.5, 1.5)),
        TaskSpec("h2", 10.0, HP, 2, (0.5, 0.5)),
        TaskSpec("l0", 10.0, LP, 2, (1.0, 1.0)),
        TaskSpec("l1", 10.0, LP, 2, (0.5, 0.5)),
        TaskSpec("l2", 10.0, LP, 2, (0.5, 0.5)),
    ]


def test_initial_placement_is_algorithm_1() -> None:
    s = Scheduler(three_ctx(), tasks())
    assert {t.name: s.context_of(t.name) for t in tasks()} == {
        "h0": 0, "h1": 1, "h2": 2, "l0": 2, "l1": 0, "l2": 1}


def test_down_reassigns_hp_by_min_util_and_migrates_lp_then_up_moves_back() -> None:
    s = Scheduler(three_ctx(), tasks())
    moves = s.context_down(0, now=0.0)
    # h0 (HP, u .2): totals of the survivors 1: .4, 2: .3 -> context 2. l1 (LP, u .1): eq. 12 passes on both
    # (1 - hp), the predicted finish is `now` + its MRET on both (no backlog): ties to the lowest index -> 1
    assert moves == {"h0": 2, "l1": 1}
    assert s.contexts_down == frozenset({0})
    assert s.context_of("h0") == 2 and s.context_of("l1") == 1
    assert s.utilization(0).total == 0.0
    assert s.utilization(2).hp == pytest.approx(0.3) and s.utilization(1).lp == pytest.approx(0.2)
    assert s.task_stats()["h0"].migrations == 1 and s.priority_stats()[HP].migrations == 1
    assert s.context_down(0, now=0.0) == {}  # idempotent
    # releases go to the new contexts; nothing is dispatched on context 0
    for name in ("h0", "l1"):
        r = s.release(name, 0.0)
        assert r.admitted and r.context == s.context_of(name) != 0
    assert all(d.context != 0 for d in s.dispatch(0.0))
    back = s.context_up(0, now=1.0)
    assert back == {"h0": 0, "l1": 0} and s.contexts_down == frozenset()
    assert s.utilization(0).total == pytest.approx(0.3)
    assert s.task_stats()["l1"].migrations == 2


def test_queued_stages_move_with_level_and_deadline_running_stage_continues_elsewhere() -> None:
    s = Scheduler(three_ctx(), tasks())
    a = s.release("h0", 0.0).job  # context 0
    b = s.release("l1", 0.0).job  # context 0, queued behind h0
    assert a is not None and b is not None
    (d_a,) = [d for d in s.dispatch(0.0) if d.context == 0]  # h0 stage 0 runs on (0, 0); l1 waits
    queued_before = [(lvl, j.task, st) for lvl, j, st in s.queued(0)]
    assert queued_before == [(7, "l1", 0)]  # LP, not last, not delayed: the lowest level (docs/policy.md)
    moved = s.context_down(0, now=0.1)
    assert moved == {"h0": 2, "l1": 1}
    assert s.queue_length(0) == 0 and s.queued(1) == [(7, b, 0)] and b.context == 1
    assert a.context == 2  # its running stage stays accounted on (0, 0); its next stage goes to 2
    assert s.running(0) == [d_a]
    (d_b,) = s.dispatch(0.1)
    assert (d_b.job, d_b.context, d_b.virtual_deadline) == (b, 1, b.stage_deadlines[0])
    assert s.complete(d_a, 1.0) == []
    assert s.queue_length(2) == 1 and s.idle_streams(0) == 1
    (d_a1,) = [d for d in s.dispatch(1.0) if d.job is a]
    assert d_a1.context == 2 and d_a1.stage == 1
    (out,) = s.complete(d_a1, 2.0)
    assert out.met
    for k in range(3):
        inc, ref = s.utilization(k), s.utilization_from_scratch(k)
        assert inc.active_hp == pytest.approx(ref.active_hp) and inc.active_lp == pytest.approx(ref.active_lp)
    assert s.utilization(0).active_hp == 0.0 and s.utilization(2).active_hp == 0.0  # h0's job is done
    assert s.utilization(1).active_lp == pytest.approx(0.1)  # l1's job still runs on 1


def test_lp_release_never_migrates_to_a_down_context() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=2, n_streams=1)
    s = Scheduler(cfg, [TaskSpec("h", 1.0, HP, 1, (0.95,)), TaskSpec("l", 1.0, LP, 1, (0.5,))])
    assert s.context_of("h") == 0 and s.context_of("l") == 1
    s.context_down(1, now=0.0)  # l has nowhere that passes eq. 12 (1 - .95 < .5): minUtil -> 0
    assert s.context_of("l") == 0
    r = s.release("l", 0.0)
    assert not r.admitted and r.reason == "rejected-eq12"  # context 1 would pass, but it is down


def test_single_context_keeps_its_work() -> None:
    s = Scheduler(SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1), tasks()[:2])
    job = s.release("h0", 0.0).job
    assert s.context_down(0, now=0.0) == {}
    assert s.context_of("h0") == 0 and s.queue_length(0) == 1 and job is not None and job.context == 0
    assert s.context_up(0, now=0.5) == {}
    (d,) = s.dispatch(0.5)
    assert d.job is job


def test_bad_context_is_an_error() -> None:
    s = Scheduler(three_ctx(), tasks())
    with pytest.raises(ValueError, match="no context 3"):
        s.context_down(3, now=0.0)


fault_actions = st.lists(
    st.tuples(
        st.sampled_from(["release", "release", "release", "complete", "complete", "down", "up", "abort"]),
        st.integers(0, 10),
        st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.7]),
    ),
    min_size=20,
    max_size=120,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), fault_actions)
def test_property_invariants_hold_across_context_faults(world: tuple[SchedulerConfig, list[TaskSpec]],
                                                        acts: list) -> None:
    cfg, specs = world
    w = World(Scheduler(cfg, specs), cfg, [], {})
    s = w.sched
    n_c = s.layout.n_contexts
    now = 0.0
    for kind, idx, dt in acts:
        now += dt
        if kind == "release":
            r = s.release(specs[idx % len(specs)].name, now)
            if r.admitted and len(s.contexts_down) < n_c:
                assert r.context not in s.contexts_down, "a release went to a context marked down"
        elif kind == "complete" and w.running:
            d = w.running.pop(idx % len(w.running))
            now = max(now, d.start + 0.01)
            s.complete(d, now)
            w.prev_finish[(d.job.task, d.job.job_id)] = now
        elif kind == "abort" and w.running:
            s.abort(w.running.pop(idx % len(w.running)), now)
        elif kind == "down":
            s.context_down(idx % n_c, now)
        elif kind == "up":
            s.context_up(idx % n_c, now)
        before = {id(d) for d in w.running}
        do_dispatch(w, now)
        if len(s.contexts_down) < n_c:
            for d in w.running:
                if id(d) not in before:
                    assert d.context not in s.contexts_down, "a stage was dispatched on a context marked down"
                    assert d.context == d.job.context
        check_invariants(w)
    for k in range(n_c):
        s.context_up(k, now)
    while w.running or s.outstanding_stages():
        if w.running:
            d = w.running.pop(0)
            now += 0.01
            s.complete(d, now)
            w.prev_finish[(d.job.task, d.job.job_id)] = now
        do_dispatch(w, now)
        check_invariants(w)
    s.expire(now + 1e6)
    for k in range(n_c):
        u = s.utilization(k)
        assert u.active_lp == 0.0 and u.active_hp == 0.0, "active utilization did not return to zero"
        assert s.backlog(k) == 0.0 and s.queue_length(k) == 0
    for name, ts in s.task_stats().items():
        # (worlds() draws skip_late too: a job not started within skip_late deadlines ends skipped)
        assert ts.released == ts.admitted + ts.rejected and ts.completed + ts.skipped == ts.admitted, name
    assert sum(ts.skipped for ts in s.task_stats().values()) == len(w.skipped or ())


def test_abort_requeues_a_lost_stage_where_its_job_now_belongs() -> None:
    s = Scheduler(three_ctx(), tasks())
    job = s.release("h0", 0.0).job
    assert job is not None
    (d,) = s.dispatch(0.0)
    assert (d.context, d.stage) == (0, 0)
    s.abort(d, 0.2)  # its worker died with it; context 0 is still up: the stage goes back to 0
    assert s.idle_streams(0) == 1 and s.queued(0) == [(d.level, job, 0)]
    (d2,) = s.dispatch(0.2)
    assert (d2.context, d2.stage, d2.level, d2.virtual_deadline) == (0, 0, d.level, d.virtual_deadline)
    s.abort(d2, 0.3)
    s.context_down(0, 0.3)  # then the context goes down: the re-queued stage follows h0 to context 2
    assert s.queue_length(0) == 0 and s.queued(2) == [(d.level, job, 0)] and s.backlog(0) == 0.0
    (d3,) = s.dispatch(0.3)
    assert d3.context == 2
    assert s.stage_mrets("h0") == (1.0, 1.0)  # nothing measured for the lost runs
    with pytest.raises(ValueError, match="not running this dispatch"):
        s.abort(d, 0.4)
    s.complete(d3, 0.5)
    (d4,) = s.dispatch(0.5)
    (out,) = s.complete(d4, 1.0)
    assert out.met and s.outstanding_stages() == 0
    assert s.task_stats()["h0"].completed == 1
