"""The ``mps`` backend: MPS client worker processes, one per context.

GPU tests (``-m gpu``, run as root on the GPU machine, where ``nvidia-cuda-mps-control`` works): each
worker reports the SM count eq. 9 implies (its device properties inside the MPS client), staged outputs
equal the eager model's, the engine runs end to end on it, the daemon the backend started is gone after
``close``, and a SIGKILLed worker is detected by the engine's watchdog and replaced. The tests use their
own pipe directory, so they never touch a daemon of the machine.

Without a GPU: a clear error when MPS is unavailable and the thread percentage of eq. 9. The whole
request/completion protocol (shared-memory rings and slots, worker-resident intermediates, SIGKILL
detection and replacement) runs with CPU workers in test/runtime/test_mps_backend_protocol.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from gpu_helpers import run_sync

from daris_ros.runtime.backends import BackendError
from daris_ros.runtime.backends.mps import MpsBackend, WorkerTensor, mps_thread_percentage
from daris_ros.runtime.backends.mps_daemon import MpsDaemon, mps_processes
from daris_ros.runtime.models import build_staged_model

PIPE = "/tmp/daris-mps-test"
LOG = "/tmp/daris-mps-test-log"

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
needs_mps = pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is None, reason="no nvidia-cuda-mps-control")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _chain(b: MpsBackend, c: int, s: int, key: str, x: object, n_stages: int) -> tuple[object, list[float]]:
    """Run every stage of ``key`` on (c, s), each launched once the previous one was polled finished; returns the
    final output and the stage times."""
    times = []
    for j in range(n_stages):
        f = run_sync(b, c, s, key, j, 1, [(x, 0)], timeout=60.0)
        x = f.output
        times.append(f.exec_time)
        if j < n_stages - 1:
            assert isinstance(x, WorkerTensor) and x.context == c  # intermediates stay in the worker
    return x, times


# -- without a GPU ---------------------------------------------------------------------------------------
def test_missing_mps_control_is_a_clear_error() -> None:
    d = MpsDaemon("/tmp/daris-mps-none", "/tmp/daris-mps-none-log", control="nvidia-cuda-mps-control-missing")
    with pytest.raises(BackendError, match="MPS is unavailable.*not on PATH"):
        d.ensure()
    assert not d.started


def test_thread_percentage_gives_eq9_sm_count() -> None:
    # MPS hands out SMs in pairs, rounding down (25% of 132 -> 32): half an SM above the share lands on it
    for sms in (32, 34, 44, 66, 88, 132):
        pct = mps_thread_percentage(sms, 132)
        assert int(pct / 100 * 132) // 2 * 2 == sms
    assert mps_thread_percentage(132, 132) == 100.0


# -- on the GPU ------------------------------------------------------------------------------------------
@pytest.fixture
def private_daemon_dirs() -> Iterator[tuple[str, str]]:
    assert not mps_processes(PIPE), "an MPS daemon of the test pipe directory is already running"
    yield PIPE, LOG
    leftover = mps_processes(PIPE)
    for pid, _ in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"MPS processes left behind: {leftover}"


@pytest.mark.gpu
@needs_mps
@needs_gpu
@pytest.mark.parametrize(("nc", "ns", "os_"), [(3, 1, 1.0), (4, 1, 1.0), (3, 2, 2.0)])
@pytest.mark.usefixtures("private_daemon_dirs")
def test_workers_see_eq9_sms_and_daemon_stops(nc: int, ns: int, os_: float) -> None:
    b = MpsBackend(n_contexts=nc, n_streams=ns, oversubscription=os_, pipe_dir=PIPE, log_dir=LOG)
    try:
        b.start({"r": build_staged_model("resnet18", input_size=(64, 64))})
        assert b.daemon is not None and b.daemon.started
        assert any(name == "nvidia-cuda-mps-control" for _, name in mps_processes(PIPE))
        seen = b.sm_counts()
        print(f"\nmps {nc}x{ns} OS={os_}: eq. 9 -> {b.sm_per_context} SMs, "
              f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={b.thread_percentage:.4f}, workers report {seen}, "
              f"start-up {[round(s.ready_at - s.spawned_at, 2) for s in b.workers]} s, "
              f"pinned slots {[s.info.get('pinned') for s in b.workers]}")
        assert seen == [b.sm_per_context] * nc
        assert all(s.info.get("pinned") for s in b.workers)
    finally:
        b.close()
    assert not mps_processes(PIPE), "the daemon this backend started is still running"


@pytest.mark.gpu
@needs_mps
@needs_gpu
@pytest.mark.usefixtures("private_daemon_dirs")
def test_outputs_equal_eager_through_launch_poll() -> None:
    """Every stage of ResNet18 and UNet on every (context, stream) through launch/poll, against the eager model;
    the reader thread calls the notify hook; run_now runs on (0, 0)."""
    torch.manual_seed(0)
    models = {"r": build_staged_model("resnet18"), "u": build_staged_model("unet")}
    b = MpsBackend(n_contexts=2, n_streams=2, oversubscription=1.0, pipe_dir=PIPE, log_dir=LOG)
    b.start(models)
    woken = threading.Event()
    b.set_notify(woken.set)
    try:
        refs = {k: m.to("cuda").eval() for k, m in models.items()}  # (this process: no MPS client)
        errs, exact = [], 0
        for key, m in refs.items():
            for c in range(2):
                for s in range(2):
                    x0 = torch.randn(1, 3, 224, 224)
                    with torch.inference_mode():
                        ref = m(x0.cuda()).cpu()
                    y, times = _chain(b, c, s, key, x0, m.num_stages)
                    assert y.shape == ref.shape and all(0 < t < 1.0 for t in times), times
                    errs.append(_rel(y, ref))
                    exact += int(torch.equal(y, ref))
        print(f"\nmps outputs vs eager: rel err max {max(errs):.2e}, bit-exact {exact}/{len(errs)}")
        assert max(errs) < 1e-3
        assert woken.is_set()  # the reader thread woke the caller
        y, dt = b.run_now("r", 0, 1, [(torch.randn(1, 3, 224, 224), 0)])
        assert isinstance(y, WorkerTensor) and y.context == 0 and 0 < dt < 1.0
    finally:
        b.close()


def _settings(nc: int, ns: int, os_: float, timeout: float = 2.0) -> object:
    from daris_ros.settings import SchedulerSettings, TaskSettings

    tasks = tuple(TaskSettings(name=f"t{i}", topic=f"/c{i}", priority="HP" if i == 0 else "LP", period=0.05,
                               deadline=0.05, model="resnet18", input_size=(224, 224)) for i in range(3))
    return SchedulerSettings(policy="MPS+STR" if ns > 1 else "MPS", backend="mps", device="cuda", n_contexts=nc,
                             n_streams=ns, oversubscription=os_, tasks=tasks, profile_runs=3,
                             worker_stage_timeout=timeout)


@pytest.mark.gpu
@needs_mps
@needs_gpu
@pytest.mark.parametrize("spares", [0, 1])
@pytest.mark.usefixtures("private_daemon_dirs")
def test_engine_end_to_end_and_sigkill_recovery(spares: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from daris_ros.runtime.driver import SyntheticCameras, drain
    from daris_ros.runtime.engine import Engine

    monkeypatch.setenv("DARIS_MPS_PIPE_DIRECTORY", PIPE)
    monkeypatch.setenv("DARIS_MPS_LOG_DIRECTORY", LOG)
    monkeypatch.setenv("DARIS_MPS_SPARES", str(spares))
    results = []
    lock = threading.Lock()

    def on_result(r: object) -> None:
        with lock:
            results.append(r)

    eng = Engine(_settings(2, 2, 1.0, timeout=30.0), on_result=on_result)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    try:
        eng.load_models()
        afet = eng.profile()
        eng.start()
        b = eng.backend
        assert b.name == "mps" and b.device == "cpu"  # this process preprocesses on the host

        cameras = SyntheticCameras(eng, ("t0", "t1", "t2"), frame)  # the engine releases each task every 50 ms

        def feed(seconds: float) -> float:
            t_first = time.monotonic()
            with cameras:
                time.sleep(seconds)
            return t_first

        feed(1.0)
        drain(eng, 10)
        assert len(results) >= 20 and all(not r.error and len(r.class_ids) == 5 for r in results)
        n_before = len(results)
        old = b.worker_pid(0)
        with cameras:  # releases go on while the worker dies and is replaced
            time.sleep(0.3)
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while (eng.faults.worker_faults == 0 or not b.worker_alive(0, 0) or b.worker_pid(0) == old
                   or b.workers[0].state != "ready"):
                assert time.monotonic() < deadline, "the killed worker was not replaced"
                time.sleep(0.01)
        drain(eng, 30)
        t_refill = time.monotonic()
        if spares:  # a new spare starts (CUDA init, model load, graph capture) while jobs run
            feed(1.0)
            drain(eng, 30)
            if b.pool.spare_thread is not None:
                b.pool.spare_thread.join(120)
        during = [r for r in results if r.release_time >= t_refill - 1e-3]
        t_after = feed(1.5)
        drain(eng, 30)
        rec = eng.faults.records[0]
        bf = b.faults[0]
        after = [r for r in results if r.release_time >= t_after - 1e-3]
        errors = [r for r in results[n_before:] if r.error]
        print(f"\nmps engine: AFET {afet}; SIGKILL pid {old} -> {b.worker_pid(0)} (spares={spares}): detected "
              f"{rec.detection_ms:.1f} ms after death, replacement serving {(bf['ready'] - bf['died']) * 1e3:.1f} "
              f"ms after death, engine recovery {rec.recovery_ms:.1f} ms ({rec.outcome}); jobs failed with the "
              f"worker: {len(errors)} ({sorted({r.error[:40] for r in errors})}); while a new spare started: "
              f"{sum(r.met for r in during if r.release_time < t_after)}/"
              f"{sum(1 for r in during if r.release_time < t_after)} met; after recovery {len(after)} jobs, "
              f"{sum(r.met for r in after)} met")
        assert eng.faults.worker_faults == 1 and rec.reason == "died"
        assert all("WorkerLost" in r.error or "lost" in r.error for r in errors)
        assert all(not r.error for r in after) and len(after) >= 60
    finally:
        eng.close()


@pytest.mark.gpu
@needs_mps
@needs_gpu
@pytest.mark.usefixtures("private_daemon_dirs")
def test_worker_side_preprocessing_on_the_gpu_matches_host_preprocessing() -> None:
    """``mps_frame_pixels``: a uint8 640x480 frame goes to the worker and is resized and normalised on its
    GPU; the logits match host preprocessing followed by the same stages (resize on two devices: close,
    not bit-equal)."""
    from daris_ros.runtime.preprocess import preprocess

    torch.manual_seed(0)
    model = build_staged_model("resnet18", input_size=(224, 224))
    b = MpsBackend(n_contexts=1, n_streams=1, pipe_dir=PIPE, log_dir=LOG, frame_pixels=640 * 480)
    frame = np.random.default_rng(4).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    try:
        b.start({"r": model})
        y_worker, _ = _chain(b, 0, 0, "r", torch.from_numpy(frame).unsqueeze(0), model.num_stages)  # as the engine
        y_worker = y_worker.clone()  # (an output slot view: the next job may reuse the slot)
        y_host, _ = _chain(b, 0, 0, "r", preprocess(frame, (224, 224)), model.num_stages)
        rel = _rel(y_worker, y_host.clone())
        print(f"\nworker-side preprocessing vs host: relative difference {rel:.2e}")
        assert rel < 1e-3
    finally:
        b.close()


@pytest.mark.gpu
@needs_mps
@needs_gpu
@pytest.mark.usefixtures("private_daemon_dirs")
def test_a_detector_and_a_segmenter_through_mps_workers() -> None:
    """Issue 16: a worker captures CUDA graphs for a detector's graph stages only (its decode + NMS stage runs
    eagerly) and for every stage of a segmenter; the detector's final tuple (boxes, scores, labels, counts) comes
    back through the output slot, a segmenter's logits as one tensor, both equal to this process's eager model."""
    from detection_helpers import assert_same_detections, imagenet_images, lively

    from daris_ros.runtime.backends.cuda_graphs import graph_stage_indices

    torch.manual_seed(0)
    det = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=(320, 320), max_detections=20)
    _, x = imagenet_images(2, seed=1, size=(320, 320))
    lively(det, x)
    seg = build_staged_model("lraspp_mobilenet_v3_large", input_size=(192, 256), num_classes=8)
    b = MpsBackend(n_contexts=1, n_streams=2, oversubscription=1.0, pipe_dir=PIPE, log_dir=LOG)
    b.start({"d": det, "s": seg})
    try:
        n_graphs = b.n_streams * (len(graph_stage_indices(det)) + seg.num_stages)
        assert len(graph_stage_indices(det)) == det.num_stages - 1
        assert b.workers[0].info["graphs"] == n_graphs  # none for the detector's eager last stage
        refs = {k: m.to("cuda").eval() for k, m in (("d", det), ("s", seg))}  # (this process: no MPS client)
        for s in range(2):
            with torch.inference_mode():
                ref = tuple(t.cpu() for t in refs["d"](x[s:s + 1].cuda()))
            y, times = _chain(b, 0, s, "d", x[s:s + 1], det.num_stages)
            assert isinstance(y, tuple) and len(y) == 4 and all(t > 0 for t in times)
            assert int(ref[3][0]) > 0
            # (fp32 convolutions use TF32 on both sides, with other cuDNN algorithms in the worker's graphs: scores
            # agreed to 1.7e-3 on an H100, session 8)
            assert_same_detections(y, ref, box_tol=5e-2, score_tol=5e-3)
        xs = torch.randn(1, 3, 192, 256)
        with torch.inference_mode():
            ref_s = refs["s"](xs.cuda()).cpu()
        y_s, _ = _chain(b, 0, 1, "s", xs, seg.num_stages)
        assert isinstance(y_s, torch.Tensor) and y_s.shape == ref_s.shape and _rel(y_s, ref_s) < 1e-3
        print(f"\nmps detector + segmenter: worker graphs {b.workers[0].info['graphs']} (expected {n_graphs})")
    finally:
        b.close()
