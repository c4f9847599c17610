"""What the engine hands out for a finished job, and the batched post-processing that makes it.

Jobs that finish in one turn of the engine's loop and whose outputs are rows of one stage output are
post-processed together: one softmax/top-k (classification), one argmax and pixel count plus the class mask
(segmentation, :func:`mask_rows`) or one threshold/cap/rescale (detection, :func:`detect_rows`) over their rows,
and one copy to the host, on a stream of their own so the copy waits for nothing else.

Each has two halves: ``start_*`` enqueues the device work and the copy to the host and returns a
:class:`PendingRows` at once (on a CUDA device the copy is asynchronous, into page-locked memory, followed by an
event); :meth:`PendingRows.rows` makes the per-row payloads from the host copy. The engine's loop starts them and
hands out the results once :meth:`PendingRows.ready` says the copy is done, so it never waits for the device
(a synchronous copy waits behind the kernels of every stream the GPU is running). ``classify_rows``,
``detect_rows`` and ``mask_rows`` are the two halves in one call.

Coordinates: every frame was resized (stretched, bilinear) from its source size ``(H_src, W_src)`` to the model's
``input_size`` ``(H, W)`` (runtime/preprocess.py), so a model-input pixel coordinate maps back to the source frame
by ``x * W_src / W`` and ``y * H_src / H``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from daris_ros.runtime.device_copy import to_device


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
    kind: str = "classification"  # the model's kind: classification, segmentation or detection
    source_size: tuple[int, int] | None = None  # (H_src, W_src) of the decoded frame, before preprocessing
    detections: Detections | None = None  # detection: the boxes in source pixels, thresholded and capped
    mask: np.ndarray | None = None  # segmentation: H x W uint8 class ids (the source's size, or the model's)


@dataclass(frozen=True, slots=True)
class Detections:
    """One image's detections, best first: ``boxes`` float32 ``n x 4`` (x1, y1, x2, y2 in the source frame's
    pixels), ``scores`` float32 ``n``, ``class_ids`` int64 ``n`` (the model's label space)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True, slots=True)
class SegmentationRow:
    """One image's segmentation: the summary (``H, W`` at the model's resolution, class ids present, pixel
    fractions, largest first) and the class mask, H' x W' uint8 (the source's size, or the model's; None when no
    one wanted it: the mask topic had no subscriber)."""

    summary: tuple[int, int, list[int], list[float]]
    mask: np.ndarray | None


def _pixel_counts(labels: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """Pixels per (row, class) of ``labels`` (``N x H x W`` class ids), ``N x C`` int64. A scatter-add: CUDA's
    ``bincount`` reads the largest id back to the host first (a wait for the stream)."""
    offsets = (torch.arange(n, device=labels.device) * num_classes).view(n, 1)
    flat = (labels.reshape(n, -1) + offsets).flatten()
    counts = torch.zeros(n * num_classes, dtype=torch.int64, device=labels.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat)).view(n, num_classes)


def _summary(pixels: list[int], height: int, width: int) -> tuple[int, int, list[int], list[float]]:
    """A segmentation summary from one row's pixels per class: ``(H, W, class ids present, pixel fractions)``,
    classes by fraction, largest first (ties: lower id first)."""
    present = sorted((c for c, count in enumerate(pixels) if count > 0), key=lambda c: (-pixels[c], c))
    total = height * width
    return height, width, present, [pixels[c] / total for c in present]


def _rows_of(output: Any, rows: list[int]) -> torch.Tensor:
    x = output[0] if isinstance(output, tuple) else output
    if len(rows) == x.shape[0] and rows == list(range(len(rows))):
        return x
    if len(rows) == 1:
        return x.narrow(0, rows[0], 1)
    return x.index_select(0, to_device(rows, torch.int64, x.device))


class PendingRows:
    """The post-processing of a group of rows whose copy to the host was started: :meth:`ready` once the copy is
    done (at once when the tensor is not on a CUDA device), :meth:`rows` the payloads, one per row (it waits for the
    copy if it is not done). ``keep`` holds the tensors the device work reads (the stage output, made on another
    stream) until the copy is done, so their memory is not handed out again while it is read."""

    __slots__ = ("_host", "_event", "_make", "_keep")

    def __init__(self, device_tensor: torch.Tensor, make: Callable[[np.ndarray], list[Any]], keep: Any = None
                 ) -> None:
        self._make = make
        if device_tensor.is_cuda:
            self._host = device_tensor.to("cpu", non_blocking=True)  # (page-locked: torch's host caching allocator)
            self._event: torch.cuda.Event | None = torch.cuda.Event()
            self._event.record()
            self._keep = keep
        else:
            self._host = device_tensor
            self._event = None
            self._keep = None

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def rows(self) -> list[Any]:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        self._keep = None
        return self._make(self._host.numpy())


def start_classify(output: Any, rows: list[int], k: int) -> PendingRows:
    """Softmax top-k of each row of a batch of logits (``N x C``): (class ids, probabilities) per row, ids by
    probability, highest first; ``k`` clipped to ``C``."""
    logits = _rows_of(output, rows).detach().float()
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"expected logits of shape (N, C), got {tuple(logits.shape)}")
    k = min(k, logits.shape[1])
    top = torch.topk(torch.softmax(logits, dim=1), k, dim=1)

    def make(host: np.ndarray) -> list[Any]:
        return list(zip(host[:, :k].astype(np.int64).tolist(), host[:, k:].tolist(), strict=True))

    # (ids and probabilities to the host in one copy: float64 holds both exactly)
    return PendingRows(torch.cat((top.indices.double(), top.values.double()), dim=1), make, keep=output)


def classify_rows(output: Any, rows: list[int], k: int) -> list[tuple[list[int], list[float]]]:
    """:func:`start_classify` and its payloads in one call."""
    return start_classify(output, rows, k).rows()


def segment_rows(output: Any, rows: list[int]) -> list[tuple[int, int, list[int], list[float]]]:
    """Per-pixel argmax of each row (``N x C x H x W``): ``(H, W, class ids present, pixel fractions)`` per row,
    classes sorted by fraction, largest first (ties: lower id first)."""
    logits = _rows_of(output, rows).detach()
    if logits.dim() != 4 or logits.numel() == 0:
        raise ValueError(f"expected logits of shape (N, C, H, W), got {tuple(logits.shape)}")
    n, num_classes, height, width = (int(s) for s in logits.shape)
    counts = _pixel_counts(logits.argmax(dim=1), n, num_classes)
    return [_summary(row, height, width) for row in counts.cpu().tolist()]


def detect_rows(output: Any, rows: list[int], sizes: list[tuple[int, int] | None], input_size: tuple[int, int],
                thresholds: list[float], caps: list[int]) -> list[Detections]:
    """:func:`start_detect` and its payloads in one call."""
    return start_detect(output, rows, sizes, input_size, thresholds, caps).rows()


def start_detect(output: Any, rows: list[int], sizes: list[tuple[int, int] | None], input_size: tuple[int, int],
                 thresholds: list[float], caps: list[int]) -> PendingRows:
    """The detections of each row of a detection model's last-stage output ``(boxes N x K x 4, scores N x K,
    labels N x K, counts N)`` (issue 16's contract: boxes x1, y1, x2, y2 in the model input's pixels, scores
    sorted descending per row, ``counts`` valid entries per row).

    Row ``rows[i]`` keeps its first ``counts`` entries whose score is at least ``thresholds[i]``, at most
    ``caps[i]`` of them, best first; its boxes are scaled from ``input_size`` (H, W) to ``sizes[i]`` (the source
    frame's H_src, W_src; None: kept in model-input pixels) and clipped to that frame. The selection runs on the
    output's device; the burst's rows come to the host in one copy."""
    if not isinstance(output, tuple | list) or len(output) != 4:
        got = f"{type(output).__name__}" + (f" of {len(output)}" if isinstance(output, tuple | list) else "")
        raise ValueError(f"a detection model's last stage returns (boxes, scores, labels, counts), got {got}")
    boxes, scores, labels, counts = (_rows_of(t.detach(), rows) for t in output)
    n = len(rows)
    if boxes.dim() != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] or labels.shape != scores.shape \
            or counts.shape != (n,) or boxes.shape[0] != n:
        raise ValueError(f"detection output shapes: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}, labels "
                         f"{tuple(labels.shape)}, counts {tuple(counts.shape)}; expected N x K x 4, N x K, N x K, N")
    if not (len(sizes) == len(thresholds) == len(caps) == n):
        raise ValueError(f"{n} rows with {len(sizes)} sizes, {len(thresholds)} thresholds and {len(caps)} caps")
    dev = boxes.device
    height, width = input_size
    k = scores.shape[1]
    # per row: the factors from model-input pixels to source pixels, and the source frame's bounds
    factors = [(1.0, 1.0) if s is None else (s[1] / width, s[0] / height) for s in sizes]
    bounds = [(float(width), float(height)) if s is None else (float(s[1]), float(s[0])) for s in sizes]
    per_row = to_device([[fx, fy, fx, fy, bx, by, th, cap] for (fx, fy), (bx, by), th, cap
                          in zip(factors, bounds, thresholds, caps, strict=True)], torch.float32, dev)
    scale, limit = per_row[:, 0:4].unsqueeze(1), per_row[:, 4:6].repeat(1, 2).unsqueeze(1)
    scaled = torch.minimum((boxes.float() * scale).clamp_min(0.0), limit)
    valid = torch.arange(k, device=dev).unsqueeze(0) < counts.unsqueeze(1)
    keep = valid & (scores.float() >= per_row[:, 6:7])
    keep &= torch.cumsum(keep.int(), dim=1) <= per_row[:, 7:8]
    packed = torch.cat([scaled, scores.float().unsqueeze(2), labels.float().unsqueeze(2),
                        keep.float().unsqueeze(2)], dim=2)  # one device -> host copy

    def make(host: np.ndarray) -> list[Any]:
        out = []
        for row in host:
            chosen = row[row[:, 6] > 0]
            out.append(Detections(boxes=np.ascontiguousarray(chosen[:, 0:4]),
                                  scores=np.ascontiguousarray(chosen[:, 4]), class_ids=chosen[:, 5].astype(np.int64)))
        return out

    return PendingRows(packed, make, keep=output)


def mask_rows(output: Any, rows: list[int], sizes: list[tuple[int, int] | None],
              wanted: list[bool] | None = None) -> list[SegmentationRow]:
    """:func:`start_mask` and its payloads in one call."""
    return start_mask(output, rows, sizes, wanted).rows()


def start_mask(output: Any, rows: list[int], sizes: list[tuple[int, int] | None],
               wanted: list[bool] | None = None) -> PendingRows:
    """Per-pixel argmax of each row of segmentation logits (``N x C x H x W``, C <= 256): the summary of
    :func:`segment_rows` and the class mask as uint8, resized (nearest, pixel centres) on the output's device to
    ``sizes[i]`` (H', W'; None: kept at the model's H x W); the burst's masks come to the host in one copy.
    A row whose ``wanted[i]`` is false gets the summary only (mask None): no resize and no mask copy."""
    logits = _rows_of(output, rows).detach()
    if logits.dim() != 4 or logits.numel() == 0:
        raise ValueError(f"expected logits of shape (N, C, H, W), got {tuple(logits.shape)}")
    n, num_classes, height, width = (int(v) for v in logits.shape)
    if num_classes > 256:
        raise ValueError(f"{num_classes} classes do not fit a mono8 mask (at most 256)")
    if len(sizes) != n or (wanted is not None and len(wanted) != n):
        raise ValueError(f"{n} rows with {len(sizes)} sizes" + ("" if wanted is None else f", {len(wanted)} wanted"))
    labels = logits.argmax(dim=1)  # N x H x W
    counts = _pixel_counts(labels, n, num_classes).flatten()
    small = labels.to(torch.uint8).unsqueeze(1)  # N x 1 x H x W
    targets = [(height, width) if s is None else (int(s[0]), int(s[1])) for s in sizes]
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(targets):
        if wanted is None or wanted[i]:
            by_size.setdefault(size, []).append(i)
    parts: list[torch.Tensor | None] = [None] * n
    for size, idx in by_size.items():
        part = small if len(idx) == n else small.index_select(0, to_device(idx, torch.int64, small.device))
        if size != (height, width):
            part = F.interpolate(part, size=size, mode="nearest-exact")
        for j, i in enumerate(idx):
            parts[i] = part[j].reshape(-1)
    # one device -> host copy: the pixel counts (int64, as bytes) and every mask
    count_bytes = counts.contiguous().view(torch.uint8)
    n_bytes = count_bytes.numel()
    has_mask = [p is not None for p in parts]

    def make(host: np.ndarray) -> list[Any]:
        pixels = host[:n_bytes].view(np.int64).reshape(n, num_classes).tolist()
        out, offset = [], n_bytes
        for i, (h, w) in enumerate(targets):
            mask = None
            if has_mask[i]:
                mask = host[offset:offset + h * w].reshape(h, w)
                offset += h * w
            out.append(SegmentationRow(_summary(pixels[i], height, width), mask))
        return out

    return PendingRows(torch.cat([count_bytes, *(p for p in parts if p is not None)]), make, keep=output)
