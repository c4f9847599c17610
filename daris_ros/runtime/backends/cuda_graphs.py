"""CUDA graphs per (model, stage, context, stream), captured at start-up and replayed per job.

A :class:`StageGraph` owns a static input and a static output. ``launch`` copies the job's input into
the static input on the execution stream and replays the graph there; the caller hands the static
output over (the backend clones it, so the next replay cannot overwrite a job's data).

Batched stages (cross-task batching) use graphs captured at each batch size of a small set:
``launch_rows`` gathers the jobs' rows into the static batch input (:func:`gather_rows`), replays, and
the backend copies the first n rows of the static output out (:func:`take_rows`).

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


def graph_stage_indices(model: Any) -> list[int]:
    """The stages of ``model`` that may be captured as CUDA graphs: those its ``graph_stages`` flags allow
    (every stage when the model has no flags). The others (e.g. a detector's NMS stage, whose shapes depend on
    the data) always run eagerly: a backend finds no graph for them and takes its eager path."""
    flags = getattr(model, "graph_stages", None)
    return [j for j in range(model.num_stages) if flags is None or bool(flags[j])]


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

    def launch_rows(self, rows: Sequence[tuple[Any, int]]) -> Any:
        """Gather ``rows`` (``(source, row)`` per job) into the static batch input and replay on the CURRENT
        stream; returns the static output (its first ``len(rows)`` rows are the jobs', in order)."""
        gather_rows(rows, self.static_in)
        self.graph.replay()
        return self.static_out


# ------------------------------------------------------------------------------------------------------
# Cross-task stage batching: gather the jobs' rows into a graph's static batch input, scatter the output.
# A job's stage input is addressed as ``(source, row)``: row ``row`` of ``source`` (a tensor, or a tuple of
# tensors, batch-major), e.g. the output of the batch that ran its previous stage, or its own frame (row 0).

Rows = Sequence[tuple[Any, int]]


def row_runs(rows: Rows) -> list[tuple[Any, int, int]]:
    """``rows`` as runs ``(source, first row, count)`` of consecutive rows of one source, in order."""
    runs: list[tuple[Any, int, int]] = []
    src0, r0, cnt = None, 0, 0
    for src, r in rows:
        if src is src0 and r == r0 + cnt:
            cnt += 1
            continue
        if cnt:
            runs.append((src0, r0, cnt))
        src0, r0, cnt = src, r, 1
    if cnt:
        runs.append((src0, r0, cnt))
    return runs


def _part(t: torch.Tensor, r0: int, cnt: int) -> torch.Tensor:
    return t if r0 == 0 and cnt == t.shape[0] else t.narrow(0, r0, cnt)


def gather_rows(rows: Rows, dst: Sequence[torch.Tensor]) -> None:
    """Write row i of every tensor of ``dst`` (a static batch input) from ``rows[i]``, on the current stream.

    One copy per tensor when the rows are one run of one source, else one ``cat`` into ``dst[:n]``. Rows of
    ``dst`` past ``len(rows)`` keep what they held (padding; the stages treat rows independently).
    """
    n = len(rows)
    runs = row_runs(rows)
    for c, d in enumerate(dst):
        out = d.narrow(0, 0, n)
        if len(runs) == 1:
            src, r0, cnt = runs[0]
            out.copy_(_part(src if isinstance(src, torch.Tensor) else src[c], r0, cnt), non_blocking=True)
        else:
            torch.cat([_part(src if isinstance(src, torch.Tensor) else src[c], r0, cnt) for src, r0, cnt in runs],
                      out=out)


def row_input(row: tuple[Any, int]) -> Any:
    """One job's input as a batch of one: row ``row`` of ``source`` (a view, no copy)."""
    src, r = row
    if isinstance(src, torch.Tensor):
        return src if src.shape[0] == 1 else src.narrow(0, r, 1)
    return tuple(t if t.shape[0] == 1 else t.narrow(0, r, 1) for t in src)


def take_rows(x: Any, n: int) -> Any:
    """A copy of the first ``n`` rows of a stage output (tensor or tuple), allocated on the current stream."""
    if isinstance(x, torch.Tensor):
        return x.narrow(0, 0, n).clone()
    return tuple(t.narrow(0, 0, n).clone() for t in x)


def stack_rows(rows: Rows) -> Any:
    """The rows as a new batch (eager execution without a graph)."""
    runs = row_runs(rows)
    first = runs[0][0]
    if isinstance(first, torch.Tensor):
        return torch.cat([_part(src, r0, cnt) for src, r0, cnt in runs])
    return tuple(torch.cat([_part(src[c], r0, cnt) for src, r0, cnt in runs]) for c in range(len(first)))
