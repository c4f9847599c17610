"""The engine's batched path (``batching: true``) on the cpu backend: real models, real worker threads.

Jobs of tasks that share a model are run as batched stages; each job's result must equal what the same
frame gives unbatched, batches must really form (more than one job per batch), every admitted job is
reported once, and reduced precision / channels-last models run through the same path."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

PERIOD = 1.0  # every task is released at the same instants (a rig), a period apart


def _tasks(model: str, n: int, size: int, **kw: object) -> tuple[TaskSettings, ...]:
    # 1-s periods and 10-s deadlines: generous for a busy CI machine
    # HP: never rejected (no HPA), so every release of the rig has a job in both runs
    return tuple(TaskSettings(f"t{i}", f"/cam{i}", "HP", PERIOD, 10.0, model,
                              input_size=(size, size), **kw) for i in range(n))  # type: ignore[arg-type]


def _engine(tasks: tuple[TaskSettings, ...], policy: str = "STR", n_contexts: int = 1,
            **kw: object) -> tuple[Engine, list[JobResult]]:
    s = SchedulerSettings(policy=policy, n_contexts=n_contexts, n_streams=1, profile_runs=1, tasks=tasks,
                          **kw)  # type: ignore[arg-type]
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    torch.manual_seed(0)  # the same random weights in every engine of a test
    e = Engine(s, on_result=on_result)
    e.load_models()
    e.profile()
    e.start(origin=time.monotonic() + 0.3)  # the first releases once the test has offered its frames
    return e, results


def _frames(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _feed(e: Engine, frames: list[np.ndarray]) -> None:
    """Task i's camera always has frame i (every release takes it)."""
    for i, f in enumerate(frames):
        e.set_frame(f"t{i}", f)


def _wait_results(results: list[JobResult], n: int, rounds: int, timeout: float = 30.0) -> None:
    """Until jobs 0 .. rounds-1 of tasks t0 .. t(n-1) all have their result."""
    want = {(f"t{i}", k) for i in range(n) for k in range(rounds)}
    t_end = time.monotonic() + timeout
    while not want <= {(r.task, r.job_id) for r in list(results)}:
        assert time.monotonic() < t_end, f"{len(results)} results, waiting for {sorted(want)}"
        time.sleep(0.01)


def _run(model: str, n: int, size: int, batching: bool, **kw: object) -> tuple[Engine, list[JobResult]]:
    e, results = _engine(_tasks(model, n, size, **kw), batching=batching, batch_sizes=(1, 2, 4, 8),
                         batch_lp_admit_margin=0.0)
    try:
        _feed(e, _frames(n, size))
        _wait_results(results, n, 2)  # two rounds of releases
        for i in range(n):
            e.inbox.clear(f"t{i}")
        drain(e, 30.0)
    finally:
        e.close()
    return e, [r for r in results if r.job_id < 2]


@pytest.mark.parametrize(("model", "size"), [("resnet18", 32), ("unet", 32)])
def test_each_job_of_a_batch_gets_its_unbatched_result(model: str, size: int) -> None:
    n = 6
    eb, batched = _run(model, n, size, batching=True)
    _, single = _run(model, n, size, batching=False)
    stats = eb.scheduler.batch_stats()
    assert stats.batches < stats.jobs, f"no batch formed: {stats}"
    assert max(stats.by_size) > 1
    assert len(batched) == len(single) == 2 * n
    assert not [r.error for r in batched if r.error]
    by_key = {(r.task, r.job_id): r for r in single}
    for r in batched:
        ref = by_key[(r.task, r.job_id)]
        if model == "unet":
            assert r.segmentation is not None and ref.segmentation is not None
            h, w, ids, frac = r.segmentation
            assert (h, w) == (size, size) == ref.segmentation[:2]
            assert ids == ref.segmentation[2]
            assert frac == pytest.approx(ref.segmentation[3], abs=2e-3)  # a pixel or two may tie differently
        else:
            assert r.class_ids == ref.class_ids
            assert r.scores == pytest.approx(ref.scores, rel=1e-4, abs=1e-6)
        assert len(r.stages) == 4 and [s.stage for s in r.stages] == [0, 1, 2, 3]


def test_tasks_of_different_models_or_precisions_never_share_a_batch() -> None:
    tasks = (*_tasks("resnet18", 3, 32),
             TaskSettings("bf", "/bf", "HP", PERIOD, 10.0, "resnet18", input_size=(32, 32), precision="bf16",
                          channels_last=True),
             TaskSettings("bf2", "/bf2", "HP", PERIOD, 10.0, "resnet18", input_size=(32, 32), precision="bf16",
                          channels_last=True))
    e, results = _engine(tasks, batching=True, batch_sizes=(1, 2, 4), batch_lp_admit_margin=0.0)
    try:
        for t, f in zip(tasks, _frames(5, 32), strict=True):
            e.set_frame(t.name, f)
        want = {(t.name, k) for t in tasks for k in range(3)}
        t_end = time.monotonic() + 60.0
        while not want <= {(r.task, r.job_id) for r in list(results)}:
            assert time.monotonic() < t_end
            time.sleep(0.01)
    finally:
        e.close()
    assert set(e.models) == {"resnet18@32x32:", "resnet18@32x32/bf16-cl:"}
    assert e.models["resnet18@32x32/bf16-cl:"].input_dtype == torch.bfloat16
    assert len(results) >= 15 and not [r.error for r in results if r.error]
    batch_times = e.scheduler.batch_times()
    assert {m for m, _, _ in batch_times} == set(e.models)  # both keys ran, as separate batch keys
    for r in results:  # bf16 jobs still report valid probabilities
        assert len(r.class_ids) == 5 and all(0.0 <= p <= 1.0 for p in r.scores)


def test_a_killed_worker_loses_its_batch_which_runs_again_once_on_another_context() -> None:
    """MPS 2x1 with batching: each context's worker runs the batches of the tasks placed there. A worker killed
    while it runs a batch takes its context down (its only stream): the lost batch is queued again in the core and
    runs on the other context, the context's tasks move there until the replacement serves, then move back."""
    e, results = _engine(_tasks("resnet18", 4, 32), policy="MPS", n_contexts=2, batching=True, batch_sizes=(1, 2, 4),
                         batch_lp_admit_margin=0.0, worker_stage_timeout=0.5)
    try:
        _feed(e, _frames(4, 32))
        c = e.call(lambda core: core.context_of("t0"))
        # waits up to three periods for the worker to run a batch (a kill of an idle worker would lose nothing)
        assert e.backend.inject_fault("kill", c, 0, seconds=0.5, wait_busy=3 * PERIOD), "no batch in flight to kill"
        t_end = time.monotonic() + 10.0
        while not (e.faults.records and e.faults.records[0].moved_back):
            assert time.monotonic() < t_end, "the context never came back"
            time.sleep(0.01)
        for i in range(4):
            e.inbox.clear(f"t{i}")
        drain(e, 30.0)
    finally:
        e.close()
    (rec,) = list(e.faults.records)
    assert (rec.reason, rec.outcome, rec.context) == ("died", "retried", c)
    assert rec.moved and set(rec.moved.values()) == {1 - c} and rec.moved_back == {t: c for t in rec.moved}
    assert e.faults.stages_retried == 1 and e.faults.jobs_failed == 0
    lost = next(r for r in results if (r.task, r.job_id) == (rec.task, rec.job_id))
    assert [s.context for s in lost.stages if s.stage == rec.stage] == [1 - c]  # re-run on the other context
    stats = e.scheduler.task_stats()
    for name in ("t0", "t1", "t2", "t3"):  # every admitted job reported once, none with an error
        ids = [r.job_id for r in results if r.task == name]
        assert len(ids) == len(set(ids)) == stats[name].admitted == stats[name].completed
    assert not [r.error for r in results if r.error]
