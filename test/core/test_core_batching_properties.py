"""Property tests (hypothesis) of cross-task stage batching: random task sets of two models, random
batching configurations and random interleavings of releases and batch completions.

Checked after every event: a batch holds stages of one (model, stage) only, at most its size, the
size is a captured one; its predicted finish is no later than the earliest virtual deadline it was
checked against, and every member's deadline is at or after that one unless the member could not
meet its own in this batch; while a stream of a context is idle, no HP stage is queued there and
every queued LP stage is within its waiting slack; every job's stages run in order, one at a time;
no stream runs two batches (with launch-ahead: at most 1 + launch_ahead on a stream, queued in order, and
completed in order); the incremental utilization sums equal a from-scratch recomputation.
After draining, everything is back to zero and every admitted job finished.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daris_ros.core import BatchingConfig, Dispatch, Policy, Priority, Scheduler, SchedulerConfig, TaskSpec


@st.composite
def worlds(draw: st.DrawFn) -> tuple[SchedulerConfig, list[TaskSpec], float]:
    policy = draw(st.sampled_from(list(Policy)))
    n_c = draw(st.sampled_from([1, 2, 3]))
    sizes = draw(st.sampled_from([(1,), (1, 2, 4), (1, 4, 8, 16), (1, 2, 4, 8, 16, 32, 64)]))
    batching = BatchingConfig(
        sizes=sizes,
        pad_limit=draw(st.sampled_from([0.0, 0.1, 0.5])),
        hp_fill_only=draw(st.booleans()),
        lp_slack=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1])),
        lp_fill=draw(st.sampled_from([0, 4, 16])),
        lp_admit_margin=draw(st.sampled_from([None, 0.3, 1.0])),
    )
    cfg = SchedulerConfig(
        policy=policy, n_contexts=n_c, n_streams=draw(st.integers(1, 3)),
        oversubscription=float(draw(st.sampled_from([1, n_c]))), mret_window=draw(st.integers(1, 5)),
        hp_admission=draw(st.booleans()), no_staging=draw(st.booleans()), no_last=draw(st.booleans()),
        no_prior=draw(st.booleans()), no_fixed=draw(st.booleans()), batching=batching,
        launch_ahead=draw(st.sampled_from([0, 0, 1, 2])), ahead_lead=draw(st.sampled_from([0.0, 0.01, 0.1])),
    )
    n = draw(st.integers(2, 10))
    tasks = []
    for i in range(n):
        model = draw(st.sampled_from(["a", "b"]))
        n_stages = 3 if model == "a" else 2
        tasks.append(TaskSpec(f"t{i}", draw(st.sampled_from([0.25, 0.5, 1.0])),
                              draw(st.sampled_from([Priority.HP, Priority.LP])), n_stages, (0.02,) * n_stages,
                              model=model))
    per_job = draw(st.sampled_from([0.002, 0.01, 0.03]))
    return cfg, tasks, per_job


actions = st.lists(
    st.tuples(
        st.sampled_from(["release", "release", "release", "complete", "complete", "wait"]),
        st.integers(0, 12),
        st.sampled_from([0.0, 0.0, 0.005, 0.03, 0.1, 0.4]),
        st.sampled_from([0.5, 1.0, 2.0]),
    ),
    min_size=20,
    max_size=100,
)


def check_dispatch(s: Scheduler, d: Dispatch, cfg: BatchingConfig, at_stage: dict[object, int],
                   busy: set[object]) -> None:
    assert 1 <= len(d.jobs) <= d.size and d.size in cfg.sizes
    assert len({j.task for j in d.jobs if j.priority is not None}) <= len(d.jobs)
    keys = {(s.spec(j.task).model, d.stage) for j in d.jobs if j.task in {t.name for t in s.tasks()}}
    assert len(keys) <= 1, "a batch mixes models or stages"
    assert all(j.context == d.context for j in d.jobs)
    assert d.predicted_finish <= d.virtual_deadline
    for j in d.jobs:
        vdl = j.stage_deadlines[d.stage]
        assert vdl >= d.virtual_deadline or vdl < d.predicted_finish
        assert at_stage.get(j, 0) == d.stage, "stages out of order"
        assert j not in busy, "a job in two running batches"
        busy.add(j)
    if cfg.hp_fill_only and not s.config.no_fixed:
        n_hp = sum(j.priority is Priority.HP for j in d.jobs)
        if n_hp:
            assert len(d.jobs) <= cfg.size_for(n_hp)


def check_waiting(s: Scheduler, now: float, cfg: BatchingConfig) -> None:
    for k in range(s.layout.n_contexts):
        if not s.idle_streams(k):
            continue
        for _, e in s._queues[k].items():  # noqa: SLF001 - the entries carry their ready time
            assert e.job.priority is not Priority.HP or s.config.no_fixed, "an HP stage waits on an idle stream"
            assert now < e.ready + cfg.lp_slack, "an LP stage waited past its slack"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), acts=actions)
def test_batching_invariants(world: tuple[SchedulerConfig, list[TaskSpec], float],
                             acts: list[tuple[str, int, float, float]]) -> None:
    cfg, tasks, per_job = world
    bcfg = cfg.batching
    assert bcfg is not None
    s = Scheduler(cfg, tasks, batch_afet=lambda m, j, size: 0.005 + per_job * size)
    running: list[Dispatch] = []
    at_stage: dict[object, int] = {}
    busy: set[object] = set()
    formed_at: dict[int, float] = {}
    admitted = finished = 0
    now = 0.0

    def step(now: float) -> None:
        for d in s.dispatch(now):
            check_dispatch(s, d, bcfg, at_stage, busy)
            if d.behind:  # queued behind a busy stream: formed within the lead of when it is predicted to start
                assert cfg.launch_ahead and now <= d.start <= now + cfg.ahead_lead + 1e-12
            else:
                assert d.start == now
            formed_at[id(d)] = now
            running.append(d)
        check_waiting(s, now, bcfg)
        assert sum(len([r for r in running if r.context == k]) for k in range(s.layout.n_contexts)) == len(running)
        for k in range(s.layout.n_contexts):
            lanes = [[r for r in running if r.context == k and r.stream == x] for x in range(s.layout.n_streams)]
            assert all(len(lane) <= 1 + cfg.launch_ahead for lane in lanes)
            assert sum(1 for lane in lanes if lane) + s.idle_streams(k) == s.layout.n_streams
            # the batch a stream runs is its earliest; those queued behind it start at its predicted finish
            for lane in lanes:
                for a, b in zip(lane, lane[1:], strict=False):
                    # (when the running batch is overdue at the time b is formed, b is predicted to start then)
                    assert b.behind >= 1 and b.start <= max(a.predicted_finish, formed_at[id(b)]) + 1e-12
            u, ref = s.utilization(k), s.utilization_from_scratch(k)
            assert u.total == pytest.approx(ref.total, abs=1e-9)
            assert u.active_lp == pytest.approx(ref.active_lp, abs=1e-9)

    for kind, idx, dt, factor in acts:
        now += dt
        if kind == "release":
            dec = s.release(tasks[idx % len(tasks)].name, now)
            admitted += dec.admitted
        elif kind == "complete" and running:
            # a stream completes its batches in order: only the earliest of each stream can finish
            heads = [r for i, r in enumerate(running)
                     if not any((q.context, q.stream) == (r.context, r.stream) for q in running[:i])]
            d = heads[idx % len(heads)]
            running.remove(d)
            now = max(now, d.start)
            outs = s.complete(d, now, (d.predicted_finish - d.start) * factor)
            for j in d.jobs:
                busy.discard(j)
                at_stage[j] = d.stage + 1
            finished += len(outs)
            assert all(o.job.n_stages == d.stage + 1 for o in outs)
            assert len(outs) in (0, len(d.jobs))
        step(now)
    while running or s.outstanding_stages():
        wake = s.next_wakeup()
        if running:
            d = running.pop(0)
            now = max(now, d.start) + 0.001
            outs = s.complete(d, now)
            for j in d.jobs:
                busy.discard(j)
                at_stage[j] = d.stage + 1
            finished += len(outs)
        elif wake is not None:
            now = max(now, wake)
        step(now)
    assert finished == admitted
    s.expire(now + 10.0)
    for k in range(s.layout.n_contexts):
        assert s.utilization(k).active_lp == 0.0 and s.backlog(k) == 0.0 and s.queue_length(k) == 0
