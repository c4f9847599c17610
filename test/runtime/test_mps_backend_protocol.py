"""The ``mps`` backend through the Backend protocol (launch / poll / notify), on CPU worker processes: the
same worker processes, shared-memory channel and reader thread as on the GPU, stages run on the CPU.

One backend (2 contexts x 1 stream) serves the whole test, in order: one job through every stage; two jobs
stacked into one batch; launches that cannot be written, reported by ``poll`` with their error; a raw frame
preprocessed in the worker; ``run_now``; a model added while running; then faults: a launch lost with its
SIGKILLed worker is never reported, a later stage whose input died with it is reported with WorkerLost, a
stage-0 launch made meanwhile runs on the replacement; a stopped (hung) worker is killed and replaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from daris_ros.runtime.backends.base import (
    Backend,
    BackendError,
    Finished,
    HostFrames,
    MemoryStats,
    RuntimeModels,
    SmCounts,
    SupervisedDaemon,
    WorkerFaults,
)
from daris_ros.runtime.backends.mps import MpsBackend, WorkerLost, WorkerTensor
from daris_ros.runtime.memory import SOURCE_WORKER
from daris_ros.runtime.models import build_staged_model
from daris_ros.runtime.preprocess import preprocess

pytestmark = [pytest.mark.slow]

FRAME_PIXELS = 8192  # input slots of 3 * 8192 B: two 3x32x32 float32 inputs fit one slot, four do not


class Engine:
    """What the engine's loop does with the protocol: launch, sleep until notified, poll."""

    def __init__(self, b: MpsBackend) -> None:
        self.b = b
        self.woken = threading.Event()
        self.finished: dict[int, Finished] = {}
        b.set_notify(self.woken.set)

    def wait(self, ticket: int, timeout: float = 30.0) -> Finished:
        deadline = time.monotonic() + timeout
        while ticket not in self.finished:
            assert time.monotonic() < deadline, f"launch {ticket} not reported in {timeout} s"
            self.woken.wait(0.5)
            self.woken.clear()
            for f in self.b.poll():
                assert f.ticket not in self.finished, "a launch reported twice"
                self.finished[f.ticket] = f
        return self.finished.pop(ticket)

    def run(self, context: int, model: str, stages: range, rows: list[tuple[Any, int]]) -> Finished:
        """Stages one after another on (context, 0), each on the previous one's whole output."""
        for j in stages:
            f = self.wait(self.b.launch(context, 0, model, j, len(rows), rows))
            assert f.error is None, f.error
            assert f.exec_time > 0
            rows = [(f.output, i) for i in range(len(rows))]
        return f


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    return build_staged_model("resnet18", input_size=(32, 32))


@pytest.fixture(scope="module")
def backend(model: Any) -> Iterator[MpsBackend]:
    b = MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0, frame_pixels=FRAME_PIXELS,
                   hang_after=0.2)
    b.start({"r": model})
    yield b
    b.close()


def test_declares_the_protocol_and_its_capabilities_by_type(backend: MpsBackend) -> None:
    b = backend
    assert isinstance(b, Backend) and not b.polled and b.device == "cpu"
    for cap in (WorkerFaults, MemoryStats, RuntimeModels, SmCounts, HostFrames, SupervisedDaemon):
        assert isinstance(b, cap)
    assert b.daemon_restarts == 0  # (CPU workers: no MPS daemon to supervise)
    assert b.worker_scope == "context"
    assert b.sm_counts() == [0, 0]  # CPU workers report no SMs
    mem = b.memory_by_context()
    assert mem.bytes == (0, 0) and mem.source == SOURCE_WORKER and not mem.shared  # one process per context
    assert b.poll() == []


def test_one_job_through_every_stage(backend: MpsBackend, model: Any) -> None:
    e = Engine(backend)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
    f = e.run(1, "r", range(model.num_stages), [(x, 0)])
    assert isinstance(f.output, torch.Tensor) and torch.equal(f.output, ref)
    first = e.wait(backend.launch(1, 0, "r", 0, 1, [(x, 0)]))
    assert isinstance(first.output, WorkerTensor) and first.output.context == 1  # intermediates stay there
    assert backend.poll() == []


def test_two_jobs_stacked_into_one_batch(backend: MpsBackend, model: Any) -> None:
    e = Engine(backend)
    a, b = torch.randn(1, 3, 32, 32), torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        ref = model(torch.cat([a, b[2:3]]))
    f = e.run(0, "r", range(model.num_stages), [(a, 0), (b, 2)])  # rows of two sources
    assert f.output.shape == (2, 1000) and torch.allclose(f.output, ref, atol=1e-5)
    mid = e.wait(backend.launch(0, 0, "r", 0, 2, [(a, 0), (b, 2)])).output
    assert isinstance(mid, WorkerTensor) and mid.rows == 2


def test_launches_that_cannot_be_written_are_reported_with_their_error(backend: MpsBackend) -> None:
    e = Engine(backend)
    x = torch.randn(4, 3, 32, 32)
    one = e.wait(backend.launch(0, 0, "r", 0, 1, [(x, 0)])).output
    two = e.wait(backend.launch(0, 0, "r", 0, 2, [(x, 0), (x, 1)])).output
    frames = torch.from_numpy(np.zeros((2, 48, 64, 3), np.uint8))  # raw frames, batch-major as every source
    cases = [
        ([(x, i) for i in range(4)], 0, "does not fit a frame slot.*a batch of 4 jobs"),
        ([(one, 0), (two, 0)], 1, "cannot be batched from worker-resident outputs"),
        ([(two, 1)], 1, "cannot go on alone"),
        ([(frames, 0)], 1, "only accepted as the input of stage 0"),
        ([(frames, 0), (frames, 1)], 0, "never frames"),
        ([], 0, "at least one row"),
    ]
    for rows, stage, match in cases:
        f = e.wait(backend.launch(0, 0, "r", stage, 1, rows))
        assert isinstance(f.error, BackendError) and f.output is None, (match, f)
        with pytest.raises(BackendError, match=match):
            raise f.error
    f = e.wait(backend.launch(0, 0, "r", 1, 1, [(two, 0), (two, 1)]))  # the whole batch in order goes on
    assert f.error is None


def test_a_raw_frame_is_preprocessed_in_the_worker(backend: MpsBackend, model: Any) -> None:
    e = Engine(backend)
    frames = np.random.default_rng(1).integers(0, 255, (2, 48, 64, 3), dtype=np.uint8)
    assert backend.accepts_frame(48, 64) and not backend.accepts_frame(480, 640)
    # row 1 of a batch of raw frames (the engine hands one frame over as a batch of one) travels alone
    y_worker = e.run(0, "r", range(model.num_stages), [(torch.from_numpy(frames), 1)]).output
    y_host = e.run(0, "r", range(model.num_stages), [(preprocess(frames[1], (32, 32)), 0)]).output
    assert torch.equal(y_worker, y_host)


def test_run_now_runs_on_context_0_and_a_worker_output_is_consumed_once(backend: MpsBackend, model: Any) -> None:
    x = torch.randn(1, 3, 32, 32)
    y, dt = backend.run_now("r", 0, 1, [(x, 0)])
    assert isinstance(y, WorkerTensor) and y.context == 0 and dt > 0
    y2, _ = backend.run_now("r", 1, 1, [(y, 0)])
    assert isinstance(y2, WorkerTensor)
    with pytest.raises(BackendError, match="not in worker"):
        backend.run_now("r", 1, 1, [(y, 0)])  # a worker-resident output is consumed by its next stage
    assert backend.poll() == []  # run_now's completion never shows up in poll


def test_a_model_added_while_running(backend: MpsBackend) -> None:
    torch.manual_seed(1)
    extra = build_staged_model("resnet18", input_size=(32, 32))
    backend.add_model("r2", extra)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        ref = extra(x)
    f = Engine(backend).run(1, "r2", range(extra.num_stages), [(x, 0)])
    assert torch.equal(f.output, ref)


def test_a_launch_lost_with_its_worker_is_never_reported(backend: MpsBackend) -> None:
    e = Engine(backend)
    x = torch.randn(1, 3, 32, 32)
    resident = e.wait(backend.launch(0, 0, "r", 0, 1, [(x, 0)])).output
    old = backend.worker_pid(0)
    assert not backend.inject_fault("hang", 0, 0, wait_busy=0.0)  # stopped: what it is sent stays in it
    lost = backend.launch(0, 0, "r", 0, 1, [(x, 0)])
    assert backend.inject_fault("kill", 0, 0, wait_busy=0.0)  # SIGKILL with that stage in it
    deadline = time.monotonic() + 10
    while backend.worker_alive(0, 0):
        assert time.monotonic() < deadline, "the dead worker was not noticed"
        time.sleep(0.01)
    assert backend.worker_died_at(0, 0) is not None
    gone = backend.launch(0, 0, "r", 1, 1, [(resident, 0)])  # its input died with the worker
    f = e.wait(gone)
    assert isinstance(f.error, WorkerLost) and not f.error.in_flight_loss
    waiting = backend.launch(0, 0, "r", 0, 1, [(x, 0)])  # a stage-0 launch waits for the replacement
    backend.restart_worker(0, 0)  # what the engine's watchdog does
    assert backend.worker_alive(0, 0) and backend.worker_pid(0) != old
    f = e.wait(waiting)
    assert f.error is None and isinstance(f.output, WorkerTensor) and f.output.generation == 1
    time.sleep(0.2)
    assert lost not in {g.ticket for g in backend.poll()} and lost not in e.finished
    assert backend.faults[-1]["old_pid"] == old and backend.faults[-1]["replay"] == 1


def test_a_hung_worker_is_killed_and_replaced(backend: MpsBackend) -> None:
    e = Engine(backend)
    old = backend.worker_pid(1)
    backend.inject_fault("hang", 1, 0, wait_busy=0.0)
    backend.launch(1, 0, "r", 0, 1, [(torch.randn(1, 3, 32, 32), 0)])
    backend.restart_worker(1, 0)  # too early: its stage has not been in it for hang_after (0.2 s)
    assert backend.worker_pid(1) == old
    time.sleep(0.3)
    backend.restart_worker(1, 0)  # reported hung again: killed and replaced
    assert backend.worker_pid(1) != old and backend.worker_alive(1, 0)
    assert backend.workers[1].process.is_alive()
    f = e.run(1, "r", range(4), [(torch.randn(1, 3, 32, 32), 0)])
    assert f.output.shape == (1, 1000)
