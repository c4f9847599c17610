"""Model files with a graph (issue 16 item 4): ``.pt2`` (torch.export) and ``.onnx`` files load, cut at named stage
boundaries, and match their source model; the start-up check catches stagings that do not reproduce the whole
graph; README.md's "Bring your own model" examples run as written. CPU only, small inputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from daris_ros.parameter_table import ConfigError
from daris_ros.runtime.models import build_staged_model, is_known_model
from daris_ros.runtime.models.graph_file import (
    BoundaryError,
    GraphStage,
    StagedOutputMismatch,
    describe_boundaries,
    main,
)
from daris_ros.settings import load_parameter_file, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
SIDE = 32  # input side of the small models


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=5).eval()


class TinySegmenter(nn.Module):
    """Two convolutions, a pooling and an upsampling back to the input size: N x 3 classes x H x W."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(torch.relu(self.encoder(x)))
        return nn.functional.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear")


def export_pt2(model: nn.Module, path: Path, *, dynamic_batch: bool = True) -> Path:
    example = torch.randn(2 if dynamic_batch else 1, 3, SIDE, SIDE)
    shapes = ({0: torch.export.Dim("batch", min=1, max=16)},) if dynamic_batch else None
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=shapes), str(path))
    return path


def export_onnx(model: nn.Module, path: Path) -> Path:
    example = torch.randn(2, 3, SIDE, SIDE)
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["out"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=16)},), verbose=False)
    return path


def run_staged(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        value = x
        for index in range(model.num_stages):
            value = model.run_stage(index, value)
    assert isinstance(value, Tensor)
    return value


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("formats")
    model = small_resnet()
    return model, export_pt2(model, folder / "resnet.pt2"), export_onnx(model, folder / "resnet.onnx")


def test_pt2_loads_staged_and_matches_its_source_model(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    source, pt2, _ = resnet_files
    staged = build_staged_model(str(pt2), input_size=(SIDE, SIDE), stage_boundaries=["relu__4", "relu__8"])
    assert staged.num_stages == 3
    assert staged.stage_names == ("input..relu__4", "relu__4..relu__8", "relu__8..output")
    assert (staged.kind, staged.num_classes, staged.input_size) == ("classification", 5, (SIDE, SIDE))
    assert all(isinstance(stage, GraphStage) for stage in staged.stages)
    x = torch.randn(3, 3, SIDE, SIDE)  # a batch of three: the dynamic batch dimension
    with torch.no_grad():
        expected = source(x)
        whole = staged.unstaged_model(x)
    got = run_staged(staged, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, whole, rtol=0, atol=0)
    # the stages share the whole graph's weights: nothing is copied
    whole_parameters = {id(p) for p in staged.unstaged_model.parameters()}
    assert {id(p) for p in staged.parameters()} <= whole_parameters
    # each stage passes one tensor (the end of a residual layer)
    with torch.no_grad():
        first = staged.run_stage(0, x)
    assert isinstance(first, Tensor) and first.shape == (3, 64, SIDE // 4, SIDE // 4)


def test_onnx_loads_staged_and_matches_its_source_model(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    source, _, onnx_file = resnet_files
    staged = build_staged_model(str(onnx_file), input_size=(SIDE, SIDE),
                                stage_boundaries=["relu_4", "relu_8", "relu_12"])
    assert staged.num_stages == 4
    assert (staged.kind, staged.num_classes) == ("classification", 5)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = source(x)
        whole = staged.unstaged_model(x)
    got = run_staged(staged, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # the exporter folds BatchNorm
    torch.testing.assert_close(got, whole, rtol=0, atol=0)


def test_without_boundaries_a_file_is_one_stage(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    source, pt2, _ = resnet_files
    staged = build_staged_model(str(pt2), input_size=(SIDE, SIDE))
    assert staged.stage_names == ("all",)
    x = torch.randn(1, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(run_staged(staged, x), source(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_a_segmenter_is_recognised_and_staged(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    source = TinySegmenter().eval()
    path = export_pt2(source, tmp_path / "seg.pt2") if suffix == ".pt2" else export_onnx(source, tmp_path / "s.onnx")
    names = [line.split("\t")[0] for line in describe_boundaries(path, (SIDE, SIDE))]
    boundary = names[len(names) // 2]  # a value in the middle of the graph
    staged = build_staged_model(str(path), input_size=(SIDE, SIDE), stage_boundaries=[boundary])
    assert (staged.kind, staged.num_classes, staged.num_stages) == ("segmentation", 3, 2)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = source(x)
    got = run_staged(staged, x)
    assert got.shape == (2, 3, SIDE, SIDE)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_unknown_boundary_names_the_near_names(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    _, pt2, onnx_file = resnet_files
    with pytest.raises(BoundaryError, match=r"'relu_4' is not a node name .*near names: \[.*'relu__4'"):
        build_staged_model(str(pt2), input_size=(SIDE, SIDE), stage_boundaries=["relu_4"])
    with pytest.raises(BoundaryError, match=r"'relu__4' is not a tensor name .*near names: \[.*'relu_4'"):
        build_staged_model(str(onnx_file), input_size=(SIDE, SIDE), stage_boundaries=["relu__4"])


def test_boundaries_out_of_order_or_at_the_end_are_refused(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    _, pt2, _ = resnet_files
    with pytest.raises(BoundaryError, match="does not come after boundary 0 'relu__8'"):
        build_staged_model(str(pt2), input_size=(SIDE, SIDE), stage_boundaries=["relu__8", "relu__4"])
    with pytest.raises(BoundaryError, match="last operation"):
        build_staged_model(str(pt2), input_size=(SIDE, SIDE), stage_boundaries=["linear"])


class NoisyNet(nn.Module):
    """Dropout in training mode: every run of the graph draws new noise, so no staging reproduces a whole run."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.conv(x)).mean(dim=(2, 3)))


def test_the_start_up_check_names_the_boundary_where_the_stages_differ(tmp_path: Path) -> None:
    path = export_pt2(NoisyNet().train(), tmp_path / "noisy.pt2", dynamic_batch=False)
    names = [line.split("\t")[0] for line in describe_boundaries(path, (SIDE, SIDE))]
    after_dropout = next(name for name in names if "dropout" in name)
    with pytest.raises(StagedOutputMismatch, match=rf"boundary 0 '{after_dropout}', value '{after_dropout}' "
                                                   r"differs from the whole model's \(max abs difference"):
        build_staged_model(str(path), input_size=(SIDE, SIDE), stage_boundaries=[after_dropout])


class ShapeNet(nn.Module):
    """Reshapes with a size read from a tensor: with a dynamic batch the size is a SymInt node of the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, stride=4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y.reshape(y.shape[0], -1)


def test_a_non_tensor_value_crossing_a_boundary_is_refused(tmp_path: Path) -> None:
    path = export_pt2(ShapeNet().eval(), tmp_path / "shape.pt2")
    graph = torch.export.load(str(path)).module().graph
    size_nodes = [node.name for node in graph.nodes if node.op == "call_function" and "sym_size" in str(node.target)]
    assert size_nodes, "the export has no sym_size node to cut after"
    with pytest.raises(StagedOutputMismatch, match=r"is SymInt|is int|not a tensor"):
        build_staged_model(str(path), input_size=(SIDE, SIDE), stage_boundaries=[size_nodes[0]])


def test_missing_files_and_misplaced_arguments(tmp_path: Path, resnet_files: tuple[nn.Module, Path, Path]) -> None:
    _, pt2, _ = resnet_files
    with pytest.raises(FileNotFoundError):
        build_staged_model(str(tmp_path / "absent.pt2"))
    with pytest.raises(ValueError, match="carries its weights"):
        build_staged_model(str(pt2), weights=str(pt2))
    with pytest.raises(ValueError, match="stage_boundaries apply to .pt2/.onnx model files only"):
        build_staged_model("resnet18", stage_boundaries=["layer1"])
    assert is_known_model(str(pt2)) and is_known_model("x/y/model.onnx") and not is_known_model("model.bin")


def test_task_parameters_point_at_a_model_file(tmp_path: Path, resnet_files: tuple[nn.Module, Path, Path]) -> None:
    _, pt2, _ = resnet_files
    task = {"topic": "/cam", "rate": 5.0, "model": str(pt2), "stage_boundaries": ["relu__4"]}
    settings = settings_from_mapping({"task_names": ["front"], "tasks": {"front": task}})
    assert settings.tasks[0].stage_boundaries == ("relu__4",)
    with pytest.raises(ConfigError, match=r"tasks\.front\.stage_boundaries"):
        settings_from_mapping({"task_names": ["front"], "tasks": {"front": {**task, "model": "resnet18"}}})
    with pytest.raises(ConfigError, match=r"tasks\.front\.model.*does not exist"):
        settings_from_mapping({"task_names": ["front"],
                               "tasks": {"front": {**task, "model": str(tmp_path / "gone.onnx")}}})


def test_the_listing_command_prints_names_and_shapes(resnet_files: tuple[nn.Module, Path, Path]) -> None:
    _, _, onnx_file = resnet_files
    lines: list[str] = []
    assert main([str(onnx_file), str(SIDE), str(SIDE)], out=lines.append) == 0
    assert f"relu_4\t1x64x{SIDE // 4}x{SIDE // 4}" in lines
    assert lines[-1] == "out\t1x5"
    assert main([], out=lines.append) == 2


# ---------------------------------------------------------------------------------------------- README examples
def readme_examples() -> list[tuple[str, str]]:
    """(python code, parameter file) pairs of README.md's "Bring your own model" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(python|yaml)\n(.*?)```", section, flags=re.S)
    python = [body for lang, body in blocks if lang == "python"]
    yaml_files = [body for lang, body in blocks if lang == "yaml"]
    assert len(python) == len(yaml_files) == 2, "one export example and one parameter file per format"
    return list(zip(python, yaml_files, strict=True))


@pytest.mark.parametrize("index", [0, 1], ids=["pt2", "onnx"])
def test_readme_example_runs_and_matches_its_source_model(index: int, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, parameter_file = readme_examples()[index]
    monkeypatch.chdir(tmp_path)  # the example writes its file into the working directory
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, f"README.md example {index}", "exec"), namespace)  # noqa: S102 (the README's own code)
    listed = capsys.readouterr().out.splitlines()
    (tmp_path / "byom.yaml").write_text(parameter_file, encoding="utf-8")
    settings = settings_from_mapping(load_parameter_file(tmp_path / "byom.yaml"))
    task = settings.tasks[0]
    assert set(task.stage_boundaries) <= {line.split("\t")[0] for line in listed}
    # what the engine does with the task (Engine._build_model)
    staged = build_staged_model(task.model, weights=task.weights or None, input_size=task.input_size,
                                stage_boundaries=task.stage_boundaries or None)
    assert staged.num_stages == len(task.stage_boundaries) + 1 == 4
    source = namespace["model"]
    assert isinstance(source, nn.Module)
    x = torch.randn(2, 3, *task.input_size)
    with torch.no_grad():
        expected = source(x)
    torch.testing.assert_close(run_staged(staged, x), expected, rtol=1e-4, atol=1e-5)
