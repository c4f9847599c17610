"""torchvision's semantic segmentation models as staged models (kind ``"segmentation"``).

Four models, built by torchvision itself with ``weights=None, weights_backbone=None`` (never a
download) and without the auxiliary classifier:

* ``deeplabv3_resnet50``: dilated ResNet-50 (output stride 8) + ``DeepLabHead`` (ASPP).
* ``fcn_resnet50``: the same dilated ResNet-50 + ``FCNHead``.
* ``deeplabv3_mobilenet_v3_large``: dilated MobileNetV3-Large ``features`` (output stride 16) + ``DeepLabHead``.
* ``lraspp_mobilenet_v3_large``: MobileNetV3-Large with a low-level (stride 8, block 4) and a high-level
  (stride 16, block 16) feature + ``LRASPPHead``.

Stages. The backbone is torchvision's ``IntermediateLayerGetter`` (an ordered ``ModuleDict`` of the
backbone's children, truncated after the last feature it returns); each backbone stage runs a slice of
its children, the last stage runs the classifier head and the bilinear upsampling to the input
resolution that torchvision's ``forward`` does (``align_corners=False``)::

    resnet50 backbones          stage 0 "stem+layer1+layer2"  conv1, bn1, relu, maxpool, layer1, layer2
                                stage 1 "layer3"              layer3
                                stage 2 "layer4"              layer4
                                stage 3 "head+upsample"       classifier, upsample to input size
    mobilenet_v3_large backbones stage 0 "features0-6"        features 0..6    (output stride 8)
                                stage 1 "features7-12"        features 7..12   (output stride 16)
                                stage 2 "features13-16"       features 13..16  (dilated, stride 16)
                                stage 3 "head+upsample"       classifier, upsample to input size

What flows between stages: one tensor, except for LR-ASPP, whose stages 0-2 pass the flat tuple
``(x, low)`` (``low`` is block 4's output, computed inside stage 0 and used by the head). Every shape is
a function of the input shape only, and nothing reads a value back to the host, so each stage can be
captured in a CUDA graph.

The last stage upsamples to the ``input_size`` the model was built for (torchvision reads the size off
the input image, which the head stage does not see); it checks that the feature maps it receives have
the size that input gives and raises ``ValueError`` otherwise. The runtime always resizes frames to the
model's ``input_size``, so this holds there.

Weights: a state_dict of the unstaged torchvision model (keys ``backbone.*``, ``classifier.*``);
``aux_classifier.*`` keys (torchvision's own COCO checkpoints for DeepLabV3/FCN have them) are ignored.
Staged keys are ``stages.<i>.backbone.<child>.*`` and ``stages.<last>.classifier.*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from daris_ros.runtime.models.base import StagedModel, StageIO, check_input_size, stage_tensors, submodule
from daris_ros.runtime.models.weights import apply_state_dict, load_state_dict_file, warn_random_init

SEGMENTATION_DEFAULT_CLASSES = 21  # PASCAL VOC (background + 20), as torchvision's weights
#: torchvision's reference transforms resize the short side to 520 for these weights; 512x512 is the
#: nearest size divisible by 16 (the coarsest output stride), so every feature map has an exact size.
SEGMENTATION_DEFAULT_INPUT = (512, 512)
HEAD_STAGE_NAME = "head+upsample"
#: Keys of the unstaged model that the staged model does not have (the auxiliary classifier is off).
AUX_CLASSIFIER_PREFIXES = ("aux_classifier.",)

_RESNET_BACKBONE_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stem+layer1+layer2", ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2")),
    ("layer3", ("layer3",)),
    ("layer4", ("layer4",)),
)


def _feature_range(first: int, last: int) -> tuple[str, tuple[str, ...]]:
    return (f"features{first}-{last}", tuple(str(i) for i in range(first, last + 1)))


_MOBILENET_BACKBONE_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    _feature_range(0, 6), _feature_range(7, 12), _feature_range(13, 16),
)


@dataclass(frozen=True, slots=True)
class SegmentationSpec:
    """How one torchvision segmentation model is built and cut."""

    builder: str  # the torchvision.models.segmentation function
    weights_enum: str  # its WeightsEnum (only its metadata is read: class names)
    backbone_stages: tuple[tuple[str, tuple[str, ...]], ...]  # (stage name, backbone children)
    #: output stride of each feature the head reads, by torchvision's return name, in the order the
    #: stages carry them: the last backbone layer's output first, then the kept ones.
    feature_strides: tuple[tuple[str, int], ...]
    has_aux_option: bool  # whether the builder takes ``aux_loss``


SEGMENTATION_SPECS: dict[str, SegmentationSpec] = {
    "deeplabv3_resnet50": SegmentationSpec(
        "deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights", _RESNET_BACKBONE_STAGES, (("out", 8),), True),
    "deeplabv3_mobilenet_v3_large": SegmentationSpec(
        "deeplabv3_mobilenet_v3_large", "DeepLabV3_MobileNet_V3_Large_Weights", _MOBILENET_BACKBONE_STAGES,
        (("out", 16),), True),
    "lraspp_mobilenet_v3_large": SegmentationSpec(
        "lraspp_mobilenet_v3_large", "LRASPP_MobileNet_V3_Large_Weights", _MOBILENET_BACKBONE_STAGES,
        (("high", 16), ("low", 8)), False),
    "fcn_resnet50": SegmentationSpec(
        "fcn_resnet50", "FCN_ResNet50_Weights", _RESNET_BACKBONE_STAGES, (("out", 8),), True),
}

SEGMENTATION_NAMES: tuple[str, ...] = tuple(SEGMENTATION_SPECS)


class BackboneStage(nn.Module):
    """Runs a slice of the backbone's children on ``(x, *carried)`` -> ``(x', *carried, *kept)``.

    ``kept`` are the outputs of the children named in ``keep`` (features the head needs later); a
    lone tensor goes in and out as a tensor, not as a one-tuple.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], keep: Sequence[str] = ()) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(dict(layers))
        self.keep = tuple(keep)

    def forward(self, state: StageIO) -> StageIO:
        x, *carried = stage_tensors(state)
        kept: list[Tensor] = []
        for layer_name, layer in self.backbone.items():
            x = layer(x)
            if layer_name in self.keep:
                kept.append(x)
        out = (x, *carried, *kept)
        return out[0] if len(out) == 1 else out


class HeadStage(nn.Module):
    """The classifier head on the backbone features, then bilinear upsampling to ``output_size``.

    ``feature_names`` name the incoming tensors in order (torchvision's return names). A head that reads
    one feature (``DeepLabHead``, ``FCNHead``) gets the tensor; one that reads several (``LRASPPHead``)
    gets the dict torchvision's ``forward`` passes it.
    """

    def __init__(self, classifier: nn.Module, output_size: tuple[int, int],
                 feature_strides: Sequence[tuple[str, int]]) -> None:
        super().__init__()
        self.classifier = classifier
        self.output_size = output_size
        self.feature_names = tuple(name for name, _ in feature_strides)
        self.expected_sizes = tuple(
            (-(-output_size[0] // stride), -(-output_size[1] // stride)) for _, stride in feature_strides)

    def forward(self, state: StageIO) -> Tensor:
        features = stage_tensors(state)
        if len(features) != len(self.feature_names):
            raise ValueError(f"head stage expects {len(self.feature_names)} feature maps "
                             f"{self.feature_names}, got {len(features)}")
        for name, feature, expected in zip(self.feature_names, features, self.expected_sizes, strict=True):
            if tuple(feature.shape[-2:]) != expected:
                raise ValueError(
                    f"head stage: feature {name!r} is {tuple(feature.shape[-2:])}, but an input of "
                    f"{self.output_size} gives {expected}; the model must run at the input_size it was built for")
        if len(features) == 1:
            logits = self.classifier(features[0])
        else:
            logits = self.classifier(dict(zip(self.feature_names, features, strict=True)))
        return F.interpolate(logits, size=self.output_size, mode="bilinear", align_corners=False)


def torchvision_class_names(name: str) -> tuple[str, ...]:
    """The category names torchvision's weight metadata gives for ``name`` (no download)."""
    from torchvision.models import segmentation

    weights_enum = getattr(segmentation, SEGMENTATION_SPECS[name].weights_enum)
    return tuple(str(c) for c in weights_enum.DEFAULT.meta["categories"])


def build_torchvision_segmentation(name: str, num_classes: int) -> nn.Module:
    """The unstaged torchvision model, randomly initialised (no download), without the aux classifier."""
    from torchvision.models import segmentation

    spec = SEGMENTATION_SPECS[name]
    builder: Callable[..., nn.Module] = getattr(segmentation, spec.builder)
    kwargs: dict[str, object] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if spec.has_aux_option:
        kwargs["aux_loss"] = False
    return builder(**kwargs)


def _backbone_stages(name: str, model: nn.Module, spec: SegmentationSpec) -> list[BackboneStage]:
    getter: Any = model.backbone  # torchvision's IntermediateLayerGetter (torchvision is untyped)
    layers: dict[str, nn.Module] = dict(getter.named_children())
    planned = [child for _, children in spec.backbone_stages for child in children]
    if planned != list(layers):
        raise RuntimeError(f"{name}: torchvision's backbone children {list(layers)} differ from the stage "
                           f"plan {planned}")
    # IntermediateLayerGetter.return_layers: {child name: return name}; the last child is the main output.
    return_layers: dict[str, str] = dict(getter.return_layers)
    main_name, *kept_names = (feature for feature, _ in spec.feature_strides)
    if return_layers.get(planned[-1]) != main_name:
        raise RuntimeError(f"{name}: the backbone's last child does not return {main_name!r} ({return_layers})")
    keep = [child for child, feature in return_layers.items() if feature in kept_names]
    if len(keep) != len(kept_names):
        raise RuntimeError(f"{name}: unexpected backbone return layers {return_layers}")
    stages: list[BackboneStage] = []
    for _, children in spec.backbone_stages:
        if children[-1] in keep:  # a kept feature must be produced inside a stage, not passed out twice
            raise RuntimeError(f"{name}: kept feature of child {children[-1]!r} ends a stage")
        stages.append(BackboneStage([(child, layers[child]) for child in children],
                                    keep=[child for child in children if child in keep]))
    return stages


def build_segmentation(
    name: str,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    stages: Sequence[Sequence[str] | str] | None = None,
) -> StagedModel:
    """A torchvision segmentation model (one of :data:`SEGMENTATION_NAMES`) in its four built-in stages."""
    if name not in SEGMENTATION_SPECS:
        raise ValueError(f"not a built-in segmentation model: {name!r} (built-ins: {SEGMENTATION_NAMES})")
    if stages is not None:
        raise ValueError(f"{name}: the stage split is fixed (the head needs backbone features and upsamples to "
                         "the input size); do not give `stages`")
    classes = SEGMENTATION_DEFAULT_CLASSES if num_classes is None else int(num_classes)
    if classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {classes}")
    size = check_input_size(name, input_size, SEGMENTATION_DEFAULT_INPUT)
    spec = SEGMENTATION_SPECS[name]
    model = build_torchvision_segmentation(name, classes)
    if weights is not None:
        apply_state_dict(model, load_state_dict_file(weights), model_name=name, source=str(weights),
                         ignore_prefixes=AUX_CLASSIFIER_PREFIXES)
    else:
        warn_random_init(name)
    model.eval()
    stage_modules: list[nn.Module] = [*_backbone_stages(name, model, spec),
                                      HeadStage(submodule(model, "classifier"), size, spec.feature_strides)]
    staged = StagedModel(name=name, kind="segmentation", input_size=size, num_classes=classes,
                         stage_names=[*(stage for stage, _ in spec.backbone_stages), HEAD_STAGE_NAME],
                         stages=stage_modules, unstaged=model, ignored_weight_prefixes=AUX_CLASSIFIER_PREFIXES)
    default_names = torchvision_class_names(name)
    staged.class_names = default_names if len(default_names) == classes else None
    return staged.eval()
