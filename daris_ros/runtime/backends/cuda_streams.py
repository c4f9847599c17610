"""``str`` backend: one process, N_c x N_s CUDA streams, staged DNNs replayed as CUDA graphs.

Every (context, stream) owns one CUDA stream. For every model, stage and (context, stream) a CUDA graph
is captured at start-up (``cuda_graphs=True``); a stage launch copies the job's input into the graph's
static input, replays the graph and clones the static output on that stream, between two CUDA events
whose elapsed time is the stage's execution time (fed to MRET by the engine). With ``cuda_graphs=False``
the stage runs eagerly on the stream.

Two ways to drive it:

* the :class:`~daris_ros.runtime.backends.base.Backend` protocol (``submit(..., done)``): the launch
  happens at once in the caller's thread (it never blocks) and one completion thread polls the CUDA
  events and calls ``done``; the engine's completion handler then launches the next stages from that
  same thread, so a stage costs no thread hand-off;
* the lean API for a single-threaded driver (the bench): ``launch`` returns a :class:`StageLaunch`,
  the driver polls ``ready()`` and reads ``finish()`` itself.

There is no SM partitioning here: contexts are groups of streams (the STR policy uses one). The
``green`` backend (:mod:`.green`) reuses all of this with streams of green contexts.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from daris_ros.runtime.backends.base import BackendError, StageDone
from daris_ros.runtime.backends.cuda_graphs import Rows, StageGraph, clone_io, stack_rows, take_rows
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
    """One stage in flight on (context, stream)."""

    context: int
    stream: int
    output: Any
    start: torch.cuda.Event
    end: torch.cuda.Event
    done: StageDone | None = None
    error: BaseException | None = None
    timed: bool = True  # False: the start event was not recorded

    def ready(self) -> bool:
        return self.error is not None or self.end.query()

    def exec_time(self) -> float:
        """Seconds between the two events (valid once ``ready()``; 0.0 for an untimed launch)."""
        return self.start.elapsed_time(self.end) * 1e-3 if self.timed else 0.0


class CudaStreamsBackend:
    """In-process GPU backend over a matrix of CUDA streams (``str``); base of ``green``."""

    name = "str"

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cuda", cuda_graphs: bool = True,
                 oversubscription: float = 1.0) -> None:
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
        self.models: dict[str, Any] = {}
        self.streams: list[list[AnyStream]] = []
        self.graphs: dict[tuple[str, int, int, int], StageGraph] = {}
        # cross-task batching: graphs per (model, stage, batch size, context, stream) (capture_batches)
        self.batch_graphs: dict[tuple[str, int, int, int, int], StageGraph] = {}
        self.batch_sizes: tuple[int, ...] = ()
        self._pools: dict[tuple[int, int], Any] = {}
        self.capture_seconds = 0.0
        self._free_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._pending: collections.deque[StageLaunch] = collections.deque()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None
        self._closed = False
        self._started = False

    # -- start-up ------------------------------------------------------------------------------------
    def _make_streams(self) -> list[list[AnyStream]]:
        return [[torch.cuda.Stream(self.torch_device) for _ in range(self.n_streams)]
                for _ in range(self.n_contexts)]

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
        self._poller = threading.Thread(target=self._poll_loop, name=f"daris-{self.name}-poll", daemon=True)
        self._poller.start()
        self._started = True

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
            examples = self.example_inputs(model)
            for c in range(self.n_contexts):
                for s in range(self.n_streams):
                    pool = self._pool(c, s)  # one pool per stream: its graphs never overlap
                    cap = self._capture_stream(c, s)
                    for j in range(model.num_stages):
                        self.graphs[(name, j, c, s)] = StageGraph(model.stages[j], examples[j], cap, pool=pool)
        torch.cuda.synchronize(self.torch_device)

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
                        for j in range(model.num_stages):
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

    def launch(self, context: int, stream: int, model: str, stage: int, x: Any, timed: bool = True) -> StageLaunch:
        """Enqueue one stage on (context, stream) and return at once. Leaves that stream current.

        ``x`` must be ready for any stream (the output of an earlier finished launch, or synchronised);
        :meth:`submit` makes the stream wait for the caller's stream first. ``timed=False`` records only the
        completion event (no start event, ``exec_time`` 0): for drivers that time stages on the host.
        """
        s = self.streams[context][stream]
        torch.cuda.set_stream(s)
        start, end = self._events()
        if timed:
            start.record(s)
        g = self.graphs.get((model, stage, context, stream)) if self.cuda_graphs else None
        if g is not None and (stage > 0 or g.fits(x)):  # later stages get what earlier graphs made
            y = clone_io(g.launch(x))
        else:
            with torch.inference_mode():
                y = self.models[model].run_stage(stage, x)
        end.record(s)
        return StageLaunch(context, stream, y, start, end, timed=timed)

    def launch_batch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows,
                     timed: bool = True) -> StageLaunch:
        """Enqueue one batched stage on (context, stream) and return at once. Leaves that stream current.

        ``rows[i] = (source, row)`` is job i's input: row ``row`` of ``source`` (a tensor or tuple of tensors,
        batch-major: a frame, or the output of an earlier finished launch). With a graph of ``size`` the rows
        are gathered into its static input (rows past ``len(rows)`` are padding), else the stage runs eagerly
        on the stacked rows. ``output`` holds the jobs' results, row i for job i (a copy: it is the caller's).
        """
        s = self.streams[context][stream]
        torch.cuda.set_stream(s)
        start, end = self._events()
        if timed:
            start.record(s)
        g = self.batch_graphs.get((model, stage, size, context, stream)) if self.cuda_graphs else None
        if g is not None:
            y = take_rows(g.launch_rows(rows), len(rows))
        else:
            with torch.inference_mode():
                y = self.models[model].run_stage(stage, stack_rows(rows))
        end.record(s)
        return StageLaunch(context, stream, y, start, end, timed=timed)

    def finish(self, launch: StageLaunch) -> float:
        """The execution time of a ready launch; recycles its events."""
        dt = launch.exec_time()
        self._free_events.append((launch.start, launch.end))
        return dt

    def submit(self, context: int, stream: int, model: str, stage: int, x: Any, done: StageDone) -> None:
        # (kept free of per-call closures: the hot path of batch-1 stages; submit_batch is its batched twin)
        if self._closed:
            raise BackendError("backend is closed")
        caller = torch.cuda.current_stream(self.torch_device)
        try:
            target = self.streams[context][stream]
            if stage == 0 and caller != target:
                target.wait_stream(caller)  # the input was made on the caller's stream (preprocessing)
            launch = self.launch(context, stream, model, stage, x)
        except BaseException as exc:  # noqa: BLE001 - reported through done, like a failed stage
            launch = StageLaunch(context, stream, None, None, None, error=exc)  # type: ignore[arg-type]
        finally:
            torch.cuda.set_stream(caller)
        launch.done = done
        self._pending.append(launch)
        self._wake.set()

    def submit_batch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows,
                     done: StageDone) -> None:
        """Run one batched stage on (context, stream) (:meth:`launch_batch`: the graph of ``size`` when one was
        captured); ``done`` gets the output, row i for job i, from the poll thread."""
        if self._closed:
            raise BackendError("backend is closed")
        caller = torch.cuda.current_stream(self.torch_device)
        try:
            target = self.streams[context][stream]
            if caller != target:
                target.wait_stream(caller)  # frames (rows of a first stage) were preprocessed on the caller's stream
            launch = self.launch_batch(context, stream, model, stage, size, rows)
        except BaseException as exc:  # noqa: BLE001 - reported through done, like a failed stage
            launch = StageLaunch(context, stream, None, None, None, error=exc)  # type: ignore[arg-type]
        finally:
            torch.cuda.set_stream(caller)
        launch.done = done
        self._pending.append(launch)
        self._wake.set()

    def run_batch_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        """One batched stage on context 0, stream 0, synchronously (profiling batch times)."""
        caller = torch.cuda.current_stream(self.torch_device)
        self.streams[0][0].wait_stream(caller)
        try:
            launch = self.launch_batch(0, 0, model, stage, size, rows)
        finally:
            torch.cuda.set_stream(caller)
        launch.end.synchronize()
        return launch.output, self.finish(launch)

    def run_now(self, model: str, stage: int, x: Any) -> tuple[Any, float]:
        caller = torch.cuda.current_stream(self.torch_device)
        self.streams[0][0].wait_stream(caller)
        try:
            launch = self.launch(0, 0, model, stage, x)
        finally:
            torch.cuda.set_stream(caller)
        launch.end.synchronize()
        return launch.output, self.finish(launch)

    def _poll_loop(self) -> None:
        inflight: list[StageLaunch] = []
        pending = self._pending
        while not self._closed:
            while pending:
                inflight.append(pending.popleft())
            if not inflight:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            still: list[StageLaunch] = []
            for launch in inflight:
                if not launch.ready():
                    still.append(launch)
                    continue
                try:
                    if launch.error is not None:
                        launch.done(None, 0.0, launch.error)
                    else:
                        launch.done(launch.output, self.finish(launch), None)
                except Exception:  # noqa: BLE001 - a failing consumer must not stop completions
                    log.exception("stage completion callback failed")
            inflight = still
            if inflight and not pending:
                time.sleep(0)  # let other threads (releases) take the GIL

    def memory_by_context(self) -> ContextMemory:
        """The node process's reserved device memory: every context shares its allocator."""
        return ContextMemory((cuda_reserved(self.device),) * self.n_contexts, SOURCE_PROCESS, True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)
        if self._started:
            torch.cuda.synchronize(self.torch_device)
        self.graphs.clear()
        self.batch_graphs.clear()
        self._pools.clear()
        self._release_streams()

    def _release_streams(self) -> None:
        self.streams = []
