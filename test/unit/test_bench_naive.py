"""The naive baseline (one thread per task, no scheduler) on the CPU: the window opens after every thread's first
job and counts the jobs finished inside it. Before, each thread's first job (on the GPU: its cuDNN/cuBLAS handles)
ran inside the window, and on the H200 that first job was every thread's only one: naive JPS was the thread
count / window."""

from __future__ import annotations

import torch

from daris_ros.bench.baselines import naive


def test_naive_counts_steady_state_jobs_inside_the_window() -> None:
    periods = [0.05] * 3
    res = naive(["mobilenet_v3_small"] * 3, torch.device("cpu"), periods, [True, False, False], seconds=1.0)
    offered = sum(1.0 / p for p in periods)  # 60 jobs/s released
    assert res.n_threads == 3
    assert res.warmup_s > 0.0
    assert res.jps > 3 * len(periods)  # several jobs per thread, not just each thread's first
    assert res.jps <= offered * 1.02  # nothing finished outside the window is counted
    assert 0.0 <= res.hp_dmr <= 1.0 and 0.0 <= res.lp_dmr <= 1.0
