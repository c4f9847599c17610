"""A standard 4-level UNet (our own definition) and its four stages.

Architecture (``base_channels=64``): four encoder levels of 64-128-256-512 channels, each a double
convolution (3x3 conv without bias, BatchNorm, ReLU, twice) followed by 2x2 max pooling; a 1024-channel
bottleneck double convolution; four decoder levels, each a 2x2 stride-2 transposed convolution that
halves the channels, concatenation with the encoder output of the same level (skip connection) and a
double convolution; a 1x1 convolution to ``num_classes`` (default 21, PASCAL VOC) logits at the input
resolution. Any input of at least 16x16 works: when a side is not a multiple of 16 the upsampled map is
zero-padded to its skip connection's size.

Stages (the skip connections cross stage boundaries, so stages 0-2 pass a flat tuple)::

    stage 0  "contracting"  enc1..enc4 (+ pool)       x -> (pooled, skip1, skip2, skip3, skip4)
    stage 1  "bottleneck"   bottleneck                (x, skips...) -> (x, skips...)
    stage 2  "expanding"    up4, dec4, .., up1, dec1  (x, skips...) -> 64-channel map at input size
    stage 3  "output"       head (1x1 conv)           -> N x num_classes x H x W logits
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daris_ros.runtime.models.base import StagedModel, check_input_size
from daris_ros.runtime.models.weights import apply_state_dict, load_state_dict_file, warn_random_init

UNET_DEFAULT_CLASSES = 21
UNET_MIN_INPUT = 16
UNET_STAGE_NAMES = ("contracting", "bottleneck", "expanding", "output")
_ENCODERS = ("enc1", "enc2", "enc3", "enc4")
_DECODERS = (("up4", "dec4"), ("up3", "dec3"), ("up2", "dec2"), ("up1", "dec1"))


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)),
            ("bn1", nn.BatchNorm2d(out_channels)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)),
            ("bn2", nn.BatchNorm2d(out_channels)),
            ("relu2", nn.ReLU(inplace=True)),
        ]))


def contract(encoders: Sequence[nn.Module], pool: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    """Encoder levels: returns ``(pooled output of the last level, skip1, .., skip4)``."""
    skips: list[Tensor] = []
    for encoder in encoders:
        x = encoder(x)
        skips.append(x)
        x = pool(x)
    return (x, *skips)


def _pad_to(x: Tensor, like: Tensor) -> Tensor:
    dh = like.shape[-2] - x.shape[-2]
    dw = like.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


def expand(pairs: Sequence[tuple[nn.Module, nn.Module]], state: tuple[Tensor, ...]) -> Tensor:
    """Decoder levels, deepest first, each consuming the skip connection of its level."""
    x, *skips = state
    if len(skips) != len(pairs):
        raise ValueError(f"UNet expanding stage expects {len(pairs)} skip connections, got {len(skips)}")
    for (up, dec), skip in zip(pairs, reversed(skips), strict=True):
        x = _pad_to(up(x), skip)
        x = dec(torch.cat([skip, x], dim=1))
    return x


class UNet(nn.Module):
    """The unstaged UNet (the layout weights files use)."""

    def __init__(self, num_classes: int = UNET_DEFAULT_CLASSES, in_channels: int = 3,
                 base_channels: int = 64) -> None:
        super().__init__()
        c = [base_channels * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.enc1 = DoubleConv(in_channels, c[0])
        self.enc2 = DoubleConv(c[0], c[1])
        self.enc3 = DoubleConv(c[1], c[2])
        self.enc4 = DoubleConv(c[2], c[3])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(c[3], c[4])
        for level in (4, 3, 2, 1):
            self.add_module(f"up{level}", nn.ConvTranspose2d(c[level], c[level - 1], 2, stride=2))
            self.add_module(f"dec{level}", DoubleConv(c[level], c[level - 1]))
        self.head = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        state = contract([getattr(self, n) for n in _ENCODERS], self.pool, x)
        state = (self.bottleneck(state[0]), *state[1:])
        x = expand([(getattr(self, u), getattr(self, d)) for u, d in _DECODERS], state)
        return self.head(x)


class ContractingStage(nn.Module):
    pool: nn.Module  # registered by add_module in __init__, with the encoders

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        for name in (*_ENCODERS, "pool"):
            self.add_module(name, getattr(unet, name))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return contract([getattr(self, n) for n in _ENCODERS], self.pool, x)


class BottleneckStage(nn.Module):
    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.bottleneck = unet.bottleneck

    def forward(self, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (self.bottleneck(state[0]), *state[1:])


class ExpandingStage(nn.Module):
    def __init__(self, unet: UNet) -> None:
        super().__init__()
        for up, dec in _DECODERS:
            self.add_module(up, getattr(unet, up))
            self.add_module(dec, getattr(unet, dec))

    def forward(self, state: tuple[Tensor, ...]) -> Tensor:
        return expand([(getattr(self, u), getattr(self, d)) for u, d in _DECODERS], state)


class OutputStage(nn.Module):
    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.head = unet.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


def build_unet(
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    stages: Sequence[Sequence[str] | str] | None = None,
) -> StagedModel:
    """The built-in staged UNet (its stage split is fixed: ``stages`` must be ``None``)."""
    if stages is not None:
        raise ValueError("unet: the stage split is fixed (contracting/bottleneck/expanding/output) because "
                         "skip connections cross stages; do not give `stages`")
    classes = UNET_DEFAULT_CLASSES if num_classes is None else int(num_classes)
    if classes < 1:
        raise ValueError(f"unet: num_classes must be >= 1, got {classes}")
    size = check_input_size("unet", input_size, (224, 224), UNET_MIN_INPUT)
    unet = UNet(num_classes=classes)
    if weights is not None:
        apply_state_dict(unet, load_state_dict_file(weights), model_name="unet", source=str(weights))
    else:
        warn_random_init("unet")
    unet.eval()
    stages_ = [ContractingStage(unet), BottleneckStage(unet), ExpandingStage(unet), OutputStage(unet)]
    staged = StagedModel(name="unet", kind="segmentation", input_size=size, num_classes=classes,
                         stage_names=UNET_STAGE_NAMES, stages=stages_, unstaged=unet)
    return staged.eval()
