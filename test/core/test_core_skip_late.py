"""Bounded staleness under overload (beyond the paper; ``SchedulerConfig.skip_late``, issue 15 item 3).

With ``skip_late = x``, a job whose first stage is still queued at ``release + x * D_i`` is skipped at the next
``dispatch``: out of every queue, its bookkeeping released as at a completion, counted in ``TaskStats.skipped``
(not completed, not missed; the DMR counts it) and handed to the driver by ``take_skipped``. A started job is
never skipped. Everything here runs on an injected time line (no wall clock)."""

from __future__ import annotations

import heapq
import math

import pytest

from daris_ros.core import (
    BatchingConfig,
    Dispatch,
    Job,
    Policy,
    Priority,
    Scheduler,
    SchedulerConfig,
    TaskSpec,
)

HP, LP = Priority.HP, Priority.LP


# ---------------------------------------------------------------------------- an injected time line
class Overload:
    """A discrete-event driver of the one API: periodic releases, dispatches that take ``slow`` x their stage's
    AFET (a slower clock, another process on the device), launch-ahead lanes started when the one ahead ends.
    Records the queue length, the jobs in flight and the response times as it goes."""

    def __init__(self, cfg: SchedulerConfig, tasks: list[TaskSpec], slow: float) -> None:
        self.cfg, self.tasks, self.slow = cfg, {t.name: t for t in tasks}, slow
        per_job = {t.model or t.name: t.afet[0] for t in tasks}
        self.s = Scheduler(cfg, tasks, batch_afet=lambda m, j, size: per_job[m] * size)
        self.admitted: set[Job] = set()
        self.ended: dict[Job, str] = {}
        self.max_queue = 0
        self.max_in_flight = 0
        self.queue_trace: list[int] = []
        self.responses: list[float] = []

    def _exec(self, d: Dispatch) -> float:
        afet = self.tasks[d.job.task].afet
        return self.slow * sum(afet[j] for j in d.model_stages) * len(d.jobs)

    def run(self, duration: float) -> Overload:
        s = self.s
        ev: list[tuple[float, int, int, object]] = []  # (time, kind 0 complete / 1 release, seq, payload)
        seq = 0
        for name in self.tasks:
            ev.append((0.0, 1, seq, name))
            seq += 1
        heapq.heapify(ev)
        lanes: dict[tuple[int, int], list[Dispatch]] = {}
        while ev:
            now = ev[0][0]
            while ev and ev[0][0] == now:
                _, kind, _, payload = heapq.heappop(ev)
                if kind == 0:
                    d: Dispatch = payload  # type: ignore[assignment]
                    for o in s.complete(d, now, self._exec(d)):
                        assert o.job not in self.ended, "a job ended twice"
                        self.ended[o.job] = "completed"
                        self.responses.append(o.response_time)
                    lane = lanes.get((d.context, d.stream))
                    if lane:
                        nd = lane.pop(0)
                        heapq.heappush(ev, (now + self._exec(nd), 0, seq, nd))
                        seq += 1
                else:
                    name = str(payload)
                    dec = s.release(name, now)
                    if dec.admitted:
                        self.admitted.add(dec.job)
                    nxt = now + self.tasks[name].period
                    if nxt < duration:
                        heapq.heappush(ev, (nxt, 1, seq, name))
                        seq += 1
            for d in s.dispatch(now):
                if d.behind:
                    lanes.setdefault((d.context, d.stream), []).append(d)
                else:
                    heapq.heappush(ev, (now + self._exec(d), 0, seq, d))
                    seq += 1
            for job in s.take_skipped():
                assert job in self.admitted and job not in self.ended, "a skipped job ended before"
                assert now >= job.release + (self.cfg.skip_late or math.inf) * (job.abs_deadline - job.release)
                self.ended[job] = "skipped"
            q = sum(s.queue_length(k) for k in range(s.layout.n_contexts))
            self.queue_trace.append(q)
            self.max_queue = max(self.max_queue, q)
            self.max_in_flight = max(self.max_in_flight, len(self.admitted) - len(self.ended))
        return self


def _overloaded(skip_late: float | None, batching: bool, launch_ahead: int = 0) -> SchedulerConfig:
    return SchedulerConfig(Policy.STR, n_streams=1, skip_late=skip_late, launch_ahead=launch_ahead,
                           batching=BatchingConfig(sizes=(1, 2, 4), lp_admit_margin=None) if batching else None)


def _hp_tasks(n: int, n_stages: int = 1) -> list[TaskSpec]:
    # each task: a 100 ms period and deadline; its job takes 40 ms by its AFET (0.4 of a stream) ...
    return [TaskSpec(f"h{i}", 0.1, HP, n_stages, (0.04 / n_stages,) * n_stages, model="m") for i in range(n)]


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize("launch_ahead", [0, 1])
def test_without_skip_late_an_hp_backlog_grows_without_bound(batching: bool, launch_ahead: int) -> None:
    # ... but the device runs 2.5x slower than profiled: 2 HP tasks need 2 x 0.4 x 2.5 = 2 streams, there is 1
    r = Overload(_overloaded(None, batching, launch_ahead), _hp_tasks(2), slow=2.5).run(20.0)
    s = r.s
    hp = s.priority_stats()[HP]
    assert hp.skipped == 0 and hp.completed == hp.admitted == 400  # the paper's rule: every job runs, late
    # the queue grows about linearly with time (half the work is left over), and so do the response times
    assert r.queue_trace[len(r.queue_trace) // 2] > 80 and r.max_queue > 180
    assert max(r.responses) > 9.0  # a result 9 s after its frame, for a 100 ms deadline
    assert all(r.ended[j] == "completed" for j in r.admitted)


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize("launch_ahead", [0, 1])
@pytest.mark.parametrize("skip_late", [1.0, 2.0, 3.5])
def test_with_skip_late_the_backlog_and_the_age_of_results_stay_bounded(batching: bool, launch_ahead: int,
                                                                          skip_late: float) -> None:
    r = Overload(_overloaded(skip_late, batching, launch_ahead), _hp_tasks(2), slow=2.5).run(20.0)
    s = r.s
    hp, per_task = s.priority_stats()[HP], s.task_stats()
    # every admitted job ended exactly once: completed (met or missed) or skipped
    assert set(r.ended) == r.admitted and hp.admitted == 400
    assert hp.completed + hp.skipped == hp.admitted and hp.skipped == sum(t.skipped for t in per_task.values())
    assert hp.skipped > 100  # about half of the jobs cannot be served, and are skipped instead of queued
    # (which task loses follows the paper's order: EDF on equal deadlines breaks the tie by task name, so here one
    # task runs on time while the other's jobs are skipped; docs/policy.md says so)
    assert all(t.completed + t.skipped == t.admitted for t in per_task.values())
    # bounded backlog: per task at most the jobs released within skip_late deadlines (+ the one at the boundary)
    assert r.max_queue <= 2 * (math.floor(skip_late) + 1)
    per_dispatch = 4 if batching else 1  # started jobs: the running dispatch and those queued behind it
    assert r.max_in_flight <= 2 * (math.floor(skip_late) + 1) + per_dispatch * (1 + launch_ahead)
    # bounded staleness: a job starts before release + x D and then runs at most one (slow, batched) dispatch
    worst_run = 2.5 * 0.04 * (4 if batching else 1)
    assert max(r.responses) <= skip_late * 0.1 + worst_run + 2.5 * 0.04 * launch_ahead * 4 + 1e-9
    # DMR counts a skipped job as a lost deadline; the skip rate is the skipped share
    assert hp.dmr == pytest.approx((hp.missed + hp.skipped) / hp.admitted)
    assert hp.skip_rate == pytest.approx(hp.skipped / hp.admitted) and hp.finished == hp.admitted
    assert len(hp.response_times) == hp.completed  # a skipped job has no response time
    # drained: the utilization bookkeeping is back to zero, as after completions only
    assert s.outstanding_stages() == 0 and s.backlog(0) == 0.0 and s.queue_length(0) == 0
    u = s.utilization(0)
    assert u.active_lp == 0.0 and u.active_hp == 0.0 and u.total == pytest.approx(s.utilization_from_scratch(0).total)


def test_a_queued_job_is_skipped_at_release_plus_x_deadlines_not_before() -> None:
    tasks = [TaskSpec("long", 10.0, HP, 1, (1.0,)), TaskSpec("h", 0.1, HP, 1, (0.01,), deadline=0.05)]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1, skip_late=2.0), tasks)
    s.release("long", 0.0)
    (busy,) = s.dispatch(0.0)  # the only stream is busy for 1 s
    job = s.release("h", 0.2).job
    assert job is not None and s.dispatch(0.2) == [] and s.queue_length(0) == 1
    assert s.dispatch(0.2999) == [] and s.take_skipped() == []  # 0.2 + 2 x 0.05 = 0.3: not yet
    assert s.dispatch(0.3) == []  # at 0.3 it is skipped (it could not meet its deadline anyway)
    assert s.take_skipped() == [job] and s.take_skipped() == []  # reported once
    ts = s.task_stats()["h"]
    assert (ts.admitted, ts.completed, ts.missed, ts.skipped) == (1, 0, 0, 1) and ts.dmr == 1.0
    assert s.queue_length(0) == 0 and s.outstanding_stages() == 1  # the long job only
    assert s.backlog(0) == pytest.approx(1.0)
    assert s.complete(busy, 1.0, 1.0)[0].job.task == "long"
    assert s.dispatch(1.0) == [] and s.outstanding_stages() == 0 and s.backlog(0) == 0.0
    assert s.utilization(0).active_lp == 0.0 and job.start is None  # never started


def test_a_started_job_is_never_skipped_it_runs_late_and_counts_as_missed() -> None:
    tasks = [TaskSpec("long", 10.0, HP, 1, (1.0,)), TaskSpec("h", 0.1, HP, 2, (0.01, 0.01), deadline=0.05)]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=2, skip_late=1.0), tasks)
    job = s.release("h", 0.0).job
    (d0,) = s.dispatch(0.0)  # h stage 0 on stream 0
    s.release("long", 0.001)
    (busy,) = s.dispatch(0.001)  # stream 1 busy for 1 s
    assert s.complete(d0, 0.5, 0.01) == []  # stage 0 ends at 0.5 (way past 0.05 = its skip time)
    (d1,) = s.dispatch(0.5)  # its next stage runs: a started job is not skipped
    assert d1.job is job and d1.stage == 1 and s.take_skipped() == []
    (o,) = s.complete(d1, 0.6, 0.01)
    assert not o.met and o.response_time == pytest.approx(0.6)
    ts = s.task_stats()["h"]
    assert (ts.completed, ts.missed, ts.skipped) == (1, 1, 0)
    s.complete(busy, 1.001, 1.0)


def test_an_aborted_first_stage_has_started_it_is_retried_not_skipped() -> None:
    # a first stage lost with its worker (abort) was dispatched: its job has started, and its retry runs (the
    # worker-fault rules bound retries) even past the skip time
    tasks = [TaskSpec("h", 0.1, HP, 2, (0.01, 0.01))]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1, skip_late=2.0), tasks)
    job = s.release("h", 0.0).job
    (d,) = s.dispatch(0.0)
    assert s.dispatch(0.25) == [] and s.take_skipped() == []  # past 0.2, but its first stage is in a dispatch
    s.abort(d, 0.25)  # lost with its worker: queued again
    (again,) = s.dispatch(0.25)
    assert again.job is job and again.stage == 0 and s.take_skipped() == []
    assert s.complete(again, 0.26, 0.01) == []
    (last,) = s.dispatch(0.26)
    (o,) = s.complete(last, 0.27, 0.01)
    assert not o.met and s.task_stats()["h"].skipped == 0 and s.task_stats()["h"].missed == 1


def test_a_job_moved_by_context_down_is_skipped_from_the_context_it_moved_to() -> None:
    tasks = [TaskSpec("a", 10.0, HP, 1, (1.0,)), TaskSpec("b", 10.0, HP, 1, (1.0,)),
             TaskSpec("h", 0.1, HP, 1, (0.01,))]
    s = Scheduler(SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=2.0, skip_late=2.0), tasks)
    for t in ("a", "b"):
        s.release(t, 0.0)
    assert len(s.dispatch(0.0)) == 2  # both contexts busy for 1 s
    k = s.context_of("h")
    job = s.release("h", 0.0).job
    assert s.dispatch(0.0) == [] and s.queue_length(k) == 1
    s.context_down(k, 0.05)  # its queued stage moves to the other context
    other = 1 - k
    assert s.queue_length(k) == 0 and s.queue_length(other) == 1 and job.context == other
    assert s.dispatch(0.2) == [] and s.take_skipped() == [job]
    assert s.queue_length(other) == 0 and s.outstanding_stages() == 2  # the two long jobs
    for c in range(2):
        u, ref = s.utilization(c), s.utilization_from_scratch(c)
        assert u.active_hp == pytest.approx(ref.active_hp) and u.active_lp == pytest.approx(ref.active_lp)


def test_a_skipped_hp_job_under_hpa_gives_its_window_back() -> None:
    tasks = [TaskSpec("long", 10.0, LP, 1, (1.0,)), TaskSpec("h", 0.1, HP, 1, (0.02,))]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1, hp_admission=True, skip_late=1.0), tasks)
    s.release("long", 0.0)
    (busy,) = s.dispatch(0.0)
    s.release("h", 0.0)
    assert s.utilization(0).active_hp > 0.0  # the HPA window of h is open
    assert s.dispatch(0.1) == [] and len(s.take_skipped()) == 1
    assert s.utilization(0).active_hp == 0.0  # its deadline passed and it ended: the window is closed
    assert s.utilization(0) == s.utilization_from_scratch(0)
    s.complete(busy, 1.0, 1.0)


def test_a_first_stage_queued_behind_a_busy_stream_has_started_and_is_not_skipped() -> None:
    # launch-ahead: the stage is handed to the driver, queued on the stream; it runs when the stream frees
    tasks = [TaskSpec("long", 10.0, HP, 1, (0.3,)), TaskSpec("h", 0.1, HP, 1, (0.01,), deadline=0.1)]
    s = Scheduler(SchedulerConfig(Policy.STR, n_streams=1, launch_ahead=1, ahead_lead=0.001, skip_late=1.0),
                  tasks)
    s.release("long", 0.0)
    (busy,) = s.dispatch(0.0)
    s.release("h", 0.25)
    (behind,) = s.dispatch(0.2995)  # formed 0.5 ms before the stream frees (predicted start 0.3, in time)
    assert behind.behind == 1 and behind.job.task == "h"
    s.complete(busy, 0.40, 0.40)  # the long job ran late; h starts at 0.40 > 0.25 + 0.1
    assert s.dispatch(0.40) == [] and s.take_skipped() == []
    (o,) = s.complete(behind, 0.41, 0.01)
    assert not o.met and s.task_stats()["h"].skipped == 0


@pytest.mark.parametrize("batching", [False, True])
def test_skipping_within_a_batch_key_keeps_the_other_stages_queued(batching: bool) -> None:
    tasks = [TaskSpec("long", 10.0, HP, 1, (1.0,), model="x"), TaskSpec("h", 0.1, HP, 1, (0.01,), model="m"),
             TaskSpec("g", 1.0, LP, 1, (0.01,), model="m")]
    cfg = SchedulerConfig(Policy.STR, n_streams=1, skip_late=2.0,
                          batching=BatchingConfig(sizes=(1, 2), lp_admit_margin=None) if batching else None)
    s = Scheduler(cfg, tasks, batch_afet=lambda m, j, size: (1.0 if m == "x" else 0.01) * size)
    s.release("long", 0.0)
    (busy,) = s.dispatch(0.0)
    h = s.release("h", 0.0).job
    g = s.release("g", 0.0).job
    assert g is not None and s.queue_length(0) == 2
    assert s.dispatch(0.2) == [] and s.take_skipped() == [h]  # h: 0 + 2 x 0.1; g waits until 2 x 1.0
    assert [job for _, job, _ in s.queued(0)] == [g] and s.queue_length(0) == 1
    s.complete(busy, 0.9, 0.9)
    (d,) = s.dispatch(0.9)
    assert d.jobs == (g,)
    (o,) = s.complete(d, 0.91, 0.01)
    assert o.met and s.outstanding_stages() == 0 and s.backlog(0) == 0.0


def test_off_is_the_paper_rule_bit_for_bit() -> None:
    """skip_late None, 0, or so large that nothing is ever due: the same dispatches at the same times."""
    def trace(skip_late: float | None) -> list[tuple]:
        r = Overload(_overloaded(skip_late, False, 1), _hp_tasks(2, n_stages=2), slow=2.5)
        out: list[tuple] = []
        dispatch = r.s.dispatch

        def record(now: float) -> list[Dispatch]:
            ds = dispatch(now)
            out.extend((now, d.job.task, d.job.job_id, d.stage, d.start, d.behind) for d in ds)
            return ds

        r.s.dispatch = record  # type: ignore[method-assign]
        r.run(3.0)
        assert r.s.priority_stats()[HP].skipped == 0
        return out

    ref = trace(None)
    assert trace(0) == ref and trace(1e9) == ref


@pytest.mark.parametrize("bad", [0.5, -1.0, math.inf, math.nan, True, "2"])
def test_skip_late_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="skip_late"):
        SchedulerConfig(skip_late=bad)  # type: ignore[arg-type]


def test_skip_late_accepts_off_and_at_least_one_deadline() -> None:
    for ok in (None, 0, 0.0, 1, 1.0, 2.5):
        assert SchedulerConfig(skip_late=ok).skip_late == ok  # type: ignore[arg-type]
