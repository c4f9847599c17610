"""Worker-side preprocessing of the mps backend (``mps_frame_pixels``): a uint8 camera frame goes to the
worker process through shared memory and is resized and normalised there (on its GPU; here CPU workers).
The result must equal host preprocessing followed by the same stages."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from daris_ros.runtime.backends import BackendError
from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.models import build_staged_model
from daris_ros.runtime.preprocess import preprocess
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]


def _collect_one(b: MpsBackend) -> object:
    got: list = []
    t0 = time.monotonic()
    while not got:
        assert time.monotonic() - t0 < 30, "no completion in 30 s"
        got = b.collect(1.0)
    assert len(got) == 1
    return got[0]


def _run_job(b: MpsBackend, x: torch.Tensor, n_stages: int) -> torch.Tensor:
    """Every stage on (0, 0); intermediates stay in the worker, the last output comes back."""
    for j in range(n_stages):
        b.send(0, 0, "r", j, x)
        c = _collect_one(b)
        assert c.error is None, c.error
        x = c.output
    return x.clone()


def test_frame_preprocessed_in_the_worker_equals_host_preprocessing() -> None:
    torch.manual_seed(0)
    model = build_staged_model("resnet18", input_size=(32, 32))
    b = MpsBackend(n_contexts=1, n_streams=1, cpu_workers=True, spares=0, frame_pixels=64 * 48)
    frame = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    try:
        b.start({"r": model})
        assert b.accepts_frame(48, 64) and not b.accepts_frame(480, 640)
        y_worker = _run_job(b, torch.from_numpy(frame), model.num_stages)  # raw frame: preprocessed there
        x = preprocess(frame, (32, 32))  # what the engine does on the host without worker preprocessing
        y_host = _run_job(b, x, model.num_stages)
        with torch.inference_mode():
            ref = model(x)
        assert torch.equal(y_worker, y_host) and torch.allclose(y_worker, ref, atol=1e-5)
        with pytest.raises(BackendError, match="stage 0"):
            b.send(0, 0, "r", 1, torch.from_numpy(frame))  # a frame is only a stage-0 input
    finally:
        b.close()


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
            e.offer("cam", frame)  # one camera frame (not sticky): one release
            e.start()
            assert ev.wait(30), f"{name}: no result"
        finally:
            e.close()
        outs[name] = done
    a, m = outs["cpu"][0], outs["mps"][0]
    assert len(outs["cpu"]) == len(outs["mps"]) == 1
    assert not a.error and not m.error, (a.error, m.error)
    assert m.class_ids == a.class_ids and m.scores == pytest.approx(a.scores, abs=1e-5)
