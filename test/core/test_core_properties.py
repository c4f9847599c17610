"""Property tests (hypothesis): the scheduler driven by arbitrary interleavings of events.

Checked after every event: no stream runs two stages; HP is never rejected without HPA; a migration
goes only to a context that passed eq. 12 (and its own context failed); dispatch respects the
level + EDF order of what is queued; the level of a dispatch is the one its (priority, last,
delayed) calls for; incremental utilization sums equal a from-scratch recomputation. After draining,
the utilization bookkeeping is back to zero. With ``skip_late`` drawn on or off, every admitted job ends exactly
once: completed, or skipped before any of its stages ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daris_ros.core import (
    BatchingConfig,
    Dispatch,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
    stage_level,
)


@dataclass
class World:
    sched: Scheduler
    cfg: SchedulerConfig
    running: list[Dispatch]
    prev_finish: dict[tuple[str, int], float]
    skipped: set[object] | None = None


task_strategy = st.builds(
    lambda prio, period, afets: (prio, period, afets),
    st.sampled_from([Priority.HP, Priority.LP]),
    st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    st.lists(st.sampled_from([0.05, 0.1, 0.25, 0.4]), min_size=1, max_size=4),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[SchedulerConfig, list[TaskSpec]]:
    policy = draw(st.sampled_from(list(Policy)))
    n_c = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
    cfg = SchedulerConfig(
        policy=policy,
        n_contexts=n_c,
        n_streams=draw(st.integers(1, 3)),
        oversubscription=float(draw(st.sampled_from([1, n_c]))),
        mret_window=draw(st.integers(1, 5)),
        hp_admission=draw(st.booleans()),
        reprobe_after=draw(st.sampled_from([0, 0, 1, 3])),
        no_staging=draw(st.booleans()),
        no_last=draw(st.booleans()),
        no_prior=draw(st.booleans()),
        no_fixed=draw(st.booleans()),
        skip_late=draw(st.sampled_from([None, None, 1.0, 2.0])),
    )
    raw = draw(st.lists(task_strategy, min_size=2, max_size=8))
    tasks = [TaskSpec(f"t{i}", period, prio, len(a), tuple(a)) for i, (prio, period, a) in enumerate(raw)]
    return cfg, tasks


actions = st.lists(
    st.tuples(
        st.sampled_from(["release", "release", "release", "complete", "complete"]),
        st.integers(0, 10),  # task index or running index
        st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.2, 0.7]),  # time advance
        st.sampled_from([0.5, 1.0, 1.5, 3.0]),  # exec time factor against the stage's AFET
    ),
    min_size=20,
    max_size=120,
)


def edf_key(d: Dispatch) -> tuple:
    return (d.level, d.virtual_deadline, d.job.release, d.job.task, d.job.job_id)


def check_invariants(w: World) -> None:
    s = w.sched
    seen = set()
    for d in w.running:
        key = (d.context, d.stream)
        assert key not in seen, f"stream {key} runs two stages"
        seen.add(key)
    for k in range(s.layout.n_contexts):
        assert len(s.running(k)) + s.idle_streams(k) == s.layout.n_streams
        inc, ref = s.utilization(k), s.utilization_from_scratch(k)
        for field in ("total", "hp", "lp", "active_lp", "active_hp"):
            assert getattr(inc, field) == pytest.approx(getattr(ref, field), abs=1e-9), field


def do_dispatch(w: World, now: float) -> None:
    s = w.sched
    started = s.dispatch(now)
    for d in started:
        # the level is the one its own attributes call for (enqueue and dequeue agree)
        prev = w.prev_finish.get((d.job.task, d.job.job_id))
        delayed = d.stage > 0 and prev is not None and prev > d.job.stage_deadlines[d.stage - 1]
        assert d.level == stage_level(
            d.job.priority, d.is_last, delayed,
            no_last=w.cfg.no_last, no_prior=w.cfg.no_prior, no_fixed=w.cfg.no_fixed,
        )
        # nothing still queued in that context ranks before a stage that was just dispatched
        for level, job, stage in s.queued(d.context):
            other = (level, job.stage_deadlines[stage], job.release, job.task, job.job_id)
            assert other >= edf_key(d)
    w.running.extend(started)
    if w.skipped is None:
        w.skipped = set()
    on_streams = {id(d.job) for d in w.running}
    for job in s.take_skipped():  # skip_late: never started (no stage ran, none runs), reported once
        assert job not in w.skipped and id(job) not in on_streams and job.start is None
        assert (job.task, job.job_id) not in w.prev_finish
        assert now >= job.release + w.cfg.skip_late * (job.abs_deadline - job.release)
        w.skipped.add(job)


def step_release(w: World, name: str, now: float) -> None:
    s = w.sched
    n_c = s.layout.n_contexts
    before = [s.utilization(k) for k in range(n_c)]
    u = s.task_utilization(name)
    own = s.context_of(name)
    prio = s.spec(name).priority
    r = s.release(name, now)
    if prio is Priority.HP and not w.cfg.hp_admission:
        assert r.admitted, "HP rejected without HPA"
    if prio is Priority.HP:
        assert r.migrated_from is None and r.context == own
    n_s = s.layout.n_streams

    def passes(k: int) -> bool:  # eqs. 11-12 written out, independent of the code under test
        return before[k].active_lp + u < n_s - before[k].hp

    if prio is Priority.LP:
        if r.admitted and r.migrated_from is None:
            # (a re-probe admits one release of a starving task without eq. 12: SchedulerConfig.reprobe_after)
            assert r.context == own and (passes(own) or r.reason == "admitted-probe"), "LP admitted where eq. 12 fails"
        if not r.admitted:
            assert not any(passes(k) for k in range(n_c)), "LP rejected although a context passes"
    if r.migrated_from is not None:
        src, dst = r.migrated_from, r.context
        assert src == own and dst != own
        assert not passes(src) and passes(dst), "migration to a context that fails eq. 12"
    if not r.admitted:
        assert r.job is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), actions)
def test_property_scheduler_invariants(world: tuple[SchedulerConfig, list[TaskSpec]], acts: list) -> None:
    cfg, tasks = world
    w = World(Scheduler(cfg, tasks), cfg, [], {})
    now = 0.0
    for kind, idx, dt, factor in acts:
        now += dt
        if kind == "release":
            step_release(w, tasks[idx % len(tasks)].name, now)
        elif w.running:
            d = w.running.pop(idx % len(w.running))
            et = factor * sum(tasks[int(d.job.task[1:])].afet[j] for j in d.model_stages)
            now = max(now, d.start + et)
            w.sched.complete(d, now, et)
            w.prev_finish[(d.job.task, d.job.job_id)] = now
        do_dispatch(w, now)
        check_invariants(w)
    # drain: finish everything in order
    while w.running:
        d = w.running.pop(0)
        now += 0.01
        w.sched.complete(d, now)
        w.prev_finish[(d.job.task, d.job.job_id)] = now
        do_dispatch(w, now)
        check_invariants(w)
    s = w.sched
    s.expire(now + 1e6)  # HPA windows close at the jobs' deadlines
    assert s.outstanding_stages() == 0
    for k in range(s.layout.n_contexts):
        u = s.utilization(k)
        assert u.active_lp == 0.0 and u.active_hp == 0.0, "active utilization did not return to zero"
        assert s.backlog(k) == 0.0 and s.queue_length(k) == 0
    for name, ts in s.task_stats().items():
        assert ts.released == ts.admitted + ts.rejected, name
        assert ts.completed + ts.skipped == ts.admitted, name
        assert len(ts.response_times) == ts.completed
    assert sum(ts.skipped for ts in s.task_stats().values()) == len(w.skipped or ())
    if not cfg.skip_late:
        assert not w.skipped
    hp = s.priority_stats()[Priority.HP]
    if not cfg.hp_admission:
        assert hp.rejected == 0


# ------------------------------------------------------------------------------------------ one API
@st.composite
def any_mode_worlds(draw: st.DrawFn) -> tuple[SchedulerConfig, list[TaskSpec], float]:
    """Batching on or off, launch-ahead on or off, HPA, re-probing and ablations; tasks of two models."""
    n_c = draw(st.sampled_from([1, 2, 3]))
    batching = None
    if draw(st.booleans()):
        batching = BatchingConfig(
            sizes=draw(st.sampled_from([(1,), (1, 2, 4), (1, 4, 8, 16)])),
            pad_limit=draw(st.sampled_from([0.0, 0.1, 0.5])),
            lp_slack=draw(st.sampled_from([0.0, 0.0, 0.02])),
            lp_fill=draw(st.sampled_from([0, 4])),
            lp_admit_margin=draw(st.sampled_from([None, 0.3, 1.0])),
        )
    cfg = SchedulerConfig(
        policy=draw(st.sampled_from(list(Policy))), n_contexts=n_c, n_streams=draw(st.integers(1, 3)),
        oversubscription=float(draw(st.sampled_from([1, n_c]))), mret_window=draw(st.integers(1, 4)),
        hp_admission=draw(st.booleans()), reprobe_after=draw(st.sampled_from([0, 0, 1, 3])),
        no_staging=draw(st.booleans()), no_last=draw(st.booleans()), no_fixed=draw(st.booleans()),
        batching=batching, launch_ahead=draw(st.sampled_from([0, 0, 1, 2])),
        ahead_lead=draw(st.sampled_from([0.0, 0.01, 0.1])), skip_late=draw(st.sampled_from([None, None, 1.0, 2.0])),
    )
    tasks = []
    for i in range(draw(st.integers(2, 8))):
        model = draw(st.sampled_from(["a", "b"]))
        n_stages = 3 if model == "a" else 2
        tasks.append(TaskSpec(f"t{i}", draw(st.sampled_from([0.25, 0.5, 1.0])),
                              draw(st.sampled_from([Priority.HP, Priority.LP])), n_stages,
                              tuple(draw(st.sampled_from([0.01, 0.03, 0.1])) for _ in range(n_stages)), model=model))
    return cfg, tasks, draw(st.sampled_from([0.002, 0.01, 0.03]))


one_api_actions = st.lists(
    st.tuples(
        st.sampled_from(["release", "release", "release", "complete", "complete", "abort", "down", "up", "wait"]),
        st.integers(0, 12),
        st.sampled_from([0.0, 0.0, 0.005, 0.03, 0.1, 0.4]),
        st.sampled_from([0.5, 1.0, 2.0]),
    ),
    min_size=20,
    max_size=100,
)


class OneApiRun:
    """Drives a Scheduler through its one API and checks the invariants after every event."""

    def __init__(self, cfg: SchedulerConfig, tasks: list[TaskSpec], per_job: float) -> None:
        self.cfg = cfg
        self.s = Scheduler(cfg, tasks, batch_afet=lambda m, j, size: 0.005 + per_job * size)
        self.inflight: list[Dispatch] = []  # running or queued behind another on a stream, oldest first
        self.next_stage: dict[object, int] = {}
        self.busy: set[object] = set()
        self.admitted: set[object] = set()
        self.done: set[object] = set()
        self.skipped: set[object] = set()
        self.now = 0.0

    def dispatch(self) -> None:
        s, cfg, now = self.s, self.cfg, self.now
        down = s.contexts_down
        for d in s.dispatch(now):
            assert 1 <= len(d.jobs) <= d.size and len(d.levels) == len(d.jobs)
            if cfg.batching is None:
                assert d.size == 1 and len(d.jobs) == 1
            else:
                assert d.size in cfg.batching.sizes
            if d.behind:  # queued behind a busy stream: formed within the lead of its predicted start
                assert cfg.launch_ahead and now <= d.start <= now + cfg.ahead_lead + 1e-12
            else:
                assert d.start == now
            assert d.predicted_finish >= d.start
            if len(down) < s.layout.n_contexts:
                assert d.context not in down, "a dispatch on a context marked down"
            for j in d.jobs:
                assert j not in self.busy, "a job in two dispatches at once"
                assert self.next_stage.get(j, 0) == d.stage, "stages out of order"
                assert j.context == d.context
                self.busy.add(j)
            self.inflight.append(d)
        for j in s.take_skipped():  # skip_late: a job that never started ends here, once
            assert j in self.admitted and j not in self.done and j not in self.busy, "skipped twice or while running"
            assert self.next_stage.get(j, 0) == 0 and j.start is None, "a started job was skipped"
            assert cfg.skip_late and now >= j.release + cfg.skip_late * (j.abs_deadline - j.release)
            self.done.add(j)
            self.skipped.add(j)

    def check(self) -> None:
        s, n_s = self.s, self.s.layout.n_streams
        on_streams: list[Dispatch] = []
        for k in range(s.layout.n_contexts):
            running, behind = s.running(k), s.queued_behind(k)
            streams = [d.stream for d in running]
            assert len(streams) == len(set(streams)), "a stream runs two things"
            assert len(running) + s.idle_streams(k) == n_s
            for x in set(d.stream for d in behind):  # queued only behind a running one, at most launch_ahead
                assert x in streams and sum(d.stream == x for d in behind) <= self.cfg.launch_ahead
            on_streams += running + behind
            assert s.backlog(k) >= -1e-9
            u, ref = s.utilization(k), s.utilization_from_scratch(k)
            for f in ("total", "hp", "lp", "active_lp", "active_hp"):
                assert getattr(u, f) == pytest.approx(getattr(ref, f), abs=1e-9), f
        assert sorted(map(id, on_streams)) == sorted(map(id, self.inflight))
        queued = sum(s.queue_length(k) for k in range(s.layout.n_contexts))
        assert s.outstanding_stages() == queued + sum(len(d.jobs) for d in self.inflight)

    def finish(self, d: Dispatch, factor: float) -> None:
        et = (d.predicted_finish - d.start) * factor
        self.now = max(self.now, d.start + et)
        self.inflight.remove(d)
        outs = self.s.complete(d, self.now, et)
        assert all(o.job in d.jobs for o in outs) and len(outs) == (len(d.jobs) if d.is_last else 0)
        for o in outs:
            assert o.job not in self.done, "a job completed twice"
            self.done.add(o.job)
        for j in d.jobs:
            self.busy.discard(j)
            self.next_stage[j] = d.stage + 1

    def heads(self) -> list[Dispatch]:
        """The dispatches that may complete next: the running ones (a stream's dispatches end in order)."""
        return [d for k in range(self.s.layout.n_contexts) for d in self.s.running(k)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=any_mode_worlds(), acts=one_api_actions)
def test_property_one_api_invariants(world: tuple[SchedulerConfig, list[TaskSpec], float], acts: list) -> None:
    """Batching on and off, launch-ahead, aborts (of running and queued-behind dispatches) and contexts going
    down and up, skip_late on or off: every admitted job ends exactly once (completes, or is skipped unstarted),
    streams never run two things, and the outstanding, backlog and utilization counters stay consistent."""
    cfg, tasks, per_job = world
    r = OneApiRun(cfg, tasks, per_job)
    s = r.s
    n_c = s.layout.n_contexts
    for kind, idx, dt, factor in acts:
        r.now += dt
        if kind == "release":
            dec = s.release(tasks[idx % len(tasks)].name, r.now)
            if dec.admitted:
                r.admitted.add(dec.job)
                if len(s.contexts_down) < n_c:
                    assert dec.context not in s.contexts_down
        elif kind == "complete" and r.heads():
            heads = r.heads()
            r.finish(heads[idx % len(heads)], factor)
        elif kind == "abort" and r.inflight:
            d = r.inflight.pop(idx % len(r.inflight))
            s.abort(d, r.now)
            for j in d.jobs:
                r.busy.discard(j)
        elif kind == "down":
            s.context_down(idx % n_c, r.now)
        elif kind == "up":
            s.context_up(idx % n_c, r.now)
        elif kind == "wait":
            wake = s.next_wakeup()
            if wake is not None:
                r.now = max(r.now, wake)
        r.dispatch()
        r.check()
    for k in range(n_c):
        s.context_up(k, r.now)
    for _ in range(100_000):
        r.dispatch()
        r.check()
        if r.inflight:
            r.finish(r.heads()[0], 1.0)
        elif s.outstanding_stages():
            wake = s.next_wakeup()
            assert wake is not None and wake > r.now, "stages outstanding, nothing runs and no wake-up is due"
            r.now = wake
        else:
            break
    assert r.done == r.admitted, "an admitted job did not end (complete or skipped)"
    s.expire(r.now + 1e6)
    for k in range(n_c):
        u = s.utilization(k)
        assert u.active_lp == 0.0 and u.active_hp == 0.0 and s.backlog(k) == 0.0 and s.queue_length(k) == 0
    for name, ts in s.task_stats().items():
        assert ts.released == ts.admitted + ts.rejected and ts.completed + ts.skipped == ts.admitted, name
    assert sum(ts.skipped for ts in s.task_stats().values()) == len(r.skipped)
