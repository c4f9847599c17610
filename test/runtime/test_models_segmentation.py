"""torchvision segmentation models as staged models: staged == torchvision's ``out``, batching, shapes,
channels_last, weights, registry."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor

from daris_ros.runtime.models import (
    BUILTIN_MODELS,
    StagedModel,
    StageIO,
    UnknownModelError,
    available_models,
    build_staged_model,
    is_known_model,
    stage_tensors,
)
from daris_ros.runtime.models.precision import apply_precision, model_input
from daris_ros.runtime.models.segmentation import SEGMENTATION_NAMES
from daris_ros.runtime.results import segment_rows

torch.set_num_threads(1)

SIDE_H, SIDE_W = 96, 128  # small, non-square
MODEL_NAMES = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50")

#: Per model: the shapes (without the batch dimension) each stage returns for a 96x128 input.
STAGE_SHAPES: dict[str, list[list[tuple[int, ...]]]] = {
    "deeplabv3_resnet50": [[(512, 12, 16)], [(1024, 12, 16)], [(2048, 12, 16)], [(21, 96, 128)]],
    "fcn_resnet50": [[(512, 12, 16)], [(1024, 12, 16)], [(2048, 12, 16)], [(21, 96, 128)]],
    "deeplabv3_mobilenet_v3_large": [[(40, 12, 16)], [(112, 6, 8)], [(960, 6, 8)], [(21, 96, 128)]],
    "lraspp_mobilenet_v3_large": [[(40, 12, 16), (40, 12, 16)], [(112, 6, 8), (40, 12, 16)],
                                  [(960, 6, 8), (40, 12, 16)], [(21, 96, 128)]],
}
RESNET_STAGE_NAMES = ("stem+layer1+layer2", "layer3", "layer4", "head+upsample")
MOBILENET_STAGE_NAMES = ("features0-6", "features7-12", "features13-16", "head+upsample")


def _images(n: int, seed: int, h: int = SIDE_H, w: int = SIDE_W) -> Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _calibrate_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Set every BatchNorm's running statistics to those of a random batch (one train-mode pass).

    With torchvision's random initialisation the activations of the MobileNetV3 backbone shrink to ~1e-8
    by its last block, so the eval-mode output would hardly depend on the input; calibrated statistics
    keep every layer's output at about unit scale, so that the comparisons below test something.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: the one batch's statistics
    model.train()
    with torch.no_grad():
        model(_images(4, seed=seed, h=64, w=64))
    model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, StagedModel]:
    built: dict[str, StagedModel] = {}
    for i, name in enumerate(MODEL_NAMES):
        torch.manual_seed(i)
        built[name] = build_staged_model(name, input_size=(SIDE_H, SIDE_W))
        assert built[name].unstaged_model is not None
        _calibrate_batch_norm(built[name].unstaged_model, seed=100 + i)  # type: ignore[arg-type]
    return built


def _run_stages(model: StagedModel, x: Tensor) -> tuple[Tensor, list[list[torch.Size]]]:
    shapes: list[list[torch.Size]] = []
    y: Tensor | tuple[Tensor, ...] = x
    for i in range(model.num_stages):
        y = model.run_stage(i, y)
        shapes.append([t.shape for t in stage_tensors(y)])
    assert isinstance(y, Tensor)
    return y, shapes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_staged_equals_torchvision_out(models: dict[str, StagedModel], name: str) -> None:
    model = models[name]
    ref_model = model.unstaged_model
    assert ref_model is not None and not ref_model.training and not model.training
    assert getattr(ref_model, "aux_classifier", None) is None
    x = _images(2, seed=1)
    with torch.inference_mode():
        expected = ref_model(x)["out"]
        staged, _ = _run_stages(model, x)
        forward = model(x)
        merged = model.merged()(x)
    assert expected.shape == (2, 21, SIDE_H, SIDE_W)
    # Same kernels in the same order on the CPU: bit-for-bit equal.
    torch.testing.assert_close(staged, expected, rtol=0, atol=0)
    torch.testing.assert_close(forward, expected, rtol=0, atol=0)
    torch.testing.assert_close(merged, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "fcn_resnet50"])
def test_odd_input_size_is_exact(name: str) -> None:
    """Sides that are no multiple of the output stride: the head's feature-size check and the upsampling
    still match torchvision."""
    torch.manual_seed(5)
    model = build_staged_model(name, input_size=(37, 50))
    ref_model = model.unstaged_model
    assert ref_model is not None
    _calibrate_batch_norm(ref_model, seed=12)
    x = _images(1, seed=2, h=37, w=50)
    with torch.inference_mode():
        expected = ref_model(x)["out"]
        staged, _ = _run_stages(model, x)
    assert staged.shape == (1, 21, 37, 50)
    torch.testing.assert_close(staged, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batched_equals_unbatched_per_row(models: dict[str, StagedModel], name: str) -> None:
    model = models[name]
    x = _images(3, seed=3)
    with torch.inference_mode():
        batched, _ = _run_stages(model, x)
        rows = [_run_stages(model, x[i:i + 1])[0] for i in range(3)]
    assert batched.shape == (3, 21, SIDE_H, SIDE_W)
    scale = float(batched.abs().max())
    for i, row in enumerate(rows):
        assert row.shape == (1, 21, SIDE_H, SIDE_W)
        # Batch size may change the CPU kernels' summation order: equal up to rounding.
        torch.testing.assert_close(batched[i:i + 1], row, rtol=1e-4, atol=1e-5 * scale)
    # The rows really are different images, and the output depends on the image.
    assert float((rows[0] - rows[1]).abs().max()) > 0.1 * scale


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_intermediate_shapes_are_fixed(models: dict[str, StagedModel], name: str) -> None:
    """Every stage's output shapes depend on the input shape only (what CUDA-graph capture needs)."""
    model = models[name]
    inputs = [_images(2, seed=4), torch.zeros(2, 3, SIDE_H, SIDE_W), _images(2, seed=5) * 10.0]
    expected = [[torch.Size((2, *shape)) for shape in stage] for stage in STAGE_SHAPES[name]]
    with torch.inference_mode():
        for x in inputs:
            out, shapes = _run_stages(model, x)
            assert shapes == expected
            assert out.dtype == torch.float32


#: Exported ops that read a tensor value back to the host or make a shape depend on data.
HOST_SYNC_OPS = ("aten.item", "aten._local_scalar_dense", "aten.nonzero", "aten._assert_scalar")


def host_syncs_and_dynamic_shapes(module: torch.nn.Module, example: StageIO) -> list[str]:
    """What in ``module``'s exported graph would stop a CUDA-graph capture: host read-backs, shapes
    that are not plain ints (data-dependent). Empty when there is nothing."""
    exported = torch.export.export(module, (example,), strict=False)
    problems: list[str] = []
    for node in exported.graph.nodes:
        if node.op == "call_function" and any(op in str(node.target) for op in HOST_SYNC_OPS):
            problems.append(f"{node.name}: {node.target}")
        for value in torch.utils._pytree.tree_leaves(node.meta.get("val")):
            if isinstance(value, Tensor) and not all(isinstance(d, int) for d in value.shape):
                problems.append(f"{node.name}: shape {tuple(value.shape)}")
    return problems


def test_the_capture_check_finds_syncs_and_dynamic_shapes() -> None:
    class ReadsBack(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * x.sum().item()

    class MasksByValue(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[x > 0]

    assert host_syncs_and_dynamic_shapes(ReadsBack(), torch.randn(2, 3))
    assert host_syncs_and_dynamic_shapes(MasksByValue(), torch.randn(2, 3))


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50"])
def test_stages_are_capturable(name: str) -> None:
    """A CPU stand-in for CUDA-graph capture (CI has no GPU): each stage exports with ``torch.export`` as
    one graph with static shapes and no read-back of a tensor value to the host."""
    torch.manual_seed(13)
    model = build_staged_model(name, input_size=(64, 64))
    x: StageIO = _images(2, seed=14, h=64, w=64)
    for i, stage in enumerate(model.stages):
        assert host_syncs_and_dynamic_shapes(stage, x) == [], f"stage {i}"
        with torch.no_grad():  # (export cannot take inference-mode tensors)
            x = stage(x)
    assert isinstance(x, Tensor) and x.shape == (2, 21, 64, 64)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_metadata_and_defaults(name: str) -> None:
    model = build_staged_model(name)
    assert model.name == name
    assert model.kind == "segmentation"
    assert model.num_classes == 21
    assert model.input_size == (512, 512)
    assert model.num_stages == 4 and isinstance(model.stages, torch.nn.ModuleList)
    assert model.stage_names == (RESNET_STAGE_NAMES if "resnet" in name else MOBILENET_STAGE_NAMES)
    weights_enum = {
        "deeplabv3_resnet50": torchvision.models.segmentation.DeepLabV3_ResNet50_Weights,
        "deeplabv3_mobilenet_v3_large": torchvision.models.segmentation.DeepLabV3_MobileNet_V3_Large_Weights,
        "lraspp_mobilenet_v3_large": torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights,
        "fcn_resnet50": torchvision.models.segmentation.FCN_ResNet50_Weights,
    }[name]
    assert model.class_names == tuple(weights_enum.DEFAULT.meta["categories"])
    assert len(model.class_names) == 21 and model.class_names[15] == "person"
    assert model.merged().class_names == model.class_names
    # The stages hold the unstaged model's parameters, once each.
    ref = model.unstaged_model
    assert ref is not None
    assert {id(p) for p in model.parameters()} == {id(p) for p in ref.parameters()}
    assert sum(model.stage_parameter_counts()) == sum(p.numel() for p in ref.parameters())


def test_num_classes_and_output_for_segment_rows() -> None:
    torch.manual_seed(6)
    model = build_staged_model("LRASPP_MobileNet_V3_Large", num_classes=5, input_size=(64, 80))
    assert model.num_classes == 5 and model.class_names is None
    with torch.inference_mode():
        out = model(_images(2, seed=7, h=64, w=80))
    assert out.shape == (2, 5, 64, 80)
    for height, width, present, fractions in segment_rows(out, [0, 1]):
        assert (height, width) == (64, 80)
        assert set(present) <= set(range(5)) and present
        assert sum(fractions) == pytest.approx(1.0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fp32_channels_last_runs(models: dict[str, StagedModel], name: str) -> None:
    contiguous = models[name]
    model = copy.deepcopy(contiguous)
    apply_precision(model, "fp32", channels_last=True)
    assert model.memory_format == torch.channels_last
    x = _images(2, seed=8)
    with torch.inference_mode():
        expected, _ = _run_stages(contiguous, x)
        first = model.run_stage(0, model_input(model, x))
        assert stage_tensors(first)[0].is_contiguous(memory_format=torch.channels_last)
        out: Tensor | tuple[Tensor, ...] = first
        for i in range(1, model.num_stages):
            out = model.run_stage(i, out)
    assert isinstance(out, Tensor)
    assert out.shape == (2, 21, SIDE_H, SIDE_W) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    # NHWC kernels sum in another order: equal up to fp32 rounding (accumulated over ResNet-50's depth).
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=2e-4 * float(expected.abs().max()))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("deeplabv3_mobilenet_v3_large", lambda: torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=True)),
        ("lraspp_mobilenet_v3_large", lambda: torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=21)),
    ],
)
def test_weights_round_trip_ignores_the_aux_classifier(tmp_path: Path, name: str, make) -> None:
    torch.manual_seed(1234)
    reference = make().eval()
    _calibrate_batch_norm(reference, seed=9)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(999)  # a different random init: every weight must come from the file
    staged = build_staged_model(name, weights=str(path), input_size=(64, 64))
    x = _images(2, seed=10, h=64, w=64)
    with torch.inference_mode():
        torch.testing.assert_close(staged(x), reference(x)["out"], rtol=0, atol=0)


def test_wrong_weights_file_is_refused(tmp_path: Path) -> None:
    reference = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3)
    path = tmp_path / "lraspp3.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        build_staged_model("lraspp_mobilenet_v3_large", weights=str(path))


def test_head_refuses_features_of_another_input_size(models: dict[str, StagedModel]) -> None:
    model = models["lraspp_mobilenet_v3_large"]
    with torch.inference_mode(), pytest.raises(ValueError, match="input_size it was built for"):
        model(_images(1, seed=11, h=2 * SIDE_H, w=SIDE_W))


def test_registry_knows_the_segmentation_models() -> None:
    assert set(SEGMENTATION_NAMES) == set(MODEL_NAMES)
    for name in MODEL_NAMES:
        assert is_known_model(name) and is_known_model(name.upper())
        assert name in BUILTIN_MODELS and name in available_models()
    assert not is_known_model("deeplabv3_resnet18")
    with pytest.raises(UnknownModelError) as info:
        build_staged_model("deeplabv3_resnet18")
    for name in MODEL_NAMES:
        assert name in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        build_staged_model("fcn_resnet50", kind="classification")
    with pytest.raises(ValueError, match="fixed"):
        build_staged_model("deeplabv3_resnet50", stages=[["backbone"], ["classifier"]])
    with pytest.raises(ValueError, match="num_classes"):
        build_staged_model("lraspp_mobilenet_v3_large", num_classes=0)
    with pytest.raises(ValueError, match="transform_input"):
        build_staged_model("lraspp_mobilenet_v3_large", transform_input=True)
    assert build_staged_model("fcn_resnet50", kind="segmentation").kind == "segmentation"
