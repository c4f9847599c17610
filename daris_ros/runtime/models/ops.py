"""Parameter-free steps that stage configs may name next to a model's children.

Many ``forward`` methods do a little work between their children with plain functions
(``torch.flatten(x, 1)``, ``F.relu``, ``x.mean([2, 3])``). A stage config lists children by name,
so these functional steps get names too. None of them has parameters or buffers, so they never
change the state_dict layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Flatten(nn.Module):
    """``torch.flatten(x, 1)``: N x C x H x W -> N x (C*H*W)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(x, 1)


class ReLU(nn.Module):
    """``F.relu(x)`` (DenseNet applies it functionally after ``features``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class GlobalAvgPool(nn.Module):
    """``F.adaptive_avg_pool2d(x, 1)``: N x C x H x W -> N x C x 1 x 1."""

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class MeanHW(nn.Module):
    """``x.mean([2, 3])``: N x C x H x W -> N x C (ShuffleNetV2, MNASNet)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean([2, 3])


class FlattenForLinear(nn.Module):
    """Inserted automatically in front of a top-level linear head.

    Flattens ``x`` to ``N x -1`` only when the linear layer could not take ``x`` as it is (its last
    dimension is not ``in_features``) and flattening makes it fit (``x[0].numel() == in_features``);
    otherwise ``x`` passes unchanged. So it never changes the result of a program that was valid.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = int(in_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2 and x.shape[-1] != self.in_features and x[0].numel() == self.in_features:
            return torch.flatten(x, 1)
        return x

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}"


class ImageNetToInception(nn.Module):
    """Inception/GoogLeNet ``transform_input``: re-normalise from ImageNet mean/std to (x - 0.5) / 0.5.

    Our preprocessing normalises with the ImageNet mean/std; the original Inception weights expect
    pixels scaled to [-1, 1]. Per channel c: ``x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5``.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def forward(self, x: Tensor) -> Tensor:
        channels = [
            x[:, c : c + 1] * (std / 0.5) + (mean - 0.5) / 0.5
            for c, (mean, std) in enumerate(zip(self.MEAN, self.STD, strict=True))
        ]
        return torch.cat(channels, 1)


#: Functional steps a stage config may name (a model child of the same name takes precedence).
OPS: dict[str, Callable[[], nn.Module]] = {
    "flatten": Flatten,
    "relu": ReLU,
    "global_avg_pool": GlobalAvgPool,
    "mean_hw": MeanHW,
}
