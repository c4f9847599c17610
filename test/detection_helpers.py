"""Shared pieces of the detector tests (CPU and GPU): test images and randomly initialised detectors made to
give varied detections, and a comparison of two detection outputs.

Randomly initialised detectors give degenerate outputs (exploding activations, every score at the class
prior), so :func:`lively` calibrates BatchNorm on the test images and spreads the classification layers'
weights: the scores then differ from box to box and every model returns detections. The staged and unstaged
models share those modules, so both see the same weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from daris_ros.runtime.backends.cuda_graphs import graph_stage_indices
from daris_ros.runtime.models import StagedModel
from daris_ros.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD


def imagenet_images(n: int, seed: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``n`` random [0, 1] images and the same images ImageNet-normalised (what the engine feeds)."""
    x01 = torch.rand((n, 3, *size), generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x01, (x01 - mean) / std


def _spread(module: nn.Module, seed: int, gain: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * gain / math.sqrt(fan_in))


def lively(model: StagedModel, x: Tensor, seed: int = 1) -> nn.Module:
    """Calibrate BatchNorm on ``x`` (running stats of the backbone's activations) and spread the classification
    layers, so that scores differ; returns the unstaged detector."""
    detector = model.unstaged_model
    assert detector is not None
    norms = [m for m in detector.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    with torch.no_grad():
        y: object = x
        for j in graph_stage_indices(model):
            y = model.run_stage(j, y)  # type: ignore[arg-type]
    for norm in norms:
        norm.eval()
    if hasattr(detector, "rpn"):
        _spread(detector.rpn.head.cls_logits, seed, 1.0)
        _spread(detector.roi_heads.box_predictor.cls_score, seed, 2.0)
        detector.roi_heads.score_thresh = 0.01
        detector.rpn._pre_nms_top_n["testing"] = 200  # fewer proposals: a quicker test
        detector.rpn._post_nms_top_n["testing"] = 50
    else:
        classification = detector.head.classification_head
        _spread(classification, seed, math.sqrt(2.0))  # the conv tower (He) and the logits
        last = classification.cls_logits if hasattr(classification, "cls_logits") else classification.module_list
        _spread(last, seed + 1, 1.0)
        detector.score_thresh = min(detector.score_thresh, 0.05)  # FCOS: 0.2 of sqrt(class * centre-ness)
    return detector


def assert_same_detections(got: tuple[Tensor, ...], expected: tuple[Tensor, ...], box_tol: float = 1e-3,
                           score_tol: float = 1e-5) -> None:
    """Same detections per row: equal counts, scores within tolerance; each detection has a partner of the same
    label, score and box (boxes whose scores tie may come in either order)."""
    boxes, scores, labels, counts = (t.cpu() for t in got)
    e_boxes, e_scores, e_labels, e_counts = (t.cpu() for t in expected)
    assert torch.equal(counts, e_counts)
    torch.testing.assert_close(scores, e_scores, rtol=0, atol=score_tol)
    for i in range(int(counts.shape[0])):
        for d in range(int(counts[i])):
            partner = ((e_scores[i] - scores[i, d]).abs() <= score_tol) & (e_labels[i] == labels[i, d]) & \
                ((e_boxes[i] - boxes[i, d]).abs().amax(dim=1) <= box_tol)
            partner[int(e_counts[i]):] = False
            assert bool(partner.any()), f"row {i}: detection {d} has no partner"
