"""User models: torchvision by name with a stage config, TorchScript files, config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from daris_ros.runtime.models import (
    BUILTIN_MODELS,
    UnknownModelError,
    available_models,
    build_staged_model,
    is_known_model,
)

torch.set_num_threads(1)

# torch 2.11 deprecates TorchScript (still fully supported); keep the test output clean.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


def _assert_staged_equals_unstaged(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        expected = model.unstaged_model(x)
        y = x
        for i in range(model.num_stages):
            y = model.run_stage(i, y)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    return y


@pytest.mark.parametrize(
    ("name", "stages", "stage_names"),
    [
        ("mobilenet_v3_small", [["features"], ["avgpool", "classifier"]], ("features", "avgpool+classifier")),
        ("squeezenet1_0", [["features"], ["classifier", "flatten"]], ("features", "classifier+flatten")),
        ("shufflenet_v2_x0_5",
         [["conv1", "maxpool", "stage2"], ["stage3", "stage4", "conv5", "mean_hw", "fc"]],
         ("conv1+maxpool+stage2", "stage3+stage4+conv5+mean_hw+fc")),
        ("resnet18",
         [["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"], ["layer3", "layer4", "avgpool", "fc"]],
         ("conv1+bn1+relu+maxpool+layer1+layer2", "layer3+layer4+avgpool+fc")),
    ],
)
def test_torchvision_by_name_with_stage_config(name: str, stages: list[list[str]],
                                               stage_names: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = build_staged_model(name, stages=stages, input_size=(64, 64), num_classes=10)
    assert model.name == name and model.kind == "classification" and model.num_classes == 10
    assert model.stage_names == stage_names
    y = _assert_staged_equals_unstaged(model, torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10)
    with torch.inference_mode():
        torch.testing.assert_close(model.merged()(torch.ones(1, 3, 64, 64)),
                                   model.unstaged_model(torch.ones(1, 3, 64, 64)), rtol=0, atol=0)


def test_stage_given_as_plain_string() -> None:
    model = build_staged_model("mobilenet_v3_small", stages=["features", ["avgpool", "classifier"]])
    assert model.stage_names == ("features", "avgpool+classifier")


def test_torchvision_without_stages_is_one_stage() -> None:
    torch.manual_seed(1)
    model = build_staged_model("mobilenet_v3_small", input_size=(64, 64))
    assert model.stage_names == ("all",) and model.num_stages == 1
    _assert_staged_equals_unstaged(model, torch.randn(1, 3, 64, 64))


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _save_script(tmp_path: Path) -> Path:
    torch.manual_seed(2)
    net = _TinyNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return path


def test_torchscript_with_stage_config(tmp_path: Path) -> None:
    path = _save_script(tmp_path)
    stages = [["conv", "bn", "relu"], ["blocks"], ["pool", "fc"]]
    model = build_staged_model("tiny", torchscript=str(path), stages=stages, input_size=(16, 16))
    assert model.name == "tiny" and model.num_classes == 4
    assert model.stage_names == ("conv+bn+relu", "blocks", "pool+fc")
    x = torch.randn(2, 3, 16, 16)
    reference = torch.jit.load(str(path)).eval()
    with torch.inference_mode():
        y = model(x)
        torch.testing.assert_close(y, reference(x), rtol=0, atol=0)
        torch.testing.assert_close(model.merged()(x), y, rtol=0, atol=0)


def test_torchscript_as_one_stage_and_kind(tmp_path: Path) -> None:
    path = _save_script(tmp_path)
    model = build_staged_model("tiny", torchscript=str(path), num_classes=4, kind="classification")
    assert model.stage_names == ("all",)
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torch.jit.load(str(path))(x), rtol=0, atol=0)


def test_torchscript_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_staged_model("tiny", torchscript=str(missing))


def test_top_level_parameter_cannot_be_staged(tmp_path: Path) -> None:
    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1))
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x + self.token)

    path = tmp_path / "token.pt"
    torch.jit.save(torch.jit.script(WithToken()), str(path))
    with pytest.raises(ValueError, match="token"):
        build_staged_model("tok", torchscript=str(path), stages=[["fc"]])


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ([["features"], ["avgpool", "clasifier"]], "'clasifier'"),                       # unknown child
        ([["avgpool"], ["features", "classifier"]], "'avgpool' is out of order"),       # out of order
        ([["features"], ["classifier"]], r"missing.*'avgpool'"),                        # missing child
        ([["features", "features"], ["avgpool", "classifier"]], "'features' appears more than once"),
        ([["features"], [], ["avgpool", "classifier"]], "stage 1 must be a non-empty"),  # empty stage
        ([], "non-empty list"),                                                          # no stages
        ("features", "non-empty list"),                                                  # not a list
        ([["features"], ["avgpool", 3]], "strings"),                                     # not a name
    ],
)
def test_bad_stage_configs(stages, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_staged_model("mobilenet_v3_small", stages=stages)


def test_unet_rejects_a_stage_config() -> None:
    with pytest.raises(ValueError, match="fixed"):
        build_staged_model("unet", stages=[["enc1"]])


def test_unknown_model_error_lists_builtins() -> None:
    with pytest.raises(UnknownModelError) as info:
        build_staged_model("resnet19")
    assert isinstance(info.value, ValueError)
    for name in BUILTIN_MODELS:
        assert name in str(info.value)


def test_available_models() -> None:
    models = available_models()
    assert models[:8] == ["resnet18", "resnet50", "unet", "inception_v3", "deeplabv3_resnet50",
                          "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50"]
    assert len(models) == len(BUILTIN_MODELS) + 1 and "torchvision" in models[-1]
    assert available_models(include_note=False) == list(BUILTIN_MODELS)


def test_is_known_model() -> None:
    assert is_known_model("unet") and is_known_model("ResNet50") and is_known_model("mobilenet_v3_small")
    assert not is_known_model("resnet19") and not is_known_model(available_models()[-1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="transform_input"):
        build_staged_model("resnet18", transform_input=True)
    with pytest.raises(ValueError, match="kind"):
        build_staged_model("resnet18", kind="segmentation")
    with pytest.raises(ValueError, match="input_size"):
        build_staged_model("resnet18", input_size=(224,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too small"):
        build_staged_model("unet", input_size=(8, 8))
