"""Model files with a graph: ``torch.export`` programs (``.pt2``) and ONNX files (``.onnx``), staged at named
boundaries.

Both are turned into one ``torch.fx.GraphModule`` (``.pt2``: ``torch.export.load(path).module()``; ``.onnx``:
``onnx2torch.convert`` after :func:`normalise_onnx`), which is cut into stages by topological order: a
**boundary** names a value of the graph, and the stage ends right after the node that computes it. ``N``
boundaries give ``N + 1`` stages. A boundary is

* ``.pt2``: a graph node name of the exported program (``relu_3``, ``add__5``, ``linear``), as
  ``python -m daris_ros.runtime.models.graph_file FILE`` lists them;
* ``.onnx``: a tensor (value) name of the ONNX graph (``/layer2/layer2.1/relu_1/Relu_output_0``, ``add_65``),
  listed the same way.

Each stage is a GraphModule whose inputs are the values that cross the boundary in front of it and whose outputs
are the values that cross the one behind it (a tensor, or a flat tuple of tensors: the StageIO contract); stage 0
takes the image batch, the last stage returns what the whole graph returns (its flat outputs). The stages share
the whole graph's parameter tensors (nothing is copied).

At load, :func:`check_stages` runs the whole graph and the stages on one random input of the task's input size
and requires every value crossing a boundary and the final output to be equal bit for bit
(:class:`StagedOutputMismatch` otherwise, naming the boundary and the value).
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from daris_ros.parameter_table import MODEL_FILE_SUFFIXES
from daris_ros.runtime.models.base import KINDS, StagedModel, StageIO, check_input_size

log = logging.getLogger("daris_ros.models")

#: File suffixes (lower case) loaded by :func:`build_graph_file_staged`, and their format names.
GRAPH_FILE_FORMATS: dict[str, str] = dict(zip(MODEL_FILE_SUFFIXES, ("torch.export", "ONNX"), strict=True))
#: The default input size of a model file (``input_size`` overrides it).
DEFAULT_FILE_INPUT_SIZE = (224, 224)
#: The highest ONNX opset that onnx2torch 1.5 converts every common operator of; newer files are converted
#: down to it with ``onnx.version_converter`` first.
ONNX_TARGET_OPSET = 17
#: Node ops that compute something (placeholders, get_attr and the output are not stage work).
_COMPUTE_OPS = ("call_function", "call_module", "call_method")


class BoundaryError(ValueError):
    """A stage boundary that does not name a value of the graph, or boundaries out of order."""


class StagedOutputMismatch(ValueError):
    """The staged graph does not reproduce the whole graph (the start-up check)."""


def is_graph_model_file(model: str) -> bool:
    """Whether ``model`` (a task's ``model`` value) names a ``.pt2``/``.onnx`` file rather than a model name."""
    return Path(str(model).strip()).suffix.lower() in GRAPH_FILE_FORMATS


@dataclass(frozen=True, slots=True)
class LoadedGraph:
    """A model file as one GraphModule, and how its boundary names map to the graph's nodes."""

    graph_module: fx.GraphModule
    #: boundary name -> the fx node computing that value (every name a boundary may use)
    boundary_nodes: dict[str, fx.Node]
    format_name: str


# =========================================================================================== loading
def load_graph_file(path: str | Path) -> LoadedGraph:
    """Load a ``.pt2`` or ``.onnx`` file as one GraphModule (CPU, eval). FileNotFoundError, ValueError."""
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in GRAPH_FILE_FORMATS:
        raise ValueError(f"{file}: not a model file with a graph (suffixes: {', '.join(GRAPH_FILE_FORMATS)})")
    if not file.is_file():
        raise FileNotFoundError(2, f"{GRAPH_FILE_FORMATS[suffix]} model file not found", str(file))
    return _load_exported_program(file) if suffix == ".pt2" else _load_onnx(file)


def _load_exported_program(file: Path) -> LoadedGraph:
    try:
        program = torch.export.load(str(file))
    except Exception as exc:  # noqa: BLE001 (a bad archive raises many types)
        raise ValueError(f"cannot load torch.export program {file}: {exc}") from exc
    graph_module = program.module()
    _check_one_input(graph_module, file)
    names = {node.name: node for node in graph_module.graph.nodes if node.op in _COMPUTE_OPS}
    # (an exported program's module has no train/eval switch: it always runs as exported, i.e. in eval mode
    # when exported from an eval-mode model)
    return LoadedGraph(graph_module=graph_module, boundary_nodes=names, format_name="torch.export")


def normalise_onnx(model: Any) -> Any:
    """Rewrite an ``onnx.ModelProto`` in place, without changing what it computes, into the form onnx2torch
    converts: ``Constant`` nodes and ``Identity`` nodes of an initializer become initializers (the exporters
    emit them for weights; onnx2torch wants Conv weights as initializers), ``Reshape`` with ``allowzero=1`` and
    a constant shape without zeros becomes ``allowzero=0`` (the same), and an opset above
    :data:`ONNX_TARGET_OPSET` is converted down to it. Returns the (possibly new) model."""
    import onnx
    from onnx import numpy_helper, version_converter

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    kept_nodes = []
    for node in graph.node:
        value_attribute = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and len(node.attribute) == 1 and value_attribute:
            source: Any = value_attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in initializers:
            source = initializers[node.input[0]]
        else:
            if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in initializers:
                shape = numpy_helper.to_array(initializers[node.input[1]]).tolist()
                for attribute in node.attribute:
                    if attribute.name == "allowzero" and attribute.i == 1 and 0 not in shape:
                        attribute.i = 0
            kept_nodes.append(node)
            continue
        hoisted = onnx.TensorProto()
        hoisted.CopyFrom(source)
        hoisted.name = node.output[0]
        graph.initializer.append(hoisted)
        initializers[hoisted.name] = hoisted
    del graph.node[:]
    graph.node.extend(kept_nodes)
    default_opset = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if default_opset and default_opset[0] > ONNX_TARGET_OPSET:
        model = version_converter.convert_version(model, ONNX_TARGET_OPSET)
    return model


def _load_onnx(file: Path) -> LoadedGraph:
    try:
        import onnx
        from onnx2torch import convert
        from onnx2torch.onnx_graph import OnnxGraph
    except ImportError as exc:
        raise ValueError(f"{file}: ONNX files need the onnx and onnx2torch packages (requirements/base.txt): "
                         f"{exc}") from exc
    try:
        model = normalise_onnx(onnx.load(str(file)))
    except Exception as exc:  # noqa: BLE001 (protobuf and the version converter raise many types)
        raise ValueError(f"cannot read ONNX file {file}: {exc}") from exc
    try:
        graph_module = convert(model)
    except NotImplementedError as exc:
        raise ValueError(f"{file}: onnx2torch cannot convert this graph: {exc}") from exc
    _check_one_input(graph_module, file)
    # onnx2torch makes one call_module node per ONNX node, its target the node's unique name.
    node_by_target = {str(node.target): node for node in graph_module.graph.nodes if node.op == "call_module"}
    names: dict[str, fx.Node] = {}
    for unique_name, onnx_node in OnnxGraph(model.graph).nodes.items():
        fx_node = node_by_target.get(unique_name)
        if fx_node is None:
            continue
        for value_name in onnx_node.output_values:
            if value_name:
                names[value_name] = fx_node
    return LoadedGraph(graph_module=graph_module.eval(), boundary_nodes=names, format_name="ONNX")


def _check_one_input(graph_module: fx.GraphModule, file: Path) -> None:
    inputs = [node.name for node in graph_module.graph.nodes if node.op == "placeholder"]
    if len(inputs) != 1:
        raise ValueError(f"{file}: the graph must take exactly one input (the image batch N x 3 x H x W); it "
                         f"takes {len(inputs)}: {inputs}")


# =========================================================================================== cutting
class GraphStage(nn.Module):
    """One stage cut from a graph: runs its GraphModule on a tensor or a flat tuple of tensors (StageIO)."""

    def __init__(self, graph_module: fx.GraphModule, input_names: Sequence[str], output_names: Sequence[str]
                 ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def forward(self, x: StageIO) -> StageIO:
        if isinstance(x, Tensor):
            return self.graph_module(x)
        return self.graph_module(*x)


def resolve_boundaries(loaded: LoadedGraph, boundaries: Sequence[str], *, model_name: str) -> list[int]:
    """The compute-order position of the node after which each boundary ends a stage (BoundaryError)."""
    compute = [node for node in loaded.graph_module.graph.nodes if node.op in _COMPUTE_OPS]
    position = {node: index for index, node in enumerate(compute)}
    kind = "node" if loaded.format_name == "torch.export" else "tensor"
    cuts: list[int] = []
    for index, boundary in enumerate(boundaries):
        node = loaded.boundary_nodes.get(boundary)
        if node is None:
            near = difflib.get_close_matches(boundary, list(loaded.boundary_nodes), n=8, cutoff=0.6)
            hint = f"near names: {near}" if near else f"first names: {list(loaded.boundary_nodes)[:8]}"
            raise BoundaryError(f"{model_name}: stage boundary {index} {boundary!r} is not a {kind} name of the "
                                f"{loaded.format_name} graph; {hint} (all of them: python -m "
                                "daris_ros.runtime.models.graph_file FILE)")
        cut = position[node]
        if cuts and cut <= cuts[-1]:
            raise BoundaryError(f"{model_name}: stage boundary {index} {boundary!r} does not come after boundary "
                                f"{index - 1} {boundaries[index - 1]!r} in the graph's order; give the "
                                "boundaries in the order the graph computes them")
        if cut == len(compute) - 1:
            raise BoundaryError(f"{model_name}: stage boundary {index} {boundary!r} is the graph's last "
                                "operation, which would leave an empty last stage")
        cuts.append(cut)
    return cuts


def split_graph(graph_module: fx.GraphModule, cuts: Sequence[int]) -> list[GraphStage]:
    """Cut ``graph_module`` after the compute nodes at positions ``cuts`` (strictly increasing)."""
    nodes = list(graph_module.graph.nodes)
    placeholders = [node for node in nodes if node.op == "placeholder"]
    output_node = next(node for node in nodes if node.op == "output")
    compute = [node for node in nodes if node.op in _COMPUTE_OPS]
    ends = [*cuts, len(compute) - 1]
    stage_count = len(ends)
    stage_of: dict[fx.Node, int] = {node: -1 for node in placeholders}
    start = 0
    for stage, end in enumerate(ends):
        for node in compute[start:end + 1]:
            stage_of[node] = stage
        start = end + 1

    def last_use(node: fx.Node) -> int:
        return max((stage_count if user.op == "output" else stage_of[user] for user in node.users), default=-1)

    values = [*placeholders, *compute]
    crossing = [[node for node in values if stage_of[node] <= stage < last_use(node)]
                for stage in range(stage_count - 1)]
    final_outputs = _flat_nodes(output_node.args[0])

    stages: list[GraphStage] = []
    start = 0
    for stage, end in enumerate(ends):
        inputs = placeholders if stage == 0 else crossing[stage - 1]
        outputs = crossing[stage] if stage < stage_count - 1 else final_outputs
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in inputs:
            env[node] = graph.placeholder(node.name)
            env[node].meta = dict(node.meta)

        def lookup(node: fx.Node, env: dict[fx.Node, fx.Node] = env, graph: fx.Graph = graph) -> fx.Node:
            if node not in env and node.op == "get_attr":  # parameters/constants: read where used
                env[node] = graph.get_attr(str(node.target))
            return env[node]

        for node in compute[start:end + 1]:
            env[node] = graph.node_copy(node, lookup)
        mapped = [lookup(node) if isinstance(node, fx.Node) else node for node in outputs]
        graph.output(mapped[0] if len(mapped) == 1 else tuple(mapped))
        graph.lint()
        stage_module = fx.GraphModule(graph_module, graph, class_name=f"GraphStage{stage}")
        stages.append(GraphStage(stage_module, [n.name for n in inputs],
                                 [n.name if isinstance(n, fx.Node) else repr(n) for n in outputs]))
        start = end + 1
    return stages


def _flat_nodes(structure: Any) -> list[Any]:
    """The leaves of an output structure (nested tuples/lists/dicts of nodes), in order."""
    if isinstance(structure, list | tuple):
        return [leaf for item in structure for leaf in _flat_nodes(item)]
    if isinstance(structure, dict):
        return [leaf for item in structure.values() for leaf in _flat_nodes(item)]
    return [structure]


# =========================================================================================== the check
class _Recorder(fx.Interpreter):
    """Runs the whole graph node by node and keeps a copy of the values named in ``keep`` as they are computed
    (a later in-place op may change the tensor itself)."""

    def __init__(self, graph_module: fx.GraphModule, keep: set[str]) -> None:
        super().__init__(graph_module)
        self.keep = keep
        self.recorded: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.name in self.keep:
            self.recorded[n.name] = result.clone() if isinstance(result, Tensor) else result
        return result


def check_stages(graph_module: fx.GraphModule, stages: Sequence[GraphStage], boundaries: Sequence[str],
                 input_size: tuple[int, int], *, model_name: str, seed: int = 0) -> None:
    """Run the whole graph and the stages on one random ``1 x 3 x H x W`` input; every value crossing boundary
    ``k`` must be a tensor equal to the whole graph's, and so must the final outputs (StagedOutputMismatch)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, *input_size, generator=generator)
    keep = {name for stage in stages[:-1] for name in stage.output_names}
    recorder = _Recorder(graph_module, keep)
    with torch.no_grad():
        whole_outputs = _flat_nodes(recorder.run(image.clone()))
        x: StageIO = image.clone()
        for index, stage in enumerate(stages):
            try:
                x = stage(x)
            except Exception as exc:  # noqa: BLE001 (any op error: name the stage)
                raise StagedOutputMismatch(f"{model_name}: stage {index} fails on a {tuple(image.shape)} "
                                           f"input: {type(exc).__name__}: {exc}") from exc
            produced = [x] if isinstance(x, Tensor) else list(x)
            last = index == len(stages) - 1
            expected = whole_outputs if last else [recorder.recorded[n] for n in stage.output_names]
            where = "the whole model's output" if last else f"boundary {index} {boundaries[index]!r}"
            for name, got, want in zip(stage.output_names, produced, expected, strict=True):
                _compare(model_name, where, name, got, want)


def _compare(model_name: str, where: str, name: str, got: Any, want: Any) -> None:
    if not isinstance(got, Tensor) or not isinstance(want, Tensor):
        raise StagedOutputMismatch(f"{model_name}: at {where}, value {name!r} is {type(want).__name__}, not a "
                                   "tensor; only tensors may cross a stage boundary (move the boundary)")
    if got.shape != want.shape or got.dtype != want.dtype:
        raise StagedOutputMismatch(f"{model_name}: at {where}, value {name!r}: staged {tuple(got.shape)} "
                                   f"{got.dtype} vs whole {tuple(want.shape)} {want.dtype}")
    if not torch.equal(got, want):
        difference = (got.double() - want.double()).abs().max().item() if got.is_floating_point() else "n/a"
        raise StagedOutputMismatch(f"{model_name}: at {where}, value {name!r} differs from the whole model's "
                                   f"(max abs difference {difference})")


# =========================================================================================== the staged model
def _infer_kind(outputs: Sequence[Tensor], input_size: tuple[int, int], file: Path) -> tuple[str, int]:
    """``(kind, num_classes)`` from the whole graph's outputs on a batch of one."""
    if len(outputs) == 1 and outputs[0].dim() == 2:
        return "classification", int(outputs[0].shape[1])
    if len(outputs) == 1 and outputs[0].dim() == 4 and tuple(outputs[0].shape[2:]) == input_size:
        return "segmentation", int(outputs[0].shape[1])
    if (len(outputs) == 4 and "detection" in KINDS and outputs[0].dim() == 3 and outputs[0].shape[-1] == 4
            and outputs[2].dtype == torch.int64 and outputs[3].dim() == 1):
        return "detection", 0
    shapes = [tuple(t.shape) for t in outputs]
    raise ValueError(f"{file}: cannot tell the model's kind from its outputs {shapes} for a 1 x 3 x "
                     f"{input_size[0]} x {input_size[1]} input: expected N x C (classification) or N x C x H x W "
                     "at the input size (segmentation)")


def build_graph_file_staged(
    name: str,
    path: str,
    *,
    boundaries: Sequence[str] | None,
    num_classes: int | None,
    input_size: Sequence[int] | None,
    kind: str | None,
) -> StagedModel:
    """A ``.pt2``/``.onnx`` model file, cut at ``boundaries`` (None or empty: one stage) and checked."""
    file = Path(path).expanduser()
    size = check_input_size(name, input_size, DEFAULT_FILE_INPUT_SIZE)
    loaded = load_graph_file(file)
    boundary_names = [str(b) for b in boundaries or ()]
    cuts = resolve_boundaries(loaded, boundary_names, model_name=name)
    if not cuts:
        log.info("%s: no stage boundaries given for %s; running it as one stage", name, file)
    stages = split_graph(loaded.graph_module, cuts)
    check_stages(loaded.graph_module, stages, boundary_names, size, model_name=name)
    with torch.no_grad():
        probe = _flat_nodes(loaded.graph_module(torch.zeros(1, 3, *size)))
    inferred_kind, inferred_classes = _infer_kind(probe, size, file)
    if kind is not None and kind != inferred_kind:
        raise ValueError(f"{name}: kind {kind!r} does not match the outputs of {file} ({inferred_kind})")
    ends = ["input", *boundary_names, "output"]
    stage_names = [f"{ends[i]}..{ends[i + 1]}" for i in range(len(ends) - 1)] if boundary_names else ["all"]
    staged = StagedModel(name=name, kind=inferred_kind, input_size=size,
                         num_classes=num_classes if num_classes is not None else inferred_classes,
                         stage_names=stage_names, stages=stages, unstaged=loaded.graph_module)
    return staged.eval()


# =========================================================================================== listing names
def describe_boundaries(path: str | Path, input_size: tuple[int, int] = DEFAULT_FILE_INPUT_SIZE) -> list[str]:
    """One line per name a boundary may use, in graph order: the name and the shape of its value on a batch of
    one (for choosing boundaries; names of non-tensor values are left out)."""
    loaded = load_graph_file(path)
    shapes: dict[fx.Node, str] = {}

    class _Shapes(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            shapes[n] = "x".join(map(str, result.shape)) if isinstance(result, Tensor) else type(result).__name__
            return result

    with torch.no_grad():
        _Shapes(loaded.graph_module).run(torch.zeros(1, 3, *input_size))
    order = {node: index for index, node in enumerate(loaded.graph_module.graph.nodes)}
    named = sorted(loaded.boundary_nodes.items(), key=lambda item: order[item[1]])
    return [f"{name}\t{shapes[node]}" for name, node in named if node in shapes and shapes[node][0].isdigit()]


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """``python -m daris_ros.runtime.models.graph_file FILE [H W]``: the boundary names of a model file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 3):
        out("usage: python -m daris_ros.runtime.models.graph_file MODEL.pt2|MODEL.onnx [HEIGHT WIDTH]")
        return 2
    size = (int(args[1]), int(args[2])) if len(args) == 3 else DEFAULT_FILE_INPUT_SIZE
    for line in describe_boundaries(args[0], size):
        out(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
