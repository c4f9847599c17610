"""Image preprocessing on the target device (the GPU preprocessing path).

The uint8 image is uploaded first (a quarter of the bytes of float32), then converted, resized and
normalised on ``device``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from daris_ros.runtime.device_copy import to_device

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


class PinnedStaging:
    """Reused page-locked host buffers for uploading bursts of frames (one buffer per shape, grown as needed).

    A buffer is reused only after the copy out of it finished (an event per buffer), so an asynchronous upload
    never reads pixels the next burst is writing."""

    #: Bursts at least this large (frames x bytes) are copied into the pinned buffer by several threads (numpy
    #: releases the GIL while it copies): one thread copies about 5-10 GB/s.
    PARALLEL_BYTES = 8 << 20

    def __init__(self, device: torch.device, threads: int = 4) -> None:
        self._device = device
        self._buffers: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.cuda.Event | None]]] = {}
        self._threads = threads
        self._pool: Any = None

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack equal-shape HxWxC uint8 frames into a pinned buffer and copy it to the device asynchronously
        (on the current stream); returns the NxHxWxC device tensor."""
        shape = (len(frames), *frames[0].shape)
        pool = self._buffers.setdefault(tuple(shape[1:]), [])
        host = None
        for i, (buf, ev) in enumerate(pool):
            if buf.shape[0] >= shape[0] and (ev is None or ev.query()):
                host = buf
                del pool[i]
                break
        if host is None:
            host = torch.empty((max(shape[0], 4), *shape[1:]), dtype=torch.uint8, pin_memory=True)
        view = host.numpy()[: shape[0]]
        if self._threads > 1 and len(frames) > 1 and view.nbytes >= self.PARALLEL_BYTES:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="daris-upload")

            def copy(part: range) -> None:
                for i in part:
                    view[i] = frames[i]
            n = len(frames)
            step = -(-n // self._threads)
            list(self._pool.map(copy, [range(i, min(n, i + step)) for i in range(0, n, step)]))
        else:
            for i, frame in enumerate(frames):
                view[i] = frame
        out = host[: shape[0]].to(self._device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        pool.append((host, ev))
        return out


def preprocess_batch(
    frames: Sequence[torch.Tensor | np.ndarray],
    input_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    staging: PinnedStaging | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Several HxWx3 RGB uint8 frames -> Nx3xH'xW' float32, normalised, on ``device``: the same arithmetic as
    :func:`preprocess`, run once for every group of frames of one size (one upload, one resize, one normalise).

    On a CUDA device with ``staging``, numpy frames of one size are stacked into a pinned buffer and uploaded
    asynchronously. Row i of the result is frame i."""
    dev = torch.device(device)
    out_h, out_w = (int(v) for v in input_size)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault((type(f).__name__, tuple(f.shape), str(getattr(f, "device", "cpu"))), []).append(i)
    if len(groups) == 1 and len(frames) == 1:
        return preprocess(frames[0], input_size, device=dev, mean=mean, std=std)
    result = torch.empty((len(frames), 3, out_h, out_w), dtype=torch.float32, device=dev)
    mean_t, std_t = _stats(tuple(float(v) for v in mean), tuple(float(v) for v in std), dev)
    for idx in groups.values():
        members = [frames[i] for i in idx]
        first = members[0]
        if first.ndim != 3 or first.shape[-1] != 3:  # grey or odd shapes: one at a time
            for i in idx:
                result[i] = preprocess(frames[i], input_size, device=dev, mean=mean, std=std)[0]
            continue
        if isinstance(first, np.ndarray) and dev.type == "cuda" and staging is not None:
            img = staging.upload(members)  # type: ignore[arg-type]
        else:
            img = torch.stack([_as_uint8_tensor(m) for m in members]).to(dev)
        x = img.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if (x.shape[2], x.shape[3]) != (out_h, out_w):
            x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=False)
        x = (x - mean_t) / std_t
        if len(idx) == len(frames):
            return x.contiguous()
        result[to_device(idx, torch.int64, dev)] = x
    return result
