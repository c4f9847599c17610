"""Worker-side preprocessing of the mps backend (``mps_frame_pixels``) through the engine: a uint8 camera frame
goes to the worker process through shared memory and is resized and normalised there (on its GPU; here CPU
workers). The result must equal the cpu backend's (host preprocessing, same stages). The backend alone (a frame
against a host-preprocessed input, launch/poll): test/runtime/test_mps_backend_protocol.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]


def test_engine_sends_frames_to_the_workers_and_results_match_the_cpu_backend() -> None:
    tasks = (TaskSettings("cam", "/cam", "HP", 0.2, 0.2, "resnet18", input_size=(32, 32)),)
    frame = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    outs: dict[str, list[JobResult]] = {}
    for name, backend, pixels in (("cpu", None, 0), ("mps", "mps", 64 * 48)):
        s = SchedulerSettings(policy="MPS", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                              mps_frame_pixels=pixels)
        done: list[JobResult] = []
        ev = threading.Event()

        def on_result(r: JobResult, done: list[JobResult] = done, ev: threading.Event = ev) -> None:
            done.append(r)
            ev.set()

        b = MpsBackend(n_contexts=1, n_streams=1, cpu_workers=True, spares=0, frame_pixels=pixels) if backend \
            else None
        torch.manual_seed(0)  # the same random weights in both engines
        e = Engine(s, on_result=on_result, backend=b)
        try:
            e.load_models()
            e.profile()
            e.start()
            e.offer("cam", frame, receive_time=time.monotonic())  # taken by the next release
            assert ev.wait(30), f"{name}: no result"
        finally:
            e.close()
        outs[name] = done
    (a,), (m,) = outs["cpu"], outs["mps"]
    assert not a.error and not m.error, (a.error, m.error)
    assert m.class_ids == a.class_ids and m.scores == pytest.approx(a.scores, abs=1e-5)
