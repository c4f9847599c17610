"""Turning a model's logits into the small result a ROS message carries."""

from __future__ import annotations

import torch
from torch import Tensor


def postprocess_classification(logits: Tensor, k: int = 5) -> tuple[list[int], list[float]]:
    """Softmax top-k of one image's logits (shape ``C`` or ``1 x C``): (class ids, probabilities).

    Ids are ordered by probability, highest first; ``k`` is clipped to ``C``.
    """
    if logits.dim() == 2 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.dim() != 1 or logits.numel() == 0:
        raise ValueError(f"expected logits of shape (C,) or (1, C), got {tuple(logits.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    probs = torch.softmax(logits.detach().float(), dim=0)
    top = torch.topk(probs, min(k, probs.numel()))
    return [int(i) for i in top.indices.tolist()], [float(p) for p in top.values.tolist()]


def postprocess_segmentation(logits: Tensor) -> tuple[int, int, list[int], list[float]]:
    """Per-pixel argmax of one image's logits (shape ``C x H x W`` or ``1 x C x H x W``).

    Returns ``(H, W, class ids present, pixel fractions)``, the classes sorted by fraction, largest
    first (ties: lower id first); the fractions sum to 1.
    """
    if logits.dim() == 4 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.dim() != 3 or logits.numel() == 0:
        raise ValueError(f"expected logits of shape (C, H, W) or (1, C, H, W), got {tuple(logits.shape)}")
    num_classes, height, width = (int(s) for s in logits.shape)
    labels = logits.detach().argmax(dim=0)
    counts = torch.bincount(labels.flatten(), minlength=num_classes).tolist()
    total = height * width
    present = sorted((c for c in range(num_classes) if counts[c] > 0), key=lambda c: (-counts[c], c))
    return height, width, present, [counts[c] / total for c in present]
