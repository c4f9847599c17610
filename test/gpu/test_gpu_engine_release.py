"""A managed node's cleanup on the GPU: an engine (str backend, CUDA graphs, ResNet18) started, run and closed,
then :func:`release_device_memory`, gives back what it held on the device (what stays allocated is a small
fraction of what it held while running; nothing reserved beyond that), and a second engine starts and runs after
it (configure again)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from daris_ros.runtime.driver import SyntheticCameras, drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.memory import release_device_memory
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _run_once() -> tuple[int, int, int]:
    """(results, bytes allocated and reserved while it ran)."""
    tasks = (TaskSettings("cam", "/cam", "HP", 0.02, 0.02, "resnet18", input_size=(224, 224)),)
    s = SchedulerSettings(policy="STR", backend="str", device="cuda", n_contexts=1, n_streams=2, profile_runs=2,
                          tasks=tasks, release_trigger="clock")
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    try:
        e.load_models()
        e.profile()
        e.start()
        with SyntheticCameras(e, ["cam"], np.zeros((224, 224, 3), np.uint8)):
            threading.Event().wait(0.5)
        e.pause_releases()
        drain(e, 30.0)
        held, held_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    finally:
        e.close()
    return len(results), held, held_reserved


def test_closed_engine_leaves_no_cuda_memory_and_a_new_one_runs() -> None:
    n, held, held_reserved = _run_once()
    assert n > 0 and held > 40e6  # ResNet18's weights alone are ~45 MB
    release_device_memory()
    left, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    print(f"while running: {held} B allocated, {held_reserved} B reserved; after release: {left} B allocated, "
          f"{reserved} B reserved")
    assert left < held / 10
    assert reserved < held_reserved / 4  # the caching allocator's free blocks went back to the device
    n, _, _ = _run_once()  # configure again
    assert n > 0
    release_device_memory()
    assert torch.cuda.memory_allocated() < held / 10
