"""Detection and segmentation models through the ``mps`` backend, on CPU worker processes (issue 16): a detector's
last stage returns a tuple ``(boxes, scores, labels, counts)`` of fixed shapes, which comes back through the
shared-memory output slot; a segmenter's mask logits (one tensor) still do. The results equal the in-process
models' (the worker runs the same code on one CPU thread), for one job, a batch of two jobs, and a raw camera
frame preprocessed in the worker; and the engine on this backend publishes the same detections (in source
pixels) as the engine on the in-process ``cpu`` backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from detection_helpers import assert_same_detections, imagenet_images, lively

from daris_ros.runtime.backends import mps_protocol as proto
from daris_ros.runtime.backends.base import Backend
from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.models import StagedModel, build_staged_model
from daris_ros.runtime.preprocess import preprocess
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

DET_SIZE = (160, 160)
SEG_SIZE = (48, 64)
K = 10
SOURCE = (72, 128)  # a small camera frame (H, W), preprocessed in the worker
FRAME_PIXELS = 2 * DET_SIZE[0] * DET_SIZE[1] * 4  # input slots of 3 * FRAME_PIXELS B: two 3 x 160 x 160 float32


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lively (varied detections) ssdlite at 160x160, as a weights file of the unstaged torchvision model."""
    torch.manual_seed(0)
    model = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=DET_SIZE, max_detections=K)
    _, x = imagenet_images(4, seed=0, size=DET_SIZE)
    detector = lively(model, x)
    path = tmp_path_factory.mktemp("weights") / "ssdlite_lively.pt"
    torch.save(detector.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def detector(detector_weights: Path) -> StagedModel:
    return build_staged_model("ssdlite320_mobilenet_v3_large", weights=str(detector_weights), input_size=DET_SIZE,
                              max_detections=K)


@pytest.fixture(scope="module")
def segmenter() -> StagedModel:
    torch.manual_seed(1)
    return build_staged_model("lraspp_mobilenet_v3_large", input_size=SEG_SIZE, num_classes=5)


@pytest.fixture(scope="module")
def backend(detector: StagedModel, segmenter: StagedModel) -> Iterator[MpsBackend]:
    b = MpsBackend(n_contexts=1, n_streams=1, cpu_workers=True, spares=0, frame_pixels=FRAME_PIXELS)
    b.start({"det": detector, "seg": segmenter})
    yield b
    b.close()


def _in_process(model: StagedModel, x: torch.Tensor) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker runs it
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        torch.set_num_threads(threads)


def _through(b: Backend, model: str, n_stages: int, rows: list[tuple[Any, int]], timeout: float = 60.0) -> Any:
    """Every stage of ``model`` on (context 0, stream 0), each on the previous one's whole output."""
    for j in range(n_stages):
        ticket = b.launch(0, 0, model, j, len(rows), rows)
        deadline = time.monotonic() + timeout
        done = None
        while done is None:
            assert time.monotonic() < deadline, f"stage {j} not reported in {timeout} s"
            done = next((f for f in b.poll() if f.ticket == ticket), None)
            time.sleep(0.002)
        assert done.error is None, done.error
        rows = [(done.output, i) for i in range(len(rows))]
    return done.output


def test_output_slots_are_sized_from_the_output_specs(backend: MpsBackend, detector: StagedModel,
                                                      segmenter: StagedModel) -> None:
    layout = backend.workers[0].layout
    seg_bytes = proto.final_output_bytes(segmenter)
    assert seg_bytes == 5 * SEG_SIZE[0] * SEG_SIZE[1] * 4
    assert layout.out_slot_bytes >= seg_bytes
    # boxes K x 4 float32, scores K float32, labels K int64 and counts per row, each part 64-byte aligned
    assert proto.final_output_bytes(detector) == 192 + 64 + 128 + 8
    assert layout.out_slot_bytes >= proto.final_output_bytes(detector, rows=2)


def test_a_detector_batch_comes_back_as_its_tuple_and_equals_the_in_process_model(backend: MpsBackend,
                                                                                  detector: StagedModel) -> None:
    _, x = imagenet_images(2, seed=3, size=DET_SIZE)
    expected = _in_process(detector, x)
    assert int(expected[3].min()) > 0, "a test without detections proves nothing"
    got = _through(backend, "det", detector.num_stages, [(x, 0), (x, 1)])  # two jobs stacked into one batch
    assert isinstance(got, tuple) and len(got) == 4
    assert [t.dtype for t in got] == [torch.float32, torch.float32, torch.int64, torch.int64]
    assert [tuple(t.shape) for t in got] == [(2, K, 4), (2, K), (2, K), (2,)]
    assert_same_detections(got, expected, box_tol=1e-4, score_tol=1e-6)
    alone = _through(backend, "det", detector.num_stages, [(x, 1)])  # one job: row 1 alone
    assert_same_detections(alone, tuple(t[1:] for t in expected), box_tol=1e-4, score_tol=1e-6)


def test_a_raw_frame_preprocessed_in_the_worker_gives_the_host_preprocessed_detections(
        backend: MpsBackend, detector: StagedModel) -> None:
    frame = np.random.default_rng(2).integers(0, 255, (*SOURCE, 3), dtype=np.uint8)
    assert backend.accepts_frame(*SOURCE)
    expected = _in_process(detector, preprocess(frame, DET_SIZE))
    got = _through(backend, "det", detector.num_stages, [(torch.from_numpy(frame[None]), 0)])
    assert int(expected[3][0]) > 0
    assert_same_detections(got, expected, box_tol=1e-3, score_tol=1e-5)


def test_segmentation_logits_still_come_back_as_one_tensor(backend: MpsBackend, segmenter: StagedModel) -> None:
    _, x = imagenet_images(1, seed=4, size=SEG_SIZE)
    expected = _in_process(segmenter, x)
    got = _through(backend, "seg", segmenter.num_stages, [(x, 0)])
    assert isinstance(got, torch.Tensor) and got.shape == (1, 5, *SEG_SIZE)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _engine_detections(tmp: Path, weights: Path, backend: Backend | None, frames: list[np.ndarray]
                       ) -> list[JobResult]:
    """The results of one HP detector task on the engine over ``backend`` (None: the in-process cpu backend)."""
    tasks = (TaskSettings("front", "/front", "HP", 2.0, 5.0, "ssdlite320_mobilenet_v3_large", weights=str(weights),
                          input_size=DET_SIZE, score_threshold=0.0, max_detections=K),)
    s = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                          worker_stage_timeout=0.0, skip_late=0.0, feasibility="warn")
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    e = Engine(s, on_result=on_result, backend=backend)
    try:
        e.load_models()
        e.profile()
        e.start()
        for frame in frames:
            e.offer("front", frame)
            t0 = time.monotonic()
            n = len(results)
            while len(results) == n:
                assert time.monotonic() - t0 < 60, "no result in 60 s"
                time.sleep(0.01)
        drain(e, 60.0)
    finally:
        e.close()
    return results


def test_the_engine_on_mps_publishes_the_in_process_detections(tmp_path: Path, detector_weights: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (*SOURCE, 3), dtype=np.uint8) for _ in range(2)]
    mps = MpsBackend(n_contexts=1, n_streams=1, cpu_workers=True, spares=0)
    on_mps = _engine_detections(tmp_path, detector_weights, mps, frames)
    in_process = _engine_detections(tmp_path, detector_weights, None, frames)
    assert len(on_mps) == len(in_process) == len(frames)
    for a, b in zip(on_mps, in_process, strict=True):
        assert a.error == "" and b.error == "" and a.kind == b.kind == "detection"
        assert a.source_size == b.source_size == SOURCE
        assert a.detections is not None and b.detections is not None and len(b.detections) > 0
        assert len(a.detections) == len(b.detections)
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=1e-2)
        np.testing.assert_allclose(a.detections.scores, b.detections.scores, atol=1e-5)
        assert a.detections.class_ids.tolist() == b.detections.class_ids.tolist()
