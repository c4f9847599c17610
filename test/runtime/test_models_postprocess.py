"""postprocess_classification / postprocess_segmentation on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from daris_ros.runtime.models import postprocess_classification, postprocess_segmentation

torch.set_num_threads(1)


def test_classification_top_k() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    ids, probs = postprocess_classification(logits, k=3)
    assert ids == [1, 2, 0]
    denom = math.exp(0) + math.exp(2) + math.exp(1) + math.exp(-1)
    assert probs == pytest.approx([math.exp(2) / denom, math.exp(1) / denom, 1 / denom], rel=1e-6)
    assert all(isinstance(i, int) for i in ids) and all(isinstance(p, float) for p in probs)


def test_classification_k_clipped_and_1d() -> None:
    ids, probs = postprocess_classification(torch.tensor([3.0, 1.0]), k=5)
    assert ids == [0, 1]
    assert sum(probs) == pytest.approx(1.0)


def test_classification_bad_shapes() -> None:
    with pytest.raises(ValueError):
        postprocess_classification(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        postprocess_classification(torch.zeros(3), k=0)


def test_segmentation_fractions() -> None:
    # 3 classes on a 2x3 image: class 2 wins 3 pixels, class 0 wins 2, class 1 wins 1.
    labels = torch.tensor([[2, 2, 0], [1, 2, 0]])
    logits = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float().unsqueeze(0)
    h, w, ids, fractions = postprocess_segmentation(logits)
    assert (h, w) == (2, 3)
    assert ids == [2, 0, 1]
    assert fractions == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def test_segmentation_absent_classes_and_ties() -> None:
    labels = torch.tensor([[4, 1], [1, 4]])
    logits = torch.nn.functional.one_hot(labels, 5).permute(2, 0, 1).float()  # 3-D input
    h, w, ids, fractions = postprocess_segmentation(logits)
    assert (h, w, ids, fractions) == (2, 2, [1, 4], [0.5, 0.5])


def test_segmentation_bad_shape() -> None:
    with pytest.raises(ValueError):
        postprocess_segmentation(torch.zeros(2, 3, 4, 4))
