"""User models: any torchvision classification model by name, or a TorchScript file.

Stage config format (``stages``): a list of stages, each a list of names. A name is either a
top-level child of the model (as listed by ``model.named_children()``) or a functional step from
:data:`daris_ros.runtime.models.ops.OPS` (``flatten``, ``relu``, ``global_avg_pool``, ``mean_hw``).
Every child must appear exactly once, in registration order (the order ``named_children()`` gives,
which for torchvision models is the order ``forward`` uses them). A stage given as a plain string
is a stage of that one name. A child that is an ``nn.ModuleList`` runs its members in order.

A ``flatten`` is inserted automatically in front of a top-level linear head (an ``nn.Linear``, or
an ``nn.Sequential`` whose first layer after any Dropout/Identity is an ``nn.Linear``) when, and
only when, the incoming tensor does not fit the linear layer as it is but fits it flattened
(see :class:`~daris_ros.runtime.models.ops.FlattenForLinear`).

Without ``stages`` the model runs as ONE stage through its own ``forward`` (always exact).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from daris_ros.runtime.models.base import DEFAULT_MAX_DETECTIONS, KINDS, StagedModel, StageIO, check_input_size
from daris_ros.runtime.models.ops import OPS, FlattenForLinear, ImageNetToInception
from daris_ros.runtime.models.weights import apply_state_dict, load_state_dict_file, warn_random_init

log = logging.getLogger("daris_ros.models")

DEFAULT_INPUT_SIZE = (224, 224)

#: torchvision models with an auxiliary classifier: built with ``aux_logits=False``; the aux head's
#: keys in a weights file are ignored.
AUX_PREFIXES: dict[str, tuple[str, ...]] = {
    "inception_v3": ("AuxLogits.",),
    "googlenet": ("aux1.", "aux2."),
}

#: Minimum input side per torchvision model where the architecture needs one.
MIN_INPUT: dict[str, int] = {"inception_v3": 75}


class ChainStage(nn.Module):
    """A stage that runs named modules one after another.

    The children keep the names they have in the unstaged model (so ``stages.<i>.<child>.*`` maps to
    ``<child>.*`` of the unstaged state_dict). A ``ModuleList`` child runs its members in order.
    """

    def __init__(self, steps: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self._is_list: list[bool] = []
        for name, module in steps:
            self.add_module(name, module)
            self._is_list.append(_original_name(module) == "ModuleList")

    def forward(self, x: StageIO) -> StageIO:
        for module, is_list in zip(self.children(), self._is_list, strict=True):
            if is_list:
                for member in module.children():
                    x = member(x)
            else:
                x = module(x)
        return x


class WholeModelStage(nn.Module):
    """One stage that is the entire model, run through its own ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: StageIO) -> StageIO:
        return self.model(x)


def _original_name(module: nn.Module) -> str:
    """The class name, also for TorchScript modules (which all share one Python class)."""
    return str(getattr(module, "original_name", type(module).__name__))


def _linear_head_in_features(module: nn.Module) -> int | None:
    """``in_features`` if ``module`` is a linear head (see the module docstring), else ``None``."""
    kind = _original_name(module)
    if kind == "Linear":
        weight = getattr(module, "weight", None)
        return int(weight.shape[1]) if weight is not None else None
    if kind == "Sequential":
        for child in module.children():
            if _original_name(child) in ("Dropout", "Identity"):
                continue
            return _linear_head_in_features(child) if _original_name(child) == "Linear" else None
    return None


def normalize_stage_config(stages: Sequence[Sequence[str] | str], model_name: str) -> list[list[str]]:
    """Check the shape of a stage config: a non-empty list of non-empty lists of strings."""
    if isinstance(stages, str) or not isinstance(stages, Sequence) or len(stages) == 0:
        raise ValueError(f"{model_name}: stages must be a non-empty list of stages (lists of child names), "
                         f"got {stages!r}")
    out: list[list[str]] = []
    for i, stage in enumerate(stages):
        entries = [stage] if isinstance(stage, str) else stage
        if not isinstance(entries, Sequence) or len(entries) == 0:
            raise ValueError(f"{model_name}: stage {i} must be a non-empty list of child names, "
                             f"got {stage!r}")
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                raise ValueError(f"{model_name}: stage {i}: entries must be child names (strings), "
                                 f"got {entry!r}")
        out.append(list(entries))
    return out


def build_chain_stages(
    model: nn.Module,
    stages: Sequence[Sequence[str] | str],
    *,
    model_name: str,
    prefix_ops: Sequence[tuple[str, nn.Module]] = (),
) -> tuple[list[str], list[nn.Module]]:
    """Cut ``model`` into :class:`ChainStage` s following a stage config (validated; ValueError).

    ``prefix_ops`` are parameter-free steps put in front of the first stage (e.g. Inception's
    ``transform_input``). Returns ``(stage_names, stage_modules)``.
    """
    config = normalize_stage_config(stages, model_name)
    children: dict[str, nn.Module] = dict(model.named_children())
    order = list(children)
    direct = [n for n, _ in model.named_parameters(recurse=False)]
    direct += [n for n, _ in model.named_buffers(recurse=False)]
    if direct:
        raise ValueError(
            f"{model_name}: the top-level module holds parameters/buffers {direct[:5]} that its forward uses "
            "outside its children, so it cannot be cut into stages by children; give no `stages` to run it "
            "as one stage")

    used: list[str] = []
    for i, entries in enumerate(config):
        for entry in entries:
            if entry in children:
                if entry in used:
                    raise ValueError(f"{model_name}: child {entry!r} appears more than once in the "
                                     "stage config")
                used.append(entry)
            elif entry not in OPS:
                raise ValueError(
                    f"{model_name}: stage {i}: unknown child {entry!r}; top-level children are {order} "
                    f"and functional steps are {sorted(OPS)}")
    missing = [n for n in order if n not in used]
    if missing:
        raise ValueError(f"{model_name}: children missing from the stage config: {missing} "
                         f"(every top-level child must be in exactly one stage, in the order {order})")
    for position, (got, expected) in enumerate(zip(used, order, strict=True)):
        if got != expected:
            raise ValueError(f"{model_name}: child {got!r} is out of order (position {position} must be "
                             f"{expected!r}; the order is {order})")

    names: list[str] = []
    modules: list[nn.Module] = []
    for i, entries in enumerate(config):
        steps: list[tuple[str, nn.Module]] = list(prefix_ops) if i == 0 else []
        taken = {n for n, _ in steps} | set(children)
        for entry in entries:
            if entry in children:
                in_features = _linear_head_in_features(children[entry])
                if in_features is not None:
                    steps.append((_fresh_name("auto_flatten", taken), FlattenForLinear(in_features)))
                steps.append((entry, children[entry]))
            else:
                steps.append((_fresh_name(entry, taken), OPS[entry]()))
        names.append("+".join(entries))
        modules.append(ChainStage(steps))
    return names, modules


def _fresh_name(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def torchvision_names() -> list[str]:
    """The torchvision classification model names (``list_models(module=torchvision.models)``)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, *, num_classes: int | None, transform_input: bool) -> nn.Module:
    """An unstaged, randomly initialised torchvision classifier (no download: ``weights=None``)."""
    import torchvision

    kwargs: dict[str, object] = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in AUX_PREFIXES:
        kwargs.update(aux_logits=False, init_weights=True, transform_input=transform_input)
    return torchvision.models.get_model(name, **kwargs)


def build_torchvision_staged(
    name: str,
    *,
    stages: Sequence[Sequence[str] | str] | None,
    stage_names: Sequence[str] | None = None,
    weights: str | None,
    num_classes: int | None,
    input_size: Sequence[int] | None,
    transform_input: bool | None,
) -> StagedModel:
    """A torchvision classification model, staged by ``stages`` (or as one stage when ``None``)."""
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
    size = check_input_size(name, input_size, _default_size(name), MIN_INPUT.get(name, 1))
    if transform_input is None:
        # torchvision turns transform_input on exactly when it loads its own pretrained weights.
        transform_input = weights is not None and name in AUX_PREFIXES
    if transform_input and name not in AUX_PREFIXES:
        raise ValueError(f"{name}: transform_input only applies to {sorted(AUX_PREFIXES)}")
    model = build_torchvision_model(name, num_classes=num_classes, transform_input=bool(transform_input))
    ignore = AUX_PREFIXES.get(name, ())
    if weights is not None:
        apply_state_dict(model, load_state_dict_file(weights), model_name=name, source=str(weights),
                         ignore_prefixes=ignore)
    else:
        warn_random_init(name)
    model.eval()

    names: list[str]
    modules: list[nn.Module]
    if stages is None:
        log.info("%s: no stage boundaries given; running it as one stage", name)
        names, modules = ["all"], [WholeModelStage(model)]
    else:
        prefix = [("transform_input", ImageNetToInception())] if transform_input else []
        names, modules = build_chain_stages(model, stages, model_name=name, prefix_ops=prefix)
        if stage_names is not None:
            names = list(stage_names)
    staged = StagedModel(name=name, kind="classification", input_size=size,
                         num_classes=num_classes if num_classes is not None else 1000,
                         stage_names=names, stages=modules, unstaged=model, ignored_weight_prefixes=ignore)
    return staged.eval()


def _default_size(name: str) -> tuple[int, int]:
    return (299, 299) if name == "inception_v3" else DEFAULT_INPUT_SIZE


def _infer_num_classes(model: nn.Module) -> int | None:
    """Output channels of the last Linear/Conv layer (the head, for ordinary models)."""
    last: int | None = None
    for module in model.modules():
        if _original_name(module) in ("Linear", "Conv2d", "Conv1d", "Conv3d"):
            weight = getattr(module, "weight", None)
            if weight is not None:
                last = int(weight.shape[0])
    return last


def build_torchscript_staged(
    name: str,
    path: str,
    *,
    stages: Sequence[Sequence[str] | str] | None,
    weights: str | None,
    num_classes: int | None,
    input_size: Sequence[int] | None,
    kind: str | None,
) -> StagedModel:
    """A TorchScript file (``torch.jit.save``), staged by its top-level children."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(2, "TorchScript file not found", str(file))
    try:
        model = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (torch raises many types for a bad archive)
        raise ValueError(f"{name}: cannot load TorchScript file {file}: {exc}") from exc
    if weights is not None:
        apply_state_dict(model, load_state_dict_file(weights), model_name=name, source=str(weights))
    model.eval()
    declared = _script_attributes(model, name)
    kind = kind or str(declared.get("kind", "classification"))
    if kind != declared.get("kind", kind):
        raise ValueError(f"{name}: kind {kind!r} does not match the file's kind attribute {declared['kind']!r}")
    if num_classes is None:
        num_classes = declared.get("num_classes") or _infer_num_classes(model)  # type: ignore[assignment]
        if num_classes is None:
            raise ValueError(f"{name}: cannot infer num_classes from {file}; give num_classes")
    size = check_input_size(name, input_size, DEFAULT_INPUT_SIZE)
    names: list[str]
    modules: list[nn.Module]
    if stages is None:
        log.info("%s: no stage boundaries given for TorchScript file %s; running it as one stage", name, file)
        names, modules = ["all"], [WholeModelStage(model)]
    else:
        names, modules = build_chain_stages(model, stages, model_name=name)
    staged = StagedModel(name=name, kind=kind, input_size=size, num_classes=int(num_classes),
                         stage_names=names, stages=modules, unstaged=model)
    if "class_names" in declared:
        class_names = declared["class_names"]
        assert isinstance(class_names, tuple)  # a tuple of str, checked by _script_attributes
        staged.class_names = class_names
    if kind == "detection":
        max_detections = declared.get("max_detections", DEFAULT_MAX_DETECTIONS)
        assert isinstance(max_detections, int)  # checked by _script_attributes
        staged.max_detections = int(max_detections)
    return staged.eval()


#: Attributes a scripted module may declare about itself (``self.kind: str = "detection"`` in ``__init__``
#: before ``torch.jit.script``), read by :func:`build_torchscript_staged`.
SCRIPT_ATTRIBUTES = ("kind", "num_classes", "class_names", "max_detections")


def _script_attributes(model: nn.Module, name: str) -> dict[str, object]:
    """The :data:`SCRIPT_ATTRIBUTES` a TorchScript module carries, checked (ValueError)."""
    found: dict[str, object] = {}
    kind = getattr(model, "kind", None)
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"{name}: the file's kind attribute {kind!r} is not one of {KINDS}")
        found["kind"] = str(kind)
    for attr in ("num_classes", "max_detections"):
        value = getattr(model, attr, None)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: the file's {attr} attribute must be an integer >= 1, got {value!r}")
            found[attr] = int(value)
    names = getattr(model, "class_names", None)
    if names is not None:
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{name}: the file's class_names attribute must be a list of strings")
        found["class_names"] = tuple(names)
    return found


def stage_spec(spec: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[str], list[list[str]]]:
    """Split a built-in ``((stage name, (children...)), ...)`` table into names and a stage config."""
    return [n for n, _ in spec], [list(children) for _, children in spec]

