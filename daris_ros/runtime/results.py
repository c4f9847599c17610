"""What the engine hands out for a finished job, and the batched post-processing that makes it.

Jobs that finish in one turn of the engine's loop and whose outputs are rows of one stage output are
post-processed together: one softmax/top-k (classification) or one argmax/bincount (segmentation) over their
rows, and one copy to the host, on a stream of their own so the copy waits for nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True, slots=True)
class StageTrace:
    """One executed stage: where, when (engine clock, seconds) and how long."""

    stage: int
    context: int
    stream: int
    level: int
    start: float
    finish: float
    exec_time: float
    virtual_deadline: float
    batch: int = 1  # jobs in the dispatch that ran it


@dataclass(slots=True)
class JobResult:
    """A finished job, with every time on the engine's clock (seconds)."""

    task: str
    job_id: int
    priority: str
    model: str
    class_ids: list[int]
    scores: list[float]
    segmentation: tuple[int, int, list[int], list[float]] | None
    receive_time: float
    release_time: float
    start_time: float
    finish_time: float
    deadline: float
    response_time: float
    exec_time: float
    met: bool
    context: int
    stream: int
    meta: Any = None
    error: str = ""
    mret: float = 0.0
    stages: list[StageTrace] = field(default_factory=list)
    stamp: float | None = None  # the image stamp on the engine clock (None: unknown)


def _rows_of(output: Any, rows: list[int]) -> torch.Tensor:
    x = output[0] if isinstance(output, tuple) else output
    if len(rows) == x.shape[0] and rows == list(range(len(rows))):
        return x
    if len(rows) == 1:
        return x.narrow(0, rows[0], 1)
    return x.index_select(0, torch.tensor(rows, device=x.device))


def classify_rows(output: Any, rows: list[int], k: int) -> list[tuple[list[int], list[float]]]:
    """Softmax top-k of each row of a batch of logits (``N x C``): (class ids, probabilities) per row, ids by
    probability, highest first; ``k`` clipped to ``C``."""
    logits = _rows_of(output, rows).detach().float()
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"expected logits of shape (N, C), got {tuple(logits.shape)}")
    top = torch.topk(torch.softmax(logits, dim=1), min(k, logits.shape[1]), dim=1)
    ids, probs = top.indices.cpu().tolist(), top.values.cpu().tolist()
    return [(list(map(int, i)), list(map(float, p))) for i, p in zip(ids, probs, strict=True)]


def segment_rows(output: Any, rows: list[int]) -> list[tuple[int, int, list[int], list[float]]]:
    """Per-pixel argmax of each row (``N x C x H x W``): ``(H, W, class ids present, pixel fractions)`` per row,
    classes sorted by fraction, largest first (ties: lower id first)."""
    logits = _rows_of(output, rows).detach()
    if logits.dim() != 4 or logits.numel() == 0:
        raise ValueError(f"expected logits of shape (N, C, H, W), got {tuple(logits.shape)}")
    n, num_classes, height, width = (int(s) for s in logits.shape)
    labels = logits.argmax(dim=1).view(n, -1)
    offsets = (torch.arange(n, device=labels.device) * num_classes).view(n, 1)
    counts = torch.bincount((labels + offsets).flatten(), minlength=n * num_classes).view(n, num_classes)
    total = height * width
    out = []
    for row in counts.cpu().tolist():
        present = sorted((c for c in range(num_classes) if row[c] > 0), key=lambda c: (-row[c], c))
        out.append((height, width, present, [row[c] / total for c in present]))
    return out
