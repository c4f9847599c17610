"""The worker process of the ``mps`` backend: one MPS client process = one DARIS context with N_s streams.

Started by :class:`~.mps_pool.WorkerPool` with the ``spawn`` start method (never ``fork`` after CUDA init).
:func:`worker_main` runs in the fresh interpreter and

1. sets its environment (``CUDA_MPS_PIPE_DIRECTORY``, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` from eq. 9)
   BEFORE anything initialises CUDA, so the process is an MPS client limited to its share of SMs;
2. loads every model (all models are resident in every worker: migrating an LP task costs no load
   time) and, through an in-process ``str`` backend of 1 x N_s streams, captures a CUDA graph per
   (model, stage, stream);
3. pins its shared-memory slots (``cudaHostRegister``) so frames are copied to the GPU straight from
   them, asynchronously;
4. reports ``ready`` (with the SM count the device reports inside this MPS client) and serves stage
   requests from its request ring until told to stop or until the scheduler process goes away (the
   record format: :mod:`.mps_protocol`).

A stage's output stays in the worker under a handle id unless it is a job's final output (copied into
an output slot: one tensor, or a tuple of fixed-shape tensors such as a detector's boxes, scores, labels and
counts), so intermediate tensors never cross the process boundary. A stage whose ``graph_stages`` flag is
False (a detector's decode + NMS stage) gets no CUDA graph and always runs eagerly. Completions carry the
CUDA-event time of the stage. The worker only runs what it is sent, in order per stream: which stage runs
where and when is decided by the engine in the scheduler process. ``device='cpu'`` runs the same protocol
with CPU execution (tests without a GPU).

A worker whose CUDA context becomes unusable exits with :data:`EXIT_CONTEXT_LOST`, so that the scheduler
sees a dead worker and replaces it. That happens when the MPS server (or its control daemon) dies: the
process lives on, but its context was inside the server, so every later CUDA call fails (or a sticky CUDA
error hit). A stage that fails is therefore followed by a probe of the context (a kernel and a device
synchronisation); a stage that fails on its own (a bad input) leaves the worker serving. A probe that
hangs leaves a stage in flight, which the engine's watchdog reports as hung: the backend kills the worker.
"""

from __future__ import annotations

import io
import os
import select
import signal
import sys
import time
import traceback
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NoReturn

from daris_ros.runtime.backends import mps_protocol as proto
from daris_ros.runtime.backends import shm_channel as ch

CTRL_CHECK_S = 0.005  # how often a busy worker looks at its control pipe
#: Exit status of a worker whose CUDA context is unusable (see the module docstring).
EXIT_CONTEXT_LOST = 70


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs, pickled into the spawned process."""

    context: int
    generation: int
    n_streams: int
    device: str  # "cuda:N", or "cpu" for protocol tests
    cuda_graphs: bool
    shm_name: str
    layout: ch.ChannelLayout
    model_keys: tuple[str, ...]
    model_blobs: tuple[bytes, ...]
    env: dict[str, str] = field(default_factory=dict)
    cpu_threads: int = 1


@dataclass(slots=True)
class _Launch:
    token: int
    stream: int
    y: Any
    keep: Any  # the input, alive until the stage is done (another stream may have made it)
    out_kind: int
    out_id: int
    start: Any = None
    end: Any = None
    exec_s: float = 0.0  # cpu mode
    error: str = ""


def serialize_model(model: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


class _Frame:
    """A uint8 HxWx3 camera frame in an input slot, to be preprocessed by the worker (IN_FRAME)."""

    __slots__ = ("img",)

    def __init__(self, img: Any) -> None:
        self.img = img


def worker_main(cfg: WorkerConfig, ctrl: Connection, req_wake: Connection, done_wake: Connection) -> None:
    """Entry point of a worker process (the target of ``multiprocessing`` with the spawn context)."""
    # Ctrl-C in a terminal reaches the whole process group: the scheduler process stops its workers itself
    # (a worker also stops when the scheduler process is gone), so a worker must not die of it on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(cfg.env)  # before CUDA initialises: MPS pipe directory and SM share
    try:
        w = _Worker(cfg, ctrl, req_wake, done_wake)
        info = w.setup()
    except BaseException:  # noqa: BLE001 - reported to the scheduler, which raises BackendError
        try:
            ctrl.send(("error", traceback.format_exc()))
        except OSError:
            pass
        return
    ctrl.send(("ready", info))
    try:
        w.loop()
    except Exception:  # e.g. a CUDA event query failing: is the context gone?
        lost = w.context_error()
        if lost is not None:
            w.exit_context_lost(f"{traceback.format_exc().rstrip()}\n(probe: {lost})")
        raise
    finally:
        w.shutdown()


class _Worker:
    def __init__(self, cfg: WorkerConfig, ctrl: Connection, req_wake: Connection, done_wake: Connection) -> None:
        self.cfg = cfg
        self.ctrl = ctrl
        self.req_fd = req_wake.fileno()
        self.done_fd = done_wake.fileno()
        self._keep_conns = (req_wake, done_wake)
        os.set_blocking(self.req_fd, False)
        os.set_blocking(self.done_fd, False)
        self.cuda = cfg.device.startswith("cuda")
        self.keys: list[str] = []
        self.models: list[Any] = []
        self.local: dict[int, Any] = {}
        self.inflight: list[deque[_Launch]] = [deque() for _ in range(cfg.n_streams)]
        self.n_inflight = 0
        self.stop = False
        self.completed = 0
        self._events: list[tuple[Any, Any]] = []
        self._pinned: list[int] = []

    # -- start-up ------------------------------------------------------------------------------------
    def setup(self) -> dict[str, Any]:
        import torch

        self.torch = torch
        cfg = self.cfg
        lay = cfg.layout
        self.shm = SharedMemory(name=cfg.shm_name)
        buf = self.shm.buf
        assert buf is not None  # None only after close()
        self.req = ch.Ring(buf, lay.req_offset, lay.ring_capacity, ch.REQ_FIELDS)
        self.done = ch.Ring(buf, lay.done_offset, lay.ring_capacity, ch.DONE_FIELDS, ch.DONE_TEXT)
        self.in_u8 = [torch.frombuffer(buf, dtype=torch.uint8, count=lay.in_slot_bytes, offset=lay.in_slot(k))
                      for k in range(lay.in_slots)]
        self.out_u8 = [torch.frombuffer(buf, dtype=torch.uint8, count=lay.out_slot_bytes, offset=lay.out_slot(k))
                       for k in range(lay.out_slots)]
        t0 = time.perf_counter()
        models = {k: torch.load(io.BytesIO(b), map_location="cpu", weights_only=False)
                  for k, b in zip(cfg.model_keys, cfg.model_blobs, strict=True)}
        info: dict[str, Any] = {"pid": os.getpid(), "context": cfg.context, "generation": cfg.generation}
        torch.set_num_threads(max(1, cfg.cpu_threads))  # host work here is small: no intra-op thread pool
        if self.cuda:
            from daris_ros.runtime.backends.cuda_streams import CudaStreamsBackend

            self.dev = torch.device(cfg.device)
            torch.cuda.set_device(self.dev)
            props = torch.cuda.get_device_properties(self.dev)
            info["sm_count"] = props.multi_processor_count  # the MPS-limited count inside an MPS client
            info["device_name"] = props.name
            self.str = CudaStreamsBackend(n_contexts=1, n_streams=cfg.n_streams, device=cfg.device,
                                          cuda_graphs=cfg.cuda_graphs)
            self.str.start(models)
            info["graphs"] = len(self.str.graphs)
            info["capture_s"] = self.str.capture_seconds
            info["pinned"] = self._pin_slots()
            for key in models:
                self._add(key, self.str.models[key])
            torch.cuda.synchronize(self.dev)
        else:
            self.dev = torch.device("cpu")
            info["sm_count"] = 0
            info["pinned"] = False
            for key, m in models.items():
                m = m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)
                self._add(key, m)
        info["setup_s"] = time.perf_counter() - t0
        return info

    def _add(self, key: str, model: Any) -> None:
        self.keys.append(key)
        self.models.append(model)

    def _pin_slots(self) -> bool:
        """Register the slot regions as page-locked memory (asynchronous copies straight from/to them)."""
        lay = self.cfg.layout
        cudart = self.torch.cuda.cudart()
        ptr = self.in_u8[0].data_ptr() if self.in_u8 else 0
        size = lay.slots_bytes
        if not ptr or not size:
            return False
        try:
            err = cudart.cudaHostRegister(ptr, size, 0)
        except Exception:  # noqa: BLE001 - unpinned slots still work (staged, synchronous copies)
            return False
        if int(err) != 0:
            return False
        self._pinned.append(ptr)
        return True

    # -- an unusable CUDA context --------------------------------------------------------------------
    def context_error(self) -> str | None:
        """None while this process's CUDA context works (always, for CPU workers); else the error of a probe:
        a kernel on the device, then a device synchronisation."""
        if not self.cuda:
            return None
        torch = self.torch
        try:
            torch.ones(1, device=self.dev).add_(1.0)
            torch.cuda.synchronize(self.dev)
        except Exception as exc:  # noqa: BLE001 - any failure means the context cannot serve
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None

    def _stage_failed(self, exc: BaseException) -> str:
        """The error text of a stage that raised ``exc``; exits the process if the CUDA context is gone."""
        text = f"{type(exc).__name__}: {exc}"
        lost = self.context_error()
        if lost is not None:
            self.exit_context_lost(f"a stage failed: {text}\n(probe: {lost})")
        return text

    def exit_context_lost(self, why: str) -> NoReturn:
        """Exit at once with :data:`EXIT_CONTEXT_LOST` (no clean shutdown: CUDA calls fail or hang now); the
        scheduler sees the death, fails the stages in flight here and starts a replacement."""
        try:
            sys.stderr.write(f"daris mps worker c{self.cfg.context} (pid {os.getpid()}): the CUDA context is "
                             f"unusable, exiting ({EXIT_CONTEXT_LOST}): {why}\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_CONTEXT_LOST)

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self) -> None:
        req = self.req
        last_ctrl = time.monotonic()
        while not self.stop:
            progressed = False
            if req.pending():
                self._drain_wake()
                for rec in req.pop_all():
                    self._launch_request(rec)
                progressed = True
            if self.n_inflight:
                progressed = self._poll() or progressed
            now = time.monotonic()
            if not self.n_inflight and not req.pending():
                watched: list[int | Connection] = [self.req_fd, self.ctrl]
                r, _, _ = select.select(watched, [], [], 1.0)
                if self.req_fd in r and not req.pending():
                    self._drain_wake()  # a wake-up for records already served
                if self.ctrl in r:
                    self._handle_ctrl()
                last_ctrl = now
            elif now - last_ctrl > CTRL_CHECK_S:
                last_ctrl = now
                if self.ctrl.poll():
                    self._handle_ctrl()
            elif not progressed:
                os.sched_yield()

    def _drain_wake(self) -> None:
        try:
            while os.read(self.req_fd, 65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _handle_ctrl(self) -> None:
        try:
            msg = self.ctrl.recv()
        except (EOFError, OSError):
            self.stop = True  # the scheduler process is gone
            return
        op = msg[0]
        try:
            if op == "stop":
                self.stop = True
                return
            if op == "add_model":
                model = self.torch.load(io.BytesIO(msg[2]), map_location="cpu", weights_only=False)
                if self.cuda:
                    self._add_cuda(msg[1], model)
                else:
                    self._add(msg[1], model.eval())
                self.ctrl.send(("ok",))
            elif op == "info":
                reserved = int(self.torch.cuda.memory_reserved(self.dev)) if self.cuda else 0
                self.ctrl.send(("info", {"pid": os.getpid(), "cpu_s": time.process_time(),
                                         "completed": self.completed, "handles": len(self.local),
                                         "cuda_reserved": reserved}))
            elif op == "ping":
                self.ctrl.send(("pong", time.monotonic_ns()))
            else:
                self.ctrl.send(("error", f"unknown control message {op!r}"))
        except Exception:  # noqa: BLE001 - reported, the worker lives on
            self.ctrl.send(("error", traceback.format_exc()))

    def _add_cuda(self, key: str, model: Any) -> None:
        from daris_ros.runtime.backends.cuda_graphs import StageGraph, graph_stage_indices

        torch = self.torch
        model = model.to(self.dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.str.models[key] = model
        if self.cfg.cuda_graphs:
            ex = self.str.example_inputs(model)
            for s in range(self.cfg.n_streams):
                pool = torch.cuda.graph_pool_handle()
                cap = self.str.streams[0][s]
                for j in graph_stage_indices(model):  # a stage flagged eager gets no graph
                    self.str.graphs[(key, j, 0, s)] = StageGraph(model.stages[j], ex[j], cap, pool=pool)
            torch.cuda.synchronize(self.dev)
        self._add(key, model)

    # -- stages --------------------------------------------------------------------------------------
    def _input(self, rec: list[int]) -> Any:
        kind, ident = rec[proto.R_IN_KIND], rec[proto.R_IN_ID]
        if kind == proto.IN_HANDLE:
            try:
                return self.local.pop(ident)
            except KeyError:
                raise RuntimeError(f"input handle {ident} is not in worker c{self.cfg.context}") from None
        if kind == proto.IN_SLOT:
            return proto.tensor_in_slot(self.in_u8[ident], rec, proto.R_TENSOR)
        if kind == proto.IN_FRAME:
            return _Frame(proto.tensor_in_slot(self.in_u8[ident], rec, proto.R_TENSOR))  # uint8 HxWx3
        raise ValueError(f"unknown input kind {kind}")

    def _preprocess(self, frame: _Frame, model: int) -> Any:
        """Worker-side preprocessing of a stage-0 frame: resize and normalise on this worker's device (the
        stage's stream is current), as daris_ros.runtime.preprocess does on the host."""
        from daris_ros.runtime.preprocess import preprocess

        return preprocess(frame.img, self.models[model].input_size, device=self.dev if self.cuda else "cpu")

    def _launch_request(self, rec: list[int]) -> None:
        token = rec[proto.R_TOKEN]
        try:
            x = self._input(rec)
            la = self._launch(rec[proto.R_STREAM], rec[proto.R_MODEL], rec[proto.R_STAGE], x, rec[proto.R_OUT_KIND],
                              rec[proto.R_OUT_ID], token, graph=rec[proto.R_ROWS] <= 1)
        except Exception as exc:  # noqa: BLE001 - reported as this stage's error (the worker exits if CUDA is gone)
            la = _Launch(token, rec[proto.R_STREAM], None, None, proto.OUT_DISCARD, 0, error=self._stage_failed(exc))
            self._complete(la)
            self._wake_parent()
            return
        self.inflight[la.stream].append(la)
        self.n_inflight += 1

    def _take_events(self) -> tuple[Any, Any]:
        try:
            return self._events.pop()
        except IndexError:
            ev = self.torch.cuda.Event
            return ev(enable_timing=True), ev(enable_timing=True)

    def _launch(self, stream: int, model: int, stage: int, x: Any, out_kind: int, out_id: int, token: int,
                graph: bool = True) -> _Launch:
        """Launch one stage on ``stream``; ``graph``: its batch-1 CUDA graph may run it (False: a batch of
        several jobs, run eagerly)."""
        torch = self.torch
        key = self.keys[model]
        if not self.cuda:
            if isinstance(x, _Frame):
                x = self._preprocess(x, model)
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = self.models[model].run_stage(stage, x)
                if out_kind == proto.OUT_SLOT:
                    y = self._to_slot(y, out_id)
            return _Launch(token, stream, y, None, out_kind, out_id, exec_s=time.perf_counter() - t0)
        s = self.str.streams[0][stream]
        torch.cuda.set_stream(s)
        if isinstance(x, _Frame):  # upload (from the pinned slot), resize, normalise: on this stage's stream
            x = self._preprocess(x, model)
        start, end = self._take_events()
        start.record(s)
        g = self.str.graphs.get((key, stage, 0, stream)) if self.cfg.cuda_graphs and graph else None
        if g is not None and (stage > 0 or g.fits(x)):
            from daris_ros.runtime.backends.cuda_graphs import clone_io

            y = clone_io(g.launch(x))  # a stage-0 input in a pinned slot is copied in by DMA here
        else:
            if isinstance(x, torch.Tensor) and x.device.type == "cpu":
                x = x.to(self.dev, non_blocking=True)
            with torch.inference_mode():
                y = self.models[model].run_stage(stage, x)
        if out_kind == proto.OUT_SLOT:
            y = self._to_slot(y, out_id)
        end.record(s)
        return _Launch(token, stream, y, x, out_kind, out_id, start, end)

    def _to_slot(self, y: Any, k: int) -> Any:
        """Copy a final output (one tensor, or a tuple of fixed-shape tensors such as a detector's boxes, scores,
        labels and counts) into output slot ``k``; returns the slot views (what is reported)."""
        views = proto.output_slot_views(self.out_u8[k], y)
        for dst, src in zip(proto.output_parts(views), proto.output_parts(y), strict=True):
            dst.copy_(src, non_blocking=True)
        return views

    def _poll(self) -> bool:
        done_any = False
        for q in self.inflight:
            while q and (not self.cuda or q[0].end.query()):
                la = q.popleft()
                self.n_inflight -= 1
                self._complete(la)
                done_any = True
        if done_any:
            self._wake_parent()
        return done_any

    def _push(self, rec: array, text: bytes = b"") -> None:
        while not self.done.push(rec, text):  # the scheduler is behind by a whole ring: wait for it
            self._wake_parent()
            time.sleep(0.0001)

    def _complete(self, la: _Launch) -> None:
        exec_ns = 0
        if la.end is not None:
            exec_ns = int(la.start.elapsed_time(la.end) * 1e6)
            self._events.append((la.start, la.end))
        elif la.exec_s:
            exec_ns = int(la.exec_s * 1e9)
        rec = proto.new_completion(la.token)
        rec[proto.C_EXEC_NS] = exec_ns
        rec[proto.C_OUT_KIND] = la.out_kind
        rec[proto.C_OUT_ID] = la.out_id
        text = b""
        if la.error:
            rec[proto.C_STATUS] = proto.STATUS_ERROR
            text = la.error.encode("utf-8", "replace")
        elif la.out_kind == proto.OUT_HANDLE:
            self.local[la.out_id] = la.y
        elif la.out_kind == proto.OUT_SLOT:
            proto.describe_output(rec, la.y)
        self.completed += 1
        self._push(rec, text)

    def _wake_parent(self) -> None:
        try:
            os.write(self.done_fd, b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the scheduler has wake-ups pending anyway
        except BrokenPipeError:
            self.stop = True

    def shutdown(self) -> None:
        try:
            if self.cuda:
                self.torch.cuda.synchronize(self.dev)
                cudart = self.torch.cuda.cudart()
                for ptr in self._pinned:
                    cudart.cudaHostUnregister(ptr)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        self.local.clear()
        self.in_u8 = self.out_u8 = []
        for r in (self.req, self.done):
            r.release()
        try:
            self.shm.close()
        except BufferError:
            pass
