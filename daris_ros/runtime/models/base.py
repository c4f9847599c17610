"""The staged-model container shared by every model family.

A :class:`StagedModel` is an ``nn.Module`` whose ``stages`` run one after another; the scheduler may
preempt only between two stages (DARIS "staging", paper section III-C1). The value passed from one
stage to the next is a tensor or a flat tuple of tensors (the UNet passes its skip connections that
way); ``run_stage`` is always ``x -> x``.

Every stage holds the *same* module objects as the unstaged model it was cut from, under the same
child names, so the weights are shared, never copied.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import cast

from torch import Tensor, nn

#: What flows between stages: one tensor, or a flat tuple of tensors.
StageIO = Tensor | tuple[Tensor, ...]

KINDS = ("classification", "segmentation", "detection")
#: Detections per image a detection model returns (its last stage's K) unless it sets ``max_detections``.
DEFAULT_MAX_DETECTIONS = 100


def submodule(module: nn.Module, name: str) -> nn.Module:
    """The registered child module ``module.<name>``, typed as a module (torch types ``Module.__getattr__`` as
    ``Tensor | Module``: it also finds parameters and buffers)."""
    return cast(nn.Module, getattr(module, name))


def stage_tensors(x: StageIO) -> tuple[Tensor, ...]:
    """The tensors inside a stage's input/output (for ``record_stream``, device checks, ...)."""
    if isinstance(x, Tensor):
        return (x,)
    return tuple(x)


class MergedStage(nn.Module):
    """Runs several stages back to back as one stage (no preemption point between them)."""

    def __init__(self, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(stages)

    def forward(self, x: StageIO) -> StageIO:
        for part in self.parts:
            x = part(x)
        return x


class StagedModel(nn.Module):
    """A DNN cut into sequential stages.

    Attributes:
        name: model name, e.g. ``"resnet18"``.
        kind: ``"classification"`` (output ``N x num_classes`` logits), ``"segmentation"``
            (output ``N x num_classes x H x W`` logits at input resolution) or ``"detection"`` (output
            ``(boxes N x K x 4, scores N x K, labels N x K, counts N)``, boxes x1, y1, x2, y2 in the input's
            pixels, K = ``max_detections``; issue 16's contract, docs/models.md).
        input_size: ``(H, W)`` the model expects (what ``preprocess`` should resize to).
        num_classes: number of output classes.
        stage_names: one human-readable name per stage.
        stages: the stage modules, run in order.
        graph_stages: per stage, whether a GPU backend may capture it as a CUDA graph (``False`` for a
            stage with data-dependent shapes or host synchronisation, e.g. a detector's NMS stage; such a
            stage always runs eagerly). Default: every stage.
    """

    # plain attributes (not submodules): the unstaged model is kept in __dict__ by hand (see __init__); the
    # optional ones are set by some builders only (read them with getattr(model, name, default))
    _unstaged: nn.Module | None
    class_names: tuple[str, ...] | None
    max_detections: int

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        input_size: tuple[int, int],
        num_classes: int,
        stage_names: Sequence[str],
        stages: Sequence[nn.Module],
        unstaged: nn.Module | None = None,
        ignored_weight_prefixes: Sequence[str] = (),
        graph_stages: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(stages) == 0:
            raise ValueError("a staged model needs at least one stage")
        if len(stage_names) != len(stages):
            raise ValueError(f"{len(stage_names)} stage names for {len(stages)} stages")
        if graph_stages is not None and len(graph_stages) != len(stages):
            raise ValueError(f"{len(graph_stages)} graph_stages flags for {len(stages)} stages")
        self.name = name
        self.kind = kind
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = int(num_classes)
        self.stage_names = tuple(stage_names)
        self.stages = nn.ModuleList(stages)
        self.graph_stages: tuple[bool, ...] = (tuple(bool(g) for g in graph_stages) if graph_stages is not None
                                               else (True,) * len(stages))
        # The unstaged model the stages were cut from (shares every module with them). Kept out of
        # the module tree on purpose: registering it would list every parameter twice.
        self.__dict__["_unstaged"] = unstaged
        self._ignored_weight_prefixes = tuple(ignored_weight_prefixes)

    # -- the interface the runtime uses ------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def run_stage(self, index: int, x: StageIO) -> StageIO:
        """Run stage ``index`` (0-based) on ``x``, the previous stage's output (or the image batch)."""
        if not 0 <= index < len(self.stages):
            raise IndexError(f"{self.name}: stage index {index} out of range (0..{len(self.stages) - 1})")
        return self.stages[index](x)

    def forward(self, x: StageIO) -> StageIO:
        for stage in self.stages:
            x = stage(x)
        return x

    def merged(self) -> StagedModel:
        """The same model, with the same (shared) weights, as ONE stage (the ``no_staging`` ablation)."""
        merged = StagedModel(
            name=self.name,
            kind=self.kind,
            input_size=self.input_size,
            num_classes=self.num_classes,
            stage_names=("+".join(self.stage_names),),
            stages=[MergedStage(list(self.stages))],
            unstaged=self._unstaged,
            ignored_weight_prefixes=self._ignored_weight_prefixes,
            graph_stages=(all(self.graph_stages),),
        )
        merged.train(self.training)
        # runtime/models/precision.py; a model's optional class_names and max_detections (detection)
        for attr in ("input_dtype", "memory_format", "precision", "class_names", "max_detections"):
            if attr in self.__dict__:
                setattr(merged, attr, self.__dict__[attr])
        return merged

    # -- extras ------------------------------------------------------------------------------------
    @property
    def unstaged_model(self) -> nn.Module | None:
        """The unstaged model the stages were cut from (same module objects, same weights)."""
        return self._unstaged

    def load_unstaged_state_dict(self, state_dict: Mapping[str, Tensor], *,
                                 source: str = "state_dict") -> None:
        """Load weights given in the UNSTAGED model's layout (checked like ``weights=`` is)."""
        from daris_ros.runtime.models.weights import apply_state_dict

        if self._unstaged is None:
            raise RuntimeError(f"{self.name}: no unstaged model to load a state_dict into")
        apply_state_dict(self._unstaged, state_dict, model_name=self.name, source=source,
                         ignore_prefixes=self._ignored_weight_prefixes)

    def stage_parameter_counts(self) -> list[int]:
        """Parameters per stage (shared modules are counted in every stage that holds them)."""
        return [sum(p.numel() for p in stage.parameters()) for stage in self.stages]

    def iter_stages(self) -> Iterator[tuple[str, nn.Module]]:
        return zip(self.stage_names, self.stages, strict=True)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"num_classes={self.num_classes}, stage_names={self.stage_names}")


def check_input_size(name: str, input_size: Sequence[int] | None, default: tuple[int, int],
                     minimum: int = 1) -> tuple[int, int]:
    """Validate ``(H, W)``; ``None`` gives ``default``."""
    if input_size is None:
        return default
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: input_size must be (H, W), got {input_size!r}") from None
    if h < minimum or w < minimum:
        raise ValueError(f"{name}: input_size {(h, w)} is too small (minimum {minimum}x{minimum})")
    return (h, w)

