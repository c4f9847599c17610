"""InceptionV3 in four stages, by block groups (torchvision's ``inception_v3`` layers).

::

    stage 0  "stem"          [transform_input], Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, maxpool1,
                             Conv2d_3b_1x1, Conv2d_4a_3x3, maxpool2
    stage 1  "mixed_5"       Mixed_5b, Mixed_5c, Mixed_5d          (35x35 grid at 299 input)
    stage 2  "mixed_6"       Mixed_6a, Mixed_6b .. Mixed_6e        (17x17 grid)
    stage 3  "mixed_7+head"  Mixed_7a, Mixed_7b, Mixed_7c, avgpool, dropout, (flatten), fc

* Auxiliary classifier: built with ``aux_logits=False``. torchvision runs it only in training mode and
  never returns it in eval, so inference output is unchanged; ``AuxLogits.*`` keys in a weights file
  are ignored (torchvision's own checkpoint has them).
* ``transform_input``: re-normalises ImageNet-mean/std input to the [-1, 1] scaling the original
  Google weights expect. Default: on when a weights file is given, off otherwise (torchvision does
  the same: it enables it exactly when loading its pretrained weights). Override with
  ``transform_input=True/False``. When on, it is the first step of stage 0.
* Input size: 299x299 by default (torchvision's native size); any size >= 75x75 works, 224x224
  included (the paper's setting; the last grid is then 5x5 instead of 8x8, and global average
  pooling makes the head size-independent).
"""

from __future__ import annotations

from collections.abc import Sequence

from daris_ros.runtime.models.base import StagedModel
from daris_ros.runtime.models.generic import build_torchvision_staged, stage_spec

INCEPTION_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stem", ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3", "maxpool2")),
    ("mixed_5", ("Mixed_5b", "Mixed_5c", "Mixed_5d")),
    ("mixed_6", ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")),
    ("mixed_7+head", ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool", "dropout", "fc")),
)


def build_inception_v3(
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    stages: Sequence[Sequence[str] | str] | None = None,
    transform_input: bool | None = None,
) -> StagedModel:
    """``inception_v3``: the four built-in stages, or ``stages`` if given."""
    names, config = stage_spec(INCEPTION_STAGES)
    return build_torchvision_staged(
        "inception_v3",
        stages=config if stages is None else stages,
        stage_names=names if stages is None else None,
        weights=weights,
        num_classes=num_classes,
        input_size=input_size,
        transform_input=transform_input,
    )
