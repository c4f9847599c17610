"""Image preprocessing on the target device (the GPU preprocessing path).

The uint8 image is uploaded first (a quarter of the bytes of float32), then converted, resized and
normalised on ``device``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...],
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std as 1x3x1x1 tensors on ``device`` (cached: no host-to-device copy per frame)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean_t, std_t


def _as_uint8_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got numpy dtype {image.dtype}")
        if not image.flags.writeable:  # e.g. np.frombuffer over a ROS message: torch wants writable memory
            image = image.copy()
        return torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image, got torch dtype {image.dtype}")
        return image
    raise TypeError(f"expected a numpy array or torch tensor, got {type(image).__name__}")


def preprocess(
    image_hwc_uint8: torch.Tensor | np.ndarray,
    input_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
) -> torch.Tensor:
    """HxWx3 RGB (or HxWx1 / HxW grey) uint8 image -> 1x3xH'xW' float32, normalised, on ``device``.

    Steps: upload the uint8 image to ``device``; to float in [0, 1]; resize to ``input_size = (H', W')``
    with bilinear interpolation (``align_corners=False, antialias=False``; skipped when the size
    already matches); ``(x - mean) / std`` per channel. A grey image is repeated to three channels.
    ``channels_last=True`` returns the tensor in ``torch.channels_last`` memory format.
    """
    img = _as_uint8_tensor(image_hwc_uint8)
    if img.dim() == 2:
        img = img.unsqueeze(-1)
    if img.dim() != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an HxWx3 or HxWx1 image, got shape {tuple(img.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image of shape {tuple(img.shape)}")
    out_h, out_w = (int(v) for v in input_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need three values (R, G, B)")

    dev = torch.device(device)
    img = img.to(dev, non_blocking=dev.type == "cuda" and img.is_pinned())
    x = img.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)  # 1 x C x H x W
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if (x.shape[2], x.shape[3]) != (out_h, out_w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=False)
    mean_t, std_t = _stats(tuple(float(v) for v in mean), tuple(float(v) for v in std), dev)
    x = (x - mean_t) / std_t
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
