"""CUDA graphs per (model, stage, context, stream), captured at start-up and replayed per job.

A :class:`StageGraph` owns a static input and a static output. ``launch`` copies the job's input into
the static input on the execution stream and replays the graph there; the caller hands the static
output over (the backend clones it, so the next replay cannot overwrite a job's data).

Nothing here is imported on a machine without CUDA unless a GPU backend is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

StageFn = Callable[[Any], Any]


def tensors_of(x: Any) -> tuple[torch.Tensor, ...]:
    """The tensors inside a stage input/output (a tensor or a flat tuple of tensors)."""
    if isinstance(x, torch.Tensor):
        return (x,)
    return tuple(x)


def like_structure(template: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """``tensors`` packed the way ``template`` is (one tensor, or a tuple)."""
    if isinstance(template, torch.Tensor):
        return tensors[0]
    return tuple(tensors)


def clone_io(x: Any) -> Any:
    """A copy of a stage output, allocated on the current stream."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    return tuple(t.clone() for t in x)


class StageGraph:
    """One captured stage: ``static_out = fn(static_in)`` recorded once, replayed many times."""

    def __init__(self, fn: StageFn, example: Any, capture_stream: torch.cuda.Stream | torch.cuda.ExternalStream,
                 *, pool: Any = None, warmup: int = 2) -> None:
        self._template = example
        self.static_in: tuple[torch.Tensor, ...] = tuple(t.detach().clone() for t in tensors_of(example))
        packed_in = like_structure(example, self.static_in)
        self.shapes = tuple(t.shape for t in self.static_in)
        self.graph = torch.cuda.CUDAGraph()
        capture_stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(capture_stream):
            for _ in range(warmup):  # cuDNN algorithm choice and lazy initialisation happen outside the capture
                fn(packed_in)
        capture_stream.synchronize()
        with torch.no_grad(), torch.cuda.graph(self.graph, stream=capture_stream, pool=pool,
                                               capture_error_mode="thread_local"):
            self.static_out = fn(packed_in)
        capture_stream.synchronize()

    def fits(self, x: Any) -> bool:
        """Whether ``x`` has the shapes this graph was captured for."""
        ts = tensors_of(x)
        return len(ts) == len(self.shapes) and all(t.shape == s for t, s in zip(ts, self.shapes, strict=True))

    def launch(self, x: Any) -> Any:
        """Copy ``x`` in and replay on the CURRENT stream; returns the static output (valid until next replay)."""
        if isinstance(x, torch.Tensor):
            self.static_in[0].copy_(x, non_blocking=True)
        else:
            for dst, src in zip(self.static_in, x, strict=True):
                dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.static_out
