"""ResNet18 / ResNet50 in four stages (the paper's split, section III-C1).

The layers come from torchvision's definitions (``torchvision.models.resnet18(weights=None)``).
The stem (conv1, bn1, relu, maxpool) is grouped with ``layer1`` and the head (avgpool, flatten, fc)
with ``layer4``, so each stage holds one residual layer group::

    stage 0  "stem+layer1"   conv1, bn1, relu, maxpool, layer1
    stage 1  "layer2"        layer2
    stage 2  "layer3"        layer3
    stage 3  "layer4+head"   layer4, avgpool, (flatten), fc
"""

from __future__ import annotations

from collections.abc import Sequence

from daris_ros.runtime.models.base import StagedModel
from daris_ros.runtime.models.generic import build_torchvision_staged, stage_spec

RESNET_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stem+layer1", ("conv1", "bn1", "relu", "maxpool", "layer1")),
    ("layer2", ("layer2",)),
    ("layer3", ("layer3",)),
    ("layer4+head", ("layer4", "avgpool", "fc")),
)

RESNET_NAMES = ("resnet18", "resnet50")


def build_resnet(
    name: str,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    stages: Sequence[Sequence[str] | str] | None = None,
) -> StagedModel:
    """``resnet18``/``resnet50``: the four built-in stages, or ``stages`` if given."""
    if name not in RESNET_NAMES:
        raise ValueError(f"not a built-in ResNet: {name!r} (built-ins: {RESNET_NAMES})")
    names, config = stage_spec(RESNET_STAGES)
    return build_torchvision_staged(
        name,
        stages=config if stages is None else stages,
        stage_names=names if stages is None else None,
        weights=weights,
        num_classes=num_classes,
        input_size=input_size,
        transform_input=None,
    )
