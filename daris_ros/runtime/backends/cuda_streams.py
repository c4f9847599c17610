"""``str`` backend: one process, N_c x N_s CUDA streams, staged DNNs replayed as CUDA graphs.

Every (context, stream) owns one CUDA stream. For every model, stage and (context, stream) a CUDA graph
is captured at start-up (``cuda_graphs=True``); a stage launch copies the job's input into the graph's
static input, replays the graph and clones the static output on that stream, between two CUDA events
whose elapsed time is the stage's execution time (fed to MRET by the engine). With ``cuda_graphs=False``
the stage runs eagerly on the stream.

The engine's loop (one thread) drives it through the protocol of
:mod:`~daris_ros.runtime.backends.base`: ``launch`` enqueues a dispatch (1..n rows) on its stream and returns a
ticket at once; ``poll`` queries the end events of the launches in flight and returns the finished ones with
their CUDA-event execution times. No thread of its own: a stage costs no thread hand-off.

There is no SM partitioning here: contexts are groups of streams (the STR policy uses one). The
``green`` backend (:mod:`.green`) reuses all of this with streams of green contexts. With ``sm_limit``
(a node that shares its GPU) every stream is created in ONE green context of ``sm_limit`` SMs, the
device's first ``sm_limit / 8`` granules (:class:`~.green.GreenContexts`), so the node's kernels stay
on those SMs; without it the streams are ordinary CUDA streams on the whole device.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from daris_ros.runtime.backends.base import (
    Backend,
    BackendError,
    BatchGraphs,
    Finished,
    MemoryStats,
    Rows,
    RuntimeModels,
    checked_sm_limit,
)
from daris_ros.runtime.backends.cuda_graphs import (
    StageGraph,
    clone_io,
    graph_stage_indices,
    row_input,
    stack_rows,
    take_rows,
)
from daris_ros.runtime.memory import SOURCE_PROCESS, ContextMemory, cuda_reserved

log = logging.getLogger("daris_ros.backends")

AnyStream = torch.cuda.Stream  # torch.cuda.ExternalStream is a subclass


def resolve_cuda_device(device: str) -> torch.device:
    """``"cpu"`` (the settings default) means the first GPU for a GPU backend; anything else must be cuda[:N]."""
    if not torch.cuda.is_available():
        raise BackendError("this backend needs a CUDA device, but torch sees none (torch.cuda.is_available() "
                           "is False); use backend 'cpu'")
    dev = torch.device("cuda" if device in ("", "cpu") else device)
    if dev.type != "cuda":
        raise BackendError(f"device {device!r} is not a CUDA device ('cuda' or 'cuda:N')")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return torch.device("cuda", index)


@dataclass(slots=True)
class StageLaunch:
    """One dispatch in flight on (context, stream): its output and the two CUDA events around it."""

    ticket: int
    output: Any
    start: torch.cuda.Event | None
    end: torch.cuda.Event | None
    error: BaseException | None = None

    def ready(self) -> bool:
        if self.error is not None:
            return True
        assert self.end is not None  # a launch without an error has its two events
        return self.end.query()


class CudaStreamsBackend(Backend, MemoryStats, RuntimeModels, BatchGraphs):
    """In-process GPU backend over a matrix of CUDA streams (``str``); base of ``green``."""

    name = "str"
    polled = True  # the engine loop queries the CUDA events while launches are in flight

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cuda", cuda_graphs: bool = True,
                 oversubscription: float = 1.0, sm_limit: int = 0) -> None:
        if n_contexts < 1 or n_streams < 1:
            raise BackendError(f"need n_contexts >= 1 and n_streams >= 1, got {n_contexts} x {n_streams}")
        self.torch_device = resolve_cuda_device(device)
        self.device = str(self.torch_device)
        self.n_contexts = n_contexts
        self.n_streams = n_streams
        self.cuda_graphs = cuda_graphs
        self.oversubscription = oversubscription
        props = torch.cuda.get_device_properties(self.torch_device)
        self.n_sm_max: int = props.multi_processor_count
        self.sm_granularity: int = 2
        self.sm_limit = sm_limit
        self.green: Any = None  # the GreenContexts the streams live in (green; str under sm_limit), after start
        if sm_limit:  # the streams will live in one green context of whole granules: checked before any work
            from daris_ros.runtime.backends.green import _driver  # green.py imports this module
            from daris_ros.runtime.backends.sm_partitions import GREEN_SM_GRANULARITY

            checked_sm_limit(sm_limit, self.n_sm_max, GREEN_SM_GRANULARITY, self.name)
            _driver()
        self.models: dict[str, Any] = {}
        self.streams: list[list[AnyStream]] = []
        self.graphs: dict[tuple[str, int, int, int], StageGraph] = {}
        # cross-task batching: graphs per (model, stage, batch size, context, stream) (capture_batches)
        self.batch_graphs: dict[tuple[str, int, int, int, int], StageGraph] = {}
        self.batch_sizes: tuple[int, ...] = ()
        self._pools: dict[tuple[int, int], Any] = {}
        self.capture_seconds = 0.0
        self._free_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        # (recorded on the caller's stream before each launch and waited on by the target: one event, re-recorded;
        # a stream's wait takes the event's state at the time of the wait. Stream.wait_stream makes a new one each
        # time. Per thread: the loop launches, profiling may run from another thread.)
        self._caller_done = threading.local()
        self._in_flight: collections.deque[StageLaunch] = collections.deque()  # in launch order
        self._tickets = itertools.count(1)
        self._closed = False
        self._started = False

    # -- start-up ------------------------------------------------------------------------------------
    def _make_streams(self) -> list[list[AnyStream]]:
        if not self.sm_limit:
            return [[torch.cuda.Stream(self.torch_device) for _ in range(self.n_streams)]
                    for _ in range(self.n_contexts)]
        from daris_ros.runtime.backends.green import GreenContexts  # green.py imports this module

        torch.cuda.init()
        self.green = GreenContexts(self.torch_device.index or 0, 1, 1.0, self.n_contexts * self.n_streams,
                                   sm_limit=self.sm_limit)
        log.info("str: %d x %d streams in one green context of %s SMs (sm_limit %d)", self.n_contexts,
                 self.n_streams, self.green.sm_counts, self.sm_limit)
        (row,) = self.green.torch_streams(self.torch_device)
        return [row[c * self.n_streams:(c + 1) * self.n_streams] for c in range(self.n_contexts)]

    def _capture_stream(self, context: int, stream: int) -> AnyStream:
        """The stream a graph of (context, stream) is captured on (its own execution stream)."""
        return self.streams[context][stream]

    def start(self, models: Mapping[str, Any]) -> None:
        torch.cuda.set_device(self.torch_device)
        torch.backends.cudnn.benchmark = True
        self.streams = self._make_streams()
        for name, model in models.items():
            model = model.to(self.torch_device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self.models[name] = model
        if self.cuda_graphs:
            t0 = time.perf_counter()
            self._capture_all()
            self.capture_seconds = time.perf_counter() - t0
            log.info("%s: captured %d CUDA graphs in %.1f s", self.name, len(self.graphs), self.capture_seconds)
        self._started = True

    def add_model(self, name: str, model: Any) -> None:
        """Make one more model resident while running (its per-stage graphs captured too)."""
        model = model.to(self.torch_device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.models[name] = model
        if self.cuda_graphs:
            self._capture_model(name, model)
            torch.cuda.synchronize(self.torch_device)

    def example_inputs(self, model: Any, batch: int = 1) -> list[Any]:
        """Per stage, an example input (batch ``batch``) obtained by running the stages eagerly once.

        The input has the model's input dtype and memory format (``runtime/models/precision.py``)."""
        h, w = model.input_size
        x: Any = torch.randn(batch, 3, h, w, device=self.torch_device,
                             dtype=getattr(model, "input_dtype", torch.float32))
        x = x.contiguous(memory_format=getattr(model, "memory_format", torch.contiguous_format))
        out = []
        with torch.no_grad():  # normal tensors (graph inputs are written outside inference mode)
            for j in range(model.num_stages):
                out.append(x)
                x = model.run_stage(j, x)
        return out

    def _capture_all(self) -> None:
        for name, model in self.models.items():
            self._capture_model(name, model)
        torch.cuda.synchronize(self.torch_device)

    def _capture_model(self, name: str, model: Any) -> None:
        examples = self.example_inputs(model)
        for c in range(self.n_contexts):
            for s in range(self.n_streams):
                pool = self._pool(c, s)  # one pool per stream: its graphs never overlap
                cap = self._capture_stream(c, s)
                for j in graph_stage_indices(model):  # a stage flagged eager gets no graph
                    self.graphs[(name, j, c, s)] = StageGraph(model.stages[j], examples[j], cap, pool=pool)

    def _pool(self, context: int, stream: int) -> Any:
        pool = self._pools.get((context, stream))
        if pool is None:
            pool = self._pools[(context, stream)] = torch.cuda.graph_pool_handle()
        return pool

    def capture_batches(self, sizes: tuple[int, ...], models: list[str] | None = None) -> float:
        """Capture a graph per (model, stage, batch size, context, stream) for batched stages (after
        ``start``); returns the seconds it took. Graphs of one stream share its memory pool."""
        t0 = time.perf_counter()
        self.batch_sizes = tuple(sorted(set(self.batch_sizes) | set(sizes)))
        for name in models or list(self.models):
            model = self.models[name]
            for size in sizes:
                examples = self.example_inputs(model, size)
                for c in range(self.n_contexts):
                    for s in range(self.n_streams):
                        cap = self._capture_stream(c, s)
                        for j in graph_stage_indices(model):
                            self.batch_graphs[(name, j, size, c, s)] = StageGraph(
                                model.stages[j], examples[j], cap, pool=self._pool(c, s))
                del examples
        torch.cuda.synchronize(self.torch_device)
        dt = time.perf_counter() - t0
        log.info("%s: captured %d batched CUDA graphs (sizes %s) in %.1f s", self.name, len(self.batch_graphs),
                 list(sizes), dt)
        return dt

    # -- execution -----------------------------------------------------------------------------------
    def _events(self) -> tuple[torch.cuda.Event, torch.cuda.Event]:
        try:
            return self._free_events.pop()
        except IndexError:
            return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def launch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows) -> int:
        """Enqueue one dispatch on (context, stream) between two CUDA events and return at once.

        ``rows[i] = (source, row)`` is job i's input (a frame batch, or the output of an earlier launch; the
        target stream first waits for the caller's stream, where frames are preprocessed). With a graph of
        ``size`` the rows are gathered into its static input (rows past ``len(rows)`` are padding); one row
        without a batch graph replays the stage's batch-1 graph; otherwise the stage runs eagerly. The output
        (row i for job i) is a copy: it is the caller's."""
        ticket = next(self._tickets)
        try:
            output, start, end = self._enqueue(context, stream, model, stage, size, rows)
        except BaseException as exc:  # noqa: BLE001 - reported through poll, like a failed stage
            self._in_flight.append(StageLaunch(ticket, None, None, None, error=exc))
        else:
            self._in_flight.append(StageLaunch(ticket, output, start, end))
        return ticket

    def _enqueue(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows
                 ) -> tuple[Any, torch.cuda.Event, torch.cuda.Event]:
        if self._closed:
            raise BackendError("backend is closed")
        target = self.streams[context][stream]
        caller = torch.cuda.current_stream(self.torch_device)
        if caller != target:
            done = getattr(self._caller_done, "event", None)
            if done is None:
                done = self._caller_done.event = torch.cuda.Event()
            done.record(caller)
            target.wait_event(done)
        torch.cuda.set_stream(target)
        try:
            start, end = self._events()
            start.record(target)
            n = len(rows)
            g = self.batch_graphs.get((model, stage, size, context, stream)) if self.cuda_graphs else None
            if g is not None:
                y = take_rows(g.launch_rows(rows), n)
            elif n == 1 and self.cuda_graphs and (g1 := self.graphs.get((model, stage, context, stream))) is not None \
                    and g1.fits(x1 := row_input(rows[0])):
                y = clone_io(g1.launch(x1))
            else:
                with torch.inference_mode():
                    y = self.models[model].run_stage(stage, stack_rows(rows))
            end.record(target)
        finally:
            torch.cuda.set_stream(caller)
        return y, start, end

    def poll(self) -> list[Finished]:
        """The launches whose end event has completed, in launch order per stream (a launch behind an unfinished
        one on another stream is reported as soon as it is done)."""
        in_flight = self._in_flight
        if not in_flight:
            return []
        out: list[Finished] = []
        still: collections.deque[StageLaunch] = collections.deque()
        free = self._free_events
        for launch in in_flight:
            if launch.error is not None:
                out.append(Finished(launch.ticket, None, 0.0, launch.error))
                continue
            start, end = launch.start, launch.end
            assert start is not None and end is not None  # a launch without an error has its two events
            if end.query():
                out.append(Finished(launch.ticket, launch.output, start.elapsed_time(end) * 1e-3))
                free.append((start, end))
            else:
                still.append(launch)
        self._in_flight = still
        return out

    def run_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        """One dispatch on context 0, stream 0, synchronously (profiling)."""
        y, start, end = self._enqueue(0, 0, model, stage, size, rows)
        end.synchronize()
        dt = start.elapsed_time(end) * 1e-3
        self._free_events.append((start, end))
        return y, dt

    def memory_by_context(self) -> ContextMemory:
        """The node process's reserved device memory: every context shares its allocator."""
        return ContextMemory((cuda_reserved(self.device),) * self.n_contexts, SOURCE_PROCESS, True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._in_flight.clear()
        if self._started:
            torch.cuda.synchronize(self.torch_device)
        self.graphs.clear()
        self.batch_graphs.clear()
        self._pools.clear()
        self._release_streams()

    def _release_streams(self) -> None:
        self.streams = []
        if self.green is not None:
            self.green.destroy()
            self.green = None
