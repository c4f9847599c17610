"""Detectors and segmenters on the GPU backends (issue 16): str and green capture CUDA graphs for the stages a
model's ``graph_stages`` allow only (a detector's decode + NMS stage runs eagerly; a segmenter's every stage is a
graph); the GPU's detections equal the CPU's within tolerance, a batch of jobs gets each job's unbatched
detections, and fp16 channels-last runs and keeps the contract (float32 boxes and scores). Segmenters: the same
with their mask logits.

The detectors are randomly initialised and made lively on the CPU first (test/detection_helpers.py), so they give
varied detections; TF32 is off, so the GPU's fp32 arithmetic is close to the CPU's and NMS keeps the same boxes.
Run on the GPU machine: ``python3 -m pytest -m gpu -q test/gpu/test_gpu_detection.py``."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from detection_helpers import assert_same_detections, imagenet_images, lively
from gpu_helpers import run_sync

from daris_ros.runtime.backends import create_backend
from daris_ros.runtime.backends.cuda_graphs import graph_stage_indices
from daris_ros.runtime.models import StagedModel, build_staged_model
from daris_ros.runtime.models.detection import DETECTION_MODELS
from daris_ros.runtime.models.precision import apply_precision, model_input
from daris_ros.runtime.models.segmentation import SEGMENTATION_NAMES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

K = 20
#: Input sizes (H, W): SSDlite at its own 320x320; the FPN detectors at a 4:3 size whose height is no multiple of
#: 32 (their first stage pads); the segmenters small.
DETECTOR_SIZE = {name: (320, 320) if name.startswith("ssdlite") else (240, 320) for name in DETECTION_MODELS}
SEGMENTER_SIZE = (192, 256)
BATCH_SIZES = (1, 2, 4)


@pytest.fixture
def no_tf32() -> Iterator[None]:
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _lively_detector(name: str) -> tuple[StagedModel, torch.Tensor]:
    """A lively detector (on the CPU) and three ImageNet-normalised test images of its input size."""
    torch.manual_seed(0)
    model = build_staged_model(name, input_size=DETECTOR_SIZE[name], max_detections=K)
    _, x = imagenet_images(3, seed=1, size=DETECTOR_SIZE[name])
    lively(model, x)
    return model.eval(), x


def _backend(name: str) -> Any:
    return create_backend(name, n_contexts=1 if name == "str" else 2, n_streams=2, device="cuda",
                          oversubscription=1.0, cuda_graphs=True)


def _graphed_stages(b: Any, key: str) -> set[int]:
    return {j for (name, j, *_rest) in b.graphs if name == key}


def _through(b: Any, key: str, n_stages: int, rows: list[tuple[Any, int]], context: int = 0, stream: int = 0,
             size: int = 1) -> Any:
    """Every stage of ``key`` on (context, stream), each on the previous one's whole output."""
    for j in range(n_stages):
        f = run_sync(b, context, stream, key, j, size, rows, timeout=60.0)
        assert f.exec_time > 0  # (a CUDA-event time)
        rows = [(f.output, i) for i in range(len(rows))]
    return f.output


def _to_cpu(y: Any) -> Any:
    return y.cpu() if isinstance(y, torch.Tensor) else tuple(t.cpu() for t in y)


@pytest.mark.parametrize("backend", ["str", "green"])
@pytest.mark.parametrize("name", DETECTION_MODELS)
def test_a_detector_on_the_gpu(backend: str, name: str, no_tf32: None) -> None:
    model, x = _lively_detector(name)
    with torch.inference_mode():
        cpu_refs = [model(x[i:i + 1]) for i in range(3)]  # the CPU's detections, one job each
    assert all(int(r[3][0]) > 0 for r in cpu_refs), "a test without detections proves nothing"
    b = _backend(backend)
    b.start({"d": model})
    try:
        # CUDA graphs for the graph stages only, on every (context, stream); the decode + NMS stage has none
        graphed = graph_stage_indices(model)
        assert graphed == list(range(model.num_stages - 1)) and not model.graph_stages[-1]
        assert _graphed_stages(b, "d") == set(graphed)
        assert len(b.graphs) == len(graphed) * b.n_contexts * b.n_streams
        # one job at a time on each (context, stream): the CPU's detections
        xg = x.cuda()
        singles = []
        for i in range(3):
            c, s = i % b.n_contexts, i % b.n_streams
            y = _to_cpu(_through(b, "d", model.num_stages, [(xg[i:i + 1], 0)], c, s))
            assert [t.dtype for t in y] == [torch.float32, torch.float32, torch.int64, torch.int64]
            assert_same_detections(y, cpu_refs[i], box_tol=5e-2, score_tol=1e-4)
            singles.append(y)
        # three jobs in one batch of size 4 (batch graphs for the graph stages, the last stage eager on the rows)
        b.capture_batches(BATCH_SIZES)
        assert {j for (key, j, *_rest) in b.batch_graphs if key == "d"} == set(graphed)
        batched = _to_cpu(_through(b, "d", model.num_stages, [(xg, 0), (xg, 1), (xg, 2)], size=4))
        assert tuple(batched[0].shape) == (3, K, 4)
        for i in range(3):
            assert_same_detections(tuple(t[i:i + 1] for t in batched), singles[i], box_tol=1e-2, score_tol=1e-4)
        print(f"\n{backend} {name}: graphs {len(b.graphs)} ({len(graphed)} of {model.num_stages} stages), "
              f"detections per image {[int(s[3][0]) for s in singles]}, batched == unbatched")
    finally:
        b.close()


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn",
                                  "fasterrcnn_mobilenet_v3_large_fpn"])
def test_a_detector_in_fp16_channels_last(name: str) -> None:
    """fp16 channels-last on str (graphs and a batch): float32 boxes and scores, detections found, the best one
    close to fp32's."""
    model, x = _lively_detector(name)
    fp32 = copy.deepcopy(model).cuda().eval()
    with torch.inference_mode():
        ref = _to_cpu(fp32(x.cuda()))
    del fp32
    apply_precision(model, "fp16", channels_last=True)
    b = _backend("str")
    b.start({"d": model})
    try:
        b.capture_batches(BATCH_SIZES)
        m = b.models["d"]
        xg = model_input(m, x.cuda())
        one = _to_cpu(_through(b, "d", m.num_stages, [(xg[0:1], 0)]))
        batch = _to_cpu(_through(b, "d", m.num_stages, [(xg, 0), (xg, 1), (xg, 2)], size=4))
        for out, n in ((one, 1), (batch, 3)):
            boxes, scores, labels, counts = out
            assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == counts.dtype == torch.int64
            assert tuple(boxes.shape) == (n, K, 4) and bool(torch.isfinite(boxes).all())
            assert int(counts.min()) > 0
        assert abs(float(one[1][0, 0]) - float(ref[1][0, 0])) < 0.05, (one[1][0, :3], ref[1][0, :3])
        print(f"\nfp16 {name}: top scores {one[1][0, :3].tolist()} (fp32 {ref[1][0, :3].tolist()}), "
              f"counts {batch[3].tolist()} (fp32 {ref[3].tolist()})")
    finally:
        b.close()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize("backend", ["str", "green"])
@pytest.mark.parametrize("name", SEGMENTATION_NAMES)
def test_a_segmenter_on_the_gpu(backend: str, name: str, no_tf32: None) -> None:
    torch.manual_seed(0)
    model = build_staged_model(name, input_size=SEGMENTER_SIZE, num_classes=8)
    x = torch.randn(3, 3, *SEGMENTER_SIZE)
    with torch.inference_mode():
        cpu_ref = model(x)
    b = _backend(backend)
    b.start({"s": model})
    try:
        assert graph_stage_indices(model) == list(range(model.num_stages))  # every stage is a graph
        assert _graphed_stages(b, "s") == set(range(model.num_stages))
        assert len(b.graphs) == model.num_stages * b.n_contexts * b.n_streams
        xg = x.cuda()
        singles = [_to_cpu(_through(b, "s", model.num_stages, [(xg[i:i + 1], 0)], i % b.n_contexts,
                                    i % b.n_streams)) for i in range(3)]
        errs = [_rel(singles[i], cpu_ref[i:i + 1]) for i in range(3)]
        assert max(errs) < 1e-3, errs
        agree = float((torch.cat(singles).argmax(1) == cpu_ref.argmax(1)).float().mean())
        assert agree > 0.99, agree  # the masks the node publishes
        b.capture_batches(BATCH_SIZES)
        batched = _to_cpu(_through(b, "s", model.num_stages, [(xg, 0), (xg, 1), (xg, 2)], size=4))
        assert batched.shape == (3, 8, *SEGMENTER_SIZE)
        batch_errs = [_rel(batched[i:i + 1], singles[i]) for i in range(3)]
        assert max(batch_errs) < 1e-4, batch_errs
        print(f"\n{backend} {name}: GPU vs CPU rel err max {max(errs):.2e}, argmax agreement {agree:.4f}, "
              f"batched vs unbatched {max(batch_errs):.2e}")
    finally:
        b.close()


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_a_segmenter_in_fp16_channels_last(name: str) -> None:
    torch.manual_seed(0)
    model = build_staged_model(name, input_size=SEGMENTER_SIZE, num_classes=8)
    x = torch.randn(2, 3, *SEGMENTER_SIZE)
    fp32 = copy.deepcopy(model).cuda().eval()
    with torch.inference_mode():
        ref = fp32(x.cuda()).float().cpu()
    del fp32
    apply_precision(model, "fp16", channels_last=True)
    b = _backend("str")
    b.start({"s": model})
    try:
        b.capture_batches(BATCH_SIZES)
        m = b.models["s"]
        xin = model_input(m, x.cuda())
        out = _to_cpu(_through(b, "s", m.num_stages, [(xin, 0), (xin, 1)], size=2)).float()
        assert out.shape == ref.shape and bool(torch.isfinite(out).all())
        rel = _rel(out, ref)
        print(f"\nfp16 {name}: rel err vs fp32 {rel:.2e}")
        assert rel < 0.05
    finally:
        b.close()
