"""bench.instant_backend: every launch finishes at once (notifying the loop), the last stage of a classification
model hands out logits of the batch's size, and a model of another kind is refused at start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from daris_ros.bench.instant_backend import CLASSES, InstantBackend
from daris_ros.runtime.backends.base import BackendError


def test_launches_finish_at_once_with_logits_from_the_last_stage() -> None:
    backend = InstantBackend(n_contexts=1, n_streams=2, stage_seconds=2e-5)
    notified: list[int] = []
    backend.set_notify(lambda: notified.append(1))
    backend.start({"m": SimpleNamespace(kind="classification", num_stages=3)})
    first = backend.launch(0, 0, "m", 0, 4, [(None, 0)] * 3)
    last = backend.launch(0, 1, "m", 2, 4, [(None, 0)] * 3)
    assert notified == [1, 1]
    finished = backend.poll()
    assert [f.ticket for f in finished] == [first, last] and backend.poll() == []
    assert all(f.exec_time == 2e-5 and f.error is None for f in finished)
    assert tuple(finished[1].output.shape) == (4, CLASSES)  # the captured size, padding rows included
    output, seconds = backend.run_now("m", 2, 1, [(None, 0)])
    assert tuple(output.shape) == (1, CLASSES) and seconds == 2e-5


def test_only_classification_models() -> None:
    with pytest.raises(BackendError, match="classification"):
        InstantBackend(n_contexts=1, n_streams=1).start({"seg": SimpleNamespace(kind="segmentation", num_stages=2)})
