"""Weights from a file: round trip, errors, the no-weights warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from daris_ros.runtime.models import build_staged_model
from daris_ros.runtime.models.unet import UNet

torch.set_num_threads(1)


def _save(state_dict: dict[str, torch.Tensor], path: Path) -> str:
    torch.save(state_dict, path)
    return str(path)


def _randomise_bn_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-default running statistics so that eval outputs depend on them."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize(
    ("name", "make", "side"),
    [
        ("resnet18", lambda: torchvision.models.resnet18(weights=None), 64),
        ("unet", lambda: UNet(), 64),
        ("inception_v3", lambda: torchvision.models.inception_v3(weights=None, init_weights=True), 75),
    ],
)
def test_weights_round_trip(tmp_path: Path, name: str, make, side: int) -> None:
    torch.manual_seed(1234)
    reference = make().eval()
    _randomise_bn_stats(reference)
    path = _save(reference.state_dict(), tmp_path / f"{name}.pth")

    torch.manual_seed(999)  # a different random init: every weight must come from the file
    staged = build_staged_model(name, weights=path, input_size=(side, side), transform_input=False
                                if name == "inception_v3" else None)
    x = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        expected = reference(x)
        torch.testing.assert_close(staged(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(staged.merged()(x), expected, rtol=0, atol=0)


def test_inception_weights_ignore_aux_and_enable_transform_input(tmp_path: Path) -> None:
    torch.manual_seed(7)
    reference = torchvision.models.inception_v3(weights=None, init_weights=True, transform_input=True).eval()
    assert any(k.startswith("AuxLogits.") for k in reference.state_dict())
    path = _save(reference.state_dict(), tmp_path / "inception.pth")
    staged = build_staged_model("inception_v3", weights=path, input_size=(75, 75))
    assert staged.unstaged_model.transform_input is True  # default with a weights file
    x = torch.randn(1, 3, 75, 75)
    with torch.inference_mode():
        torch.testing.assert_close(staged(x), reference(x), rtol=0, atol=0)


def test_data_parallel_prefix_and_wrapper_are_accepted(tmp_path: Path) -> None:
    torch.manual_seed(5)
    reference = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}
    path = _save(wrapped, tmp_path / "ddp.pt")
    staged = build_staged_model("resnet18", weights=path, num_classes=3, input_size=(32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(staged(x), reference(x), rtol=0, atol=0)


def test_load_unstaged_state_dict_after_build() -> None:
    torch.manual_seed(6)
    reference = torchvision.models.resnet18(weights=None).eval()
    staged = build_staged_model("resnet18", input_size=(32, 32))
    staged.load_unstaged_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(staged(x), reference(x), rtol=0, atol=0)


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.pth"
    with pytest.raises(FileNotFoundError, match="does-not-exist.pth"):
        build_staged_model("resnet18", weights=str(missing))


def test_mismatched_keys_are_listed(tmp_path: Path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = _save(state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"missing keys \['fc\.bias'\].*unexpected keys \['extra\.weight'\]"):
        build_staged_model("resnet18", weights=path)
    with pytest.raises(ValueError, match=r"missing keys \['layer1\.0\.conv3\.weight', .*\] \(166 in all\)"):
        build_staged_model("resnet50", weights=path)


def test_mismatched_shapes_are_listed(tmp_path: Path) -> None:
    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"fc\.weight: file \(1000, 512\) vs model \(10, 512\)"):
        build_staged_model("resnet18", weights=path, num_classes=10)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = _save({"epoch": 3, "weights": [1, 2]}, tmp_path / "junk.pt")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="state_dict"):
        build_staged_model("resnet18", weights=path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build_staged_model("resnet18", weights=str(garbage))


@pytest.mark.parametrize("name", ["resnet18", "unet", "mobilenet_v3_small"])
def test_no_weights_logs_a_warning(caplog: pytest.LogCaptureFixture, name: str) -> None:
    with caplog.at_level(logging.WARNING, logger="daris_ros.models"):
        build_staged_model(name)
    records = [r for r in caplog.records if r.name == "daris_ros.models" and r.levelno == logging.WARNING]
    assert len(records) == 1
    assert "randomly initialised" in records[0].getMessage() and name in records[0].getMessage()


def test_weights_do_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with caplog.at_level(logging.WARNING, logger="daris_ros.models"):
        build_staged_model("resnet18", weights=path)
    assert not [r for r in caplog.records if r.name == "daris_ros.models"]
