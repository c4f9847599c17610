"""Built-in staged models: staged output == unstaged output, stage metadata, merged()."""

from __future__ import annotations

import pytest
import torch

from daris_ros.runtime.models import StagedModel, build_staged_model, stage_tensors

torch.set_num_threads(1)

# (name, input side used in the test: small where the architecture allows)
BUILTINS = [("resnet18", 64), ("resnet50", 64), ("unet", 64), ("inception_v3", 75)]


def _run_stages(model: StagedModel, x: torch.Tensor) -> torch.Tensor:
    y = x
    for i in range(model.num_stages):
        y = model.run_stage(i, y)
    assert isinstance(y, torch.Tensor)
    return y


@pytest.mark.parametrize(("name", "side"), BUILTINS)
def test_staged_equals_unstaged(name: str, side: int) -> None:
    torch.manual_seed(0)
    model = build_staged_model(name, input_size=(side, side))
    assert not model.training
    ref_model = model.unstaged_model
    assert ref_model is not None and not ref_model.training
    x = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        expected = ref_model(x)
        staged = _run_stages(model, x)
        forward = model(x)
        merged = model.merged()(x)
    # Same kernels in the same order on the CPU: bit-for-bit equal.
    torch.testing.assert_close(staged, expected, rtol=0, atol=0)
    torch.testing.assert_close(forward, expected, rtol=0, atol=0)
    torch.testing.assert_close(merged, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "stage_names", "kind", "classes", "default_size"),
    [
        ("resnet18", ("stem+layer1", "layer2", "layer3", "layer4+head"), "classification", 1000, (224, 224)),
        ("resnet50", ("stem+layer1", "layer2", "layer3", "layer4+head"), "classification", 1000, (224, 224)),
        ("unet", ("contracting", "bottleneck", "expanding", "output"), "segmentation", 21, (224, 224)),
        ("inception_v3", ("stem", "mixed_5", "mixed_6", "mixed_7+head"), "classification", 1000, (299, 299)),
    ],
)
def test_metadata(name: str, stage_names: tuple[str, ...], kind: str, classes: int,
                  default_size: tuple[int, int]) -> None:
    model = build_staged_model(name)
    assert model.name == name
    assert model.kind == kind
    assert model.num_classes == classes
    assert model.input_size == default_size
    assert model.stage_names == stage_names
    assert len(model.stages) == model.num_stages == 4
    assert isinstance(model.stages, torch.nn.ModuleList)


def test_stages_share_the_unstaged_parameters() -> None:
    model = build_staged_model("resnet18")
    ref = model.unstaged_model
    assert ref is not None
    staged_ids = {id(p) for p in model.parameters()}
    assert staged_ids == {id(p) for p in ref.parameters()}
    # state_dict keys: stages.<i>.<unstaged key>
    assert "stages.0.conv1.weight" in model.state_dict()
    assert "stages.3.fc.bias" in model.state_dict()
    assert sum(model.stage_parameter_counts()) == sum(p.numel() for p in ref.parameters())


def test_merged_is_one_stage_with_the_same_weights() -> None:
    torch.manual_seed(1)
    model = build_staged_model("resnet18", input_size=(64, 64))
    merged = model.merged()
    assert merged.num_stages == 1
    assert merged.stage_names == ("stem+layer1+layer2+layer3+layer4+head",)
    assert (merged.name, merged.kind, merged.input_size, merged.num_classes) == (
        model.name, model.kind, model.input_size, model.num_classes)
    assert {id(p) for p in merged.parameters()} == {id(p) for p in model.parameters()}
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(merged.run_stage(0, x), model(x), rtol=0, atol=0)


def test_unet_passes_skip_connections_between_stages() -> None:
    torch.manual_seed(2)
    model = build_staged_model("unet", num_classes=5, input_size=(32, 48))
    x = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        s0 = model.run_stage(0, x)
        assert isinstance(s0, tuple) and len(s0) == 5
        assert [tuple(t.shape[1:]) for t in s0] == [(512, 2, 3), (64, 32, 48), (128, 16, 24), (256, 8, 12),
                                                      (512, 4, 6)]
        s1 = model.run_stage(1, s0)
        assert isinstance(s1, tuple) and s1[0].shape[1] == 1024 and all(a is b for a, b in zip(s0[1:], s1[1:],
                                                                                                strict=True))
        s2 = model.run_stage(2, s1)
        assert isinstance(s2, torch.Tensor) and s2.shape == (1, 64, 32, 48)
        out = model.run_stage(3, s2)
    assert out.shape == (1, 5, 32, 48)
    assert len(stage_tensors(s0)) == 5 and stage_tensors(out)[0] is out


def test_unet_odd_input_size_keeps_resolution() -> None:
    torch.manual_seed(3)
    model = build_staged_model("unet", input_size=(37, 50))
    x = torch.randn(1, 3, 37, 50)
    with torch.inference_mode():
        out = model(x)
        torch.testing.assert_close(out, model.unstaged_model(x), rtol=0, atol=0)
    assert out.shape == (1, 21, 37, 50)


def test_unet_channels() -> None:
    model = build_staged_model("unet")
    unet = model.unstaged_model
    assert [unet.get_submodule(f"enc{i}").conv1.out_channels for i in (1, 2, 3, 4)] == [64, 128, 256, 512]
    assert unet.bottleneck.conv1.out_channels == 1024
    assert isinstance(unet.up4, torch.nn.ConvTranspose2d)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unet.enc1.modules())


def test_inception_transform_input_is_staged_exactly() -> None:
    torch.manual_seed(4)
    model = build_staged_model("inception_v3", input_size=(75, 75), transform_input=True)
    assert model.unstaged_model.transform_input is True
    assert "transform_input" in dict(model.stages[0].named_children())
    x = torch.randn(1, 3, 75, 75)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model.unstaged_model(x), rtol=0, atol=0)


def test_inception_has_no_aux_head_and_accepts_224() -> None:
    model = build_staged_model("inception_v3", input_size=(224, 224), num_classes=10)
    assert model.unstaged_model.AuxLogits is None
    assert model.unstaged_model.transform_input is False  # no weights file -> off
    assert model.input_size == (224, 224)
    assert model.num_classes == 10
    with pytest.raises(ValueError, match="too small"):
        build_staged_model("inception_v3", input_size=(64, 64))


def test_run_stage_index_out_of_range() -> None:
    model = build_staged_model("resnet18")
    with pytest.raises(IndexError):
        model.run_stage(4, torch.zeros(1))
    with pytest.raises(IndexError):
        model.run_stage(-1, torch.zeros(1))


def test_num_classes_and_case_insensitive_name() -> None:
    model = build_staged_model("ResNet18", num_classes=7, input_size=(32, 32))
    assert model.name == "resnet18" and model.num_classes == 7
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
