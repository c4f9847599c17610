"""The torchvision detectors as staged models (runtime/models/detection.py), on the CPU.

Randomly initialised detectors give degenerate outputs, so the tests first make them lively
(test/detection_helpers.py: BatchNorm calibrated on the test images, classification layers spread).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detection_helpers import assert_same_detections, imagenet_images, lively
from torch import Tensor, nn

from daris_ros.runtime.backends.cuda_graphs import graph_stage_indices, stack_rows, take_rows
from daris_ros.runtime.models import StagedModel, build_staged_model, is_known_model
from daris_ros.runtime.models.detection import DETECTION_MODELS, InputAdapter, set_score_floor
from daris_ros.runtime.models.precision import apply_precision, model_input
from daris_ros.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

torch.set_num_threads(1)

SIZE = (120, 160)  # not a multiple of 32 in H: the FPN detectors pad
K = 20

DEFAULTS = {
    "ssdlite320_mobilenet_v3_large": (("features_c4", "features_c5+extra", "head", "detect"), (320, 320)),
    "retinanet_resnet50_fpn": (("stem+layer1", "layer2", "layer3", "layer4+fpn", "head", "detect"), (640, 640)),
    "fcos_resnet50_fpn": (("stem+layer1", "layer2", "layer3", "layer4+fpn", "head", "detect"), (640, 640)),
    "fasterrcnn_resnet50_fpn": (("stem+layer1", "layer2", "layer3", "layer4+fpn", "rpn+roi_heads"), (640, 640)),
    "fasterrcnn_mobilenet_v3_large_fpn": (("features_0-6", "features_7-12", "features_13-16+fpn", "rpn+roi_heads"),
                                          (640, 640)),
}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """The random initialisation of every model: the same whatever test ran before."""
    torch.manual_seed(0)


def _run(model: StagedModel, x: Tensor) -> tuple[Tensor, ...]:
    y: object = x
    for j in range(model.num_stages):
        y = model.run_stage(j, y)  # type: ignore[arg-type]
    assert isinstance(y, tuple) and len(y) == 4
    return y


def _contract(dets: list[dict[str, Tensor]], k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's per-image dicts in the contract's padded layout (a reference for the comparisons)."""
    n = len(dets)
    boxes, scores = torch.zeros(n, k, 4), torch.zeros(n, k)
    labels, counts = torch.zeros(n, k, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    for i, d in enumerate(dets):
        c = min(k, len(d["scores"]))
        boxes[i, :c], scores[i, :c], labels[i, :c], counts[i] = d["boxes"][:c], d["scores"][:c], d["labels"][:c], c
    return boxes, scores, labels, counts


def _check_contract(out: tuple[Tensor, ...], n: int, k: int, size: tuple[int, int], num_classes: int) -> None:
    boxes, scores, labels, counts = out
    assert boxes.shape == (n, k, 4) and boxes.dtype == torch.float32
    assert scores.shape == (n, k) and scores.dtype == torch.float32
    assert labels.shape == (n, k) and labels.dtype == torch.int64
    assert counts.shape == (n,) and counts.dtype == torch.int64
    assert int(counts.min()) >= 0 and int(counts.max()) <= k
    for i in range(n):
        c = int(counts[i])
        assert torch.all(scores[i, :max(c - 1, 0)] >= scores[i, 1:max(c, 1)]), "scores not sorted"
        assert not scores[i, c:].any() and not boxes[i, c:].any() and not labels[i, c:].any(), "padding not zero"
        valid = boxes[i, :c]  # x1 <= x2, y1 <= y2, inside the input_size frame
        assert torch.all(valid[:, 0] <= valid[:, 2]) and torch.all(valid[:, 1] <= valid[:, 3])
        assert torch.all(valid >= 0) and torch.all(valid[:, 0::2] <= size[1]) and torch.all(valid[:, 1::2] <= size[0])
        # (RetinaNet/FCOS score class 0 with a sigmoid like any other, so a random model may give it)
        assert torch.all((labels[i, :c] >= 0) & (labels[i, :c] < num_classes))


@pytest.mark.parametrize("name", DETECTION_MODELS)
def test_metadata(name: str) -> None:
    stage_names, default_size = DEFAULTS[name]
    model = build_staged_model(name)
    assert is_known_model(name) and is_known_model(name.upper())
    assert model.kind == "detection" and model.name == name
    assert model.stage_names == stage_names
    assert model.input_size == default_size
    assert model.num_classes == 91 and model.max_detections == 100
    assert len(model.class_names) == 91
    assert model.class_names[0] == "__background__" and model.class_names[1] == "person"
    # every stage but the last may be captured as a CUDA graph; the NMS stage runs eagerly
    assert model.graph_stages == (True,) * (model.num_stages - 1) + (False,)
    assert graph_stage_indices(model) == list(range(model.num_stages - 1))


@pytest.mark.parametrize("name", DETECTION_MODELS)
def test_staged_equals_unstaged_and_batched_equals_unbatched(name: str) -> None:
    model = build_staged_model(name, input_size=SIZE, max_detections=K)
    x01, x = imagenet_images(3, seed=0, size=SIZE)
    detector = lively(model, x)
    with torch.inference_mode():
        staged = _run(model, x)
        singles = [_run(model, x[i:i + 1]) for i in range(3)]
        reference = _contract(detector(list(x01)), K)  # torchvision's own forward, its transform included
        forward = model(x)
    _check_contract(staged, 3, K, SIZE, 91)
    assert int(staged[3].min()) > 0, "a test without detections proves nothing"
    assert_same_detections(staged, reference)
    assert_same_detections(staged, tuple(torch.cat(parts) for parts in zip(*singles, strict=True)))
    for a, b in zip(forward, staged, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                                  "ssdlite320_mobilenet_v3_large"])
def test_graph_stages_have_fixed_shapes_and_rows(name: str) -> None:
    """The stages a CUDA graph captures give the same shapes for any input of the model's size, and their rows
    are independent: the rows the batching code stacks and takes out are the per-job results."""
    model = build_staged_model(name, input_size=SIZE, max_detections=K)
    shapes: list[list[tuple[int, ...]]] = []
    with torch.inference_mode():
        for seed in (0, 1):
            _, x = imagenet_images(2, seed, SIZE)
            y: object = x
            per_stage = []
            for j in graph_stage_indices(model):
                y = model.run_stage(j, y)  # type: ignore[arg-type]
                assert isinstance(y, tuple) and all(isinstance(t, Tensor) for t in y)
                assert all(t.shape[0] == 2 for t in y)  # batch-major, as stack_rows/take_rows need
                per_stage.append(tuple(tuple(t.shape) for t in y))
            shapes.append(per_stage)
            last = model.run_stage(model.num_stages - 1, stack_rows([(y, 1), (y, 0)]))
            first = take_rows(last, 1)
            alone = model.run_stage(model.num_stages - 1, take_rows(tuple(t[1:] for t in y), 1))  # type: ignore[index]
            for a, b in zip(first, alone, strict=True):
                torch.testing.assert_close(a, b)
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fcos_resnet50_fpn",
                                  "fasterrcnn_mobilenet_v3_large_fpn"])
def test_a_score_floor_changes_no_detection_at_or_above_it(name: str) -> None:
    """The engine sets the last stage's floor to its tasks' lowest score_threshold: the detections at or above the
    floor are exactly those without it (a box under the floor can only suppress boxes under it)."""
    model = build_staged_model(name, input_size=SIZE, max_detections=K)
    _, x = imagenet_images(2, seed=0, size=SIZE)
    lively(model, x)
    with torch.inference_mode():
        everything = _run(model, x)
        scores = everything[1][everything[1] > 0]
        floor = float(scores.median())
        assert set_score_floor(model, floor)
        floored = _run(model, x)
    expected = []
    for tensor in everything[:3]:
        expected.append(torch.zeros_like(tensor))
    counts = torch.zeros_like(everything[3])
    for i in range(2):
        above = (everything[1][i] >= floor) & (torch.arange(K) < everything[3][i])
        n = int(above.sum())
        assert 0 < n < int(everything[3][i])  # the floor removed some, kept some
        for out, tensor in zip(expected, everything[:3], strict=True):
            out[i, :n] = tensor[i][above]
        counts[i] = n
    assert_same_detections(floored, (*expected, counts))
    assert not set_score_floor(build_staged_model("resnet18", input_size=(32, 32)), 0.5)  # no detector stage


def test_wrong_input_size_is_refused() -> None:
    model = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=(96, 96))
    with pytest.raises(ValueError, match="input_size"):
        model.run_stage(0, torch.zeros(1, 3, 96, 128))


def test_ssdlite_first_stage_renormalises() -> None:
    """SSDlite was trained on (x - 0.5) / 0.5 of the [0, 1] image: its first stage maps the engine's ImageNet
    normalisation to that; the ResNet FPN detectors use ImageNet's own and only pad to a multiple of 32."""
    x01, x = imagenet_images(1, seed=3, size=(40, 50))
    ssd = InputAdapter((40, 50), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1)
    torch.testing.assert_close(ssd(x), (x01 - 0.5) / 0.5, rtol=0, atol=1e-5)
    fpn = InputAdapter((40, 50), IMAGENET_MEAN, IMAGENET_STD, 32)
    padded = fpn(x)
    assert padded.shape == (1, 3, 64, 64) and not fpn.renormalise
    assert torch.equal(padded[..., :40, :50], x) and not padded[..., 40:, :].any() and not padded[..., 50:].any()


def test_merged_is_one_eager_stage() -> None:
    model = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=(96, 128), max_detections=K)
    merged = model.merged()
    assert merged.num_stages == 1 and merged.graph_stages == (False,)
    assert graph_stage_indices(merged) == []
    assert merged.max_detections == K and merged.class_names == model.class_names
    _, x = imagenet_images(2, seed=4, size=(96, 128))
    with torch.inference_mode():
        for a, b in zip(merged(x), model(x), strict=True):
            assert torch.equal(a, b)


def test_graph_stages_flag() -> None:
    stages = [nn.Identity(), nn.Identity()]
    with pytest.raises(ValueError, match="graph_stages"):
        StagedModel(name="m", kind="classification", input_size=(8, 8), num_classes=2, stage_names=["a", "b"],
                    stages=stages, graph_stages=[True])
    flagged = StagedModel(name="m", kind="classification", input_size=(8, 8), num_classes=2,
                          stage_names=["a", "b"], stages=stages, graph_stages=[False, True])
    assert graph_stage_indices(flagged) == [1] and flagged.merged().graph_stages == (False,)
    plain = build_staged_model("resnet18", input_size=(32, 32))
    assert plain.graph_stages == (True,) * 4 and graph_stage_indices(plain) == [0, 1, 2, 3]
    assert plain.merged().graph_stages == (True,)


def test_weights_file_round_trip(tmp_path: Path) -> None:
    """A state_dict of the unstaged torchvision model loads through ``weights=`` (nothing downloaded)."""
    source = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=(96, 128), max_detections=K)
    x01, x = imagenet_images(2, seed=5, size=(96, 128))
    detector = lively(source, x)
    path = tmp_path / "ssdlite.pt"
    torch.save(detector.state_dict(), path)
    loaded = build_staged_model("ssdlite320_mobilenet_v3_large", weights=str(path), input_size=(96, 128),
                                max_detections=K)
    with torch.inference_mode():
        expected = source(x)
        got = loaded(x)
    assert int(expected[3].min()) > 0
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in detector.state_dict().items() if not k.startswith("head.")}, bad)
    with pytest.raises(ValueError, match="missing keys"):
        build_staged_model("ssdlite320_mobilenet_v3_large", weights=str(bad))


def test_num_classes_and_max_detections() -> None:
    model = build_staged_model("fcos_resnet50_fpn", num_classes=5, max_detections=7, input_size=(64, 96))
    assert model.num_classes == 5 and model.max_detections == 7
    assert getattr(model, "class_names", None) is None  # torchvision's names are COCO's: not for 5 classes
    _, x = imagenet_images(2, seed=6, size=(64, 96))
    lively(model, x)
    with torch.inference_mode():
        out = model(x)
    _check_contract(out, 2, 7, (64, 96), 5)
    assert int(out[3].min()) > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stage split"):
        build_staged_model("retinanet_resnet50_fpn", stages=[["backbone"], ["head"]])
    with pytest.raises(ValueError, match="kind"):
        build_staged_model("retinanet_resnet50_fpn", kind="classification")
    with pytest.raises(ValueError, match="max_detections"):
        build_staged_model("resnet18", max_detections=10)
    with pytest.raises(ValueError, match="max_detections"):
        build_staged_model("fcos_resnet50_fpn", max_detections=0)
    with pytest.raises(ValueError, match="too small"):
        build_staged_model("fcos_resnet50_fpn", input_size=(16, 16))
    with pytest.raises(ValueError, match="num_classes"):
        build_staged_model("fcos_resnet50_fpn", num_classes=1)
    assert build_staged_model("ssdlite320_mobilenet_v3_large", kind="detection").kind == "detection"


def test_channels_last_and_reduced_precision() -> None:
    """precision.py's helpers accept the detectors: fp32 channels-last gives the contiguous model's detections;
    bf16 (the reduced precision the CPU runs; fp16 is for the GPU) still gives float32 boxes and scores."""
    model = build_staged_model("retinanet_resnet50_fpn", input_size=(96, 128), max_detections=K)
    _, x = imagenet_images(2, seed=7, size=(96, 128))
    lively(model, x)
    with torch.inference_mode():
        expected = model(x)
    apply_precision(model, "fp32", channels_last=True)
    with torch.inference_mode():
        got = model(model_input(model, x))
    assert int(expected[3].min()) > 0
    assert_same_detections(got, expected, box_tol=1e-2, score_tol=1e-4)

    ssd = build_staged_model("ssdlite320_mobilenet_v3_large", input_size=(96, 128), max_detections=K)
    apply_precision(ssd, "bf16", channels_last=True)
    with torch.inference_mode():
        out = ssd(model_input(ssd, x))
    _check_contract(out, 2, K, (96, 128), 91)
    assert all(torch.isfinite(t).all() for t in out[:2])
