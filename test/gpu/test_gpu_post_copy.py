"""The engine's post-processing on a CUDA device does not wait for the device: ``start_*`` returns while the
device is still busy (a spin kernel queued ahead on the same stream), :meth:`PendingRows.ready` says so, and the
payloads made once the copy is done equal those computed from the same output on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daris_ros.runtime.results import start_classify, start_detect, start_mask

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

#: GPU clock cycles of the spin kernel queued ahead of the post-processing (about 0.1-0.5 s on current GPUs).
SPIN_CYCLES = 500_000_000


def _behind_a_busy_device(start, *args):  # type: ignore[no-untyped-def]
    """``start(*args)`` on a stream the device is busy on: (pending, whether it was ready at once)."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(SPIN_CYCLES)
        pending = start(*args)
        ready_at_once = pending.ready()
    return pending, ready_at_once


def test_classification_copy_is_asynchronous_and_equals_the_cpu() -> None:
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(1))
    pending, ready_at_once = _behind_a_busy_device(start_classify, logits.cuda(), [4, 0, 2], 5)
    assert not ready_at_once
    got = pending.rows()  # waits for the copy
    assert pending.ready()
    want = start_classify(logits, [4, 0, 2], 5).rows()
    assert [ids for ids, _ in got] == [ids for ids, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=1e-5)


def test_detection_and_mask_copies_are_asynchronous_and_equal_the_cpu() -> None:
    gen = torch.Generator().manual_seed(2)
    boxes = torch.rand(2, 5, 4, generator=gen) * 100
    scores = torch.sort(torch.rand(2, 5, generator=gen), dim=1, descending=True).values
    labels = torch.randint(0, 10, (2, 5), generator=gen)
    counts = torch.tensor([5, 3])
    out = (boxes, scores, labels, counts)
    args = ([1, 0], [(720, 1280), None], (100, 100), [0.2, 0.0], [4, 5])
    pending, ready_at_once = _behind_a_busy_device(start_detect, tuple(t.cuda() for t in out), *args)
    assert not ready_at_once
    for got, want in zip(pending.rows(), start_detect(out, *args).rows(), strict=True):
        np.testing.assert_allclose(got.boxes, want.boxes, rtol=1e-5)
        np.testing.assert_array_equal(got.class_ids, want.class_ids)

    seg = torch.randn(3, 4, 6, 8, generator=gen)
    pending, ready_at_once = _behind_a_busy_device(start_mask, seg.cuda(), [2, 0], [(12, 16), None])
    assert not ready_at_once
    for got, want in zip(pending.rows(), start_mask(seg, [2, 0], [(12, 16), None]).rows(), strict=True):
        assert got.summary[:2] == want.summary[:2]
        np.testing.assert_array_equal(got.mask, want.mask)
