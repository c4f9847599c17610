"""The scheduler node's engine with ``batching: true`` on the GPU (str and green backends, CUDA graphs per batch
size, fp16 channels-last and fp32): every job's result equals the one the same frame gives unbatched, and batches
really form. Prints the engine's batch statistics and throughput for the record (not asserted: timings belong in
benchmarks)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

N_TASKS = 12


def _engine(backend: str, batching: bool, precision: str, cl: bool, n_streams: int = 2
            ) -> tuple[Engine, list[JobResult]]:
    tasks = tuple(TaskSettings(f"t{i}", f"/cam{i}", "HP" if i < 4 else "LP", 1.0, 1.0, "resnet18",
                               precision=precision, channels_last=cl) for i in range(N_TASKS))
    s = SchedulerSettings(policy="STR", backend=backend, device="cuda", n_contexts=1, n_streams=n_streams,
                          profile_runs=2, tasks=tasks, batching=batching, batch_sizes=(1, 2, 4, 8, 16),
                          batch_lp_admit_margin=0.0)
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    torch.manual_seed(0)
    e = Engine(s, on_result=on_result)
    e.load_models()
    e.profile()
    e.start(origin=time.monotonic() + 0.2)  # the first rig release once the test has set the frames
    return e, results


@pytest.mark.parametrize(("backend", "precision", "cl"), [("str", "fp16", True), ("str", "fp32", False),
                                                          ("green", "fp16", True)])
def test_engine_batches_on_the_gpu_and_each_job_gets_its_unbatched_result(backend: str, precision: str,
                                                                          cl: bool) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(N_TASKS)]
    runs = {}
    for batching in (True, False):
        e, results = _engine(backend, batching, precision, cl)
        try:
            t0 = time.perf_counter()
            for i, f in enumerate(frames):
                e.set_frame(f"t{i}", f)
            t_end = time.monotonic() + 60.0
            while len(results) < 4 * N_TASKS:  # four rig releases
                assert time.monotonic() < t_end
                time.sleep(0.005)
            for i in range(N_TASKS):
                e.inbox.clear(f"t{i}")
            drain(e, 60.0)
            dt = time.perf_counter() - t0
        finally:
            e.close()
        runs[batching] = (e, results, dt)
    eb, batched, dt_b = runs[True]
    _, single, dt_1 = runs[False]
    stats = eb.scheduler.batch_stats()
    print(f"\n{backend} {precision} cl={cl}: {len(batched)} jobs, {stats.batches} batches, mean batch "
          f"{stats.mean_batch:.1f}, by size {dict(sorted(stats.by_size.items()))}; wall {dt_b * 1e3:.0f} ms batched, "
          f"{dt_1 * 1e3:.0f} ms batch-1")
    assert stats.batches < stats.jobs and max(stats.by_size) > 1, stats
    batched = [r for r in batched if r.job_id < 4]
    single = [r for r in single if r.job_id < 4]
    assert len(batched) == len(single) == 4 * N_TASKS
    ref = {(r.task, r.job_id): r for r in single}
    tol = 1e-3 if precision == "fp32" else 2e-2  # a batch may pick other conv algorithms than batch 1
    for r in batched:
        assert not r.error, r.error
        want = ref[(r.task, r.job_id)]
        assert r.class_ids[0] in want.class_ids[:2]  # random weights: the top two may nearly tie
        assert r.scores[0] == pytest.approx(want.scores[0], rel=tol, abs=1e-4)
    assert set(eb.models) == {"resnet18@224x224" + ("" if precision == "fp32" else f"/{precision}-cl") + ":"}
