"""A backend without a device, for measuring the engine's host cost alone (``daris-engine-load --backend instant``).

Every launched dispatch finishes at once and is reported as having run ``stage_seconds``; the last stage of a
classification model hands out a batch of zero logits, so the engine's whole path runs as it does on a GPU backend
(release, decode, preprocess, admission, dispatch, launch, completion, post-processing, result), but no model
executes. What a run measures is then the loop's CPU per release (``host_us_per_release``) with no device and no
worker competing for the interpreter: the part of the node's cost that is the engine's own Python. It is a
benchmark's instrument, not an execution backend: the node cannot select it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from daris_ros.runtime.backends.base import Backend, BackendError, Finished, Rows

#: The logits width of the classification models this backend stands in for (torchvision's ImageNet heads).
CLASSES = 1000


class InstantBackend(Backend):
    """N_c x N_s streams that finish every dispatch as soon as it is launched."""

    name = "instant"
    polled = False  # each launch notifies the loop, as a worker's completion does

    def __init__(self, *, n_contexts: int, n_streams: int, stage_seconds: float = 1e-5) -> None:
        if not stage_seconds > 0:
            raise ValueError(f"stage_seconds must be > 0, got {stage_seconds}")
        self.n_contexts = n_contexts
        self.n_streams = n_streams
        self.device = "cpu"
        self._stage_seconds = stage_seconds
        self._last_stage: dict[str, int] = {}
        self._tickets = itertools.count(1)
        self._finished: list[Finished] = []
        self._notify: Callable[[], None] | None = None
        self._logits: dict[int, torch.Tensor] = {}  # zero logits by batch size
        self._hidden = torch.zeros(1, 1)  # what a stage before the last hands on (the next one ignores it)

    def start(self, models: Mapping[str, Any]) -> None:
        for name, model in models.items():
            if getattr(model, "kind", "classification") != "classification":
                raise BackendError(f"the instant backend stands in for classification models only; {name} is a "
                                   f"{model.kind} model")
            self._last_stage[name] = int(model.num_stages) - 1

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        self._notify = notify

    def _output(self, model: str, stage: int, size: int) -> torch.Tensor:
        if stage < self._last_stage[model]:
            return self._hidden
        logits = self._logits.get(size)
        if logits is None:
            logits = self._logits[size] = torch.zeros(size, CLASSES)
        return logits

    def launch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows) -> int:
        ticket = next(self._tickets)
        self._finished.append(Finished(ticket, self._output(model, stage, max(size, len(rows))),
                                       self._stage_seconds))
        if self._notify is not None:
            self._notify()
        return ticket

    def poll(self) -> list[Finished]:
        finished, self._finished = self._finished, []
        return finished

    def run_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        return self._output(model, stage, max(size, len(rows))), self._stage_seconds

    def close(self) -> None:
        self._finished = []
