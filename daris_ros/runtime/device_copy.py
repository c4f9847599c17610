"""Small host values (row indices, per-row factors) as tensors on the device, without waiting for it."""

from __future__ import annotations

from typing import Any

import torch


def to_device(values: list[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``; to a CUDA device through page-locked memory, asynchronously on the
    current stream (``torch.tensor(values, device=cuda)`` copies from pageable memory and waits for the stream, so
    the engine's loop would wait behind the stream's kernels). torch's page-locked allocator keeps the host block
    until the copy is done."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
