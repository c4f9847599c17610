"""``mps`` backend: N_c worker processes, each an MPS client (one DARIS context) with N_s CUDA streams.

The paper's contexts are MPS contexts; stock PyTorch only uses the primary context, so here each context
is a process (:mod:`.mps_worker`) started with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` from eq. 9
(``N_SM = ceil_even(OS * N_SM,max / N_c)``; MPS gives SMs in pairs, so ``sm_granularity = 2``). The
in-process counterpart is ``green`` (green contexts); docs/gpu_runtime.md compares the two.

* **Daemon.** :class:`~.mps_daemon.MpsDaemon` uses the control daemon running in the pipe directory
  (``pipe_dir``, else ``DARIS_MPS_PIPE_DIRECTORY``, ``CUDA_MPS_PIPE_DIRECTORY``, ``/tmp/nvidia-mps``) or
  starts one, and :meth:`MpsBackend.close` stops a daemon this backend started. No
  ``nvidia-cuda-mps-control``, or a daemon that does not start, is a :class:`BackendError` saying so.
* **Models.** Every model is resident in every worker (migrating an LP task costs no load time); each
  worker captures a CUDA graph per (model, stage, stream), as ``str``/``green`` do.
* **Data.** The scheduler process never touches CUDA (``device`` is ``"cpu"``: the engine preprocesses
  on the host). A stage-0 input is copied once into a shared-memory slot that the worker has pinned; the
  worker's graph copies it to the GPU straight from there. Intermediate outputs stay in the worker
  (:class:`WorkerTensor` handles: a job stays in its context for all its stages); a final output comes
  back through an output slot. Requests and completions travel through shared-memory rings
  (:mod:`.shm_channel`), with one wake-up byte per message through a pipe.
* **Two ways to drive it**, like ``str``: the :class:`~.base.Backend` protocol (``submit`` writes the
  request at once; one reader thread blocks on the workers' wake-up pipes and calls ``done``), used by
  the engine; or the lean single-threaded API (:meth:`MpsBackend.send` / :meth:`MpsBackend.poll`) used by
  daris-bench. :meth:`MpsBackend.send_job` hands a whole job to its context's worker, whose own stage
  queue (the core's 8 levels + EDF) dispatches the stages: no round trip between stages.
* **Faults.** ``worker_alive``/``worker_died_at``/``restart_worker`` are the engine watchdog's hook
  (:mod:`daris_ros.runtime.watchdog`). When a worker process dies (SIGKILL, crash) the reader thread sees
  its sentinel, fails every stage in flight there with :class:`WorkerLost` (their jobs end with an error,
  not met) and only then reports the worker dead; the watchdog calls ``restart_worker``, which starts a
  replacement (or takes a ready spare, ``spares=1``) and returns once it serves. Stage-0 requests that
  arrive meanwhile wait for it; a later stage of a job whose data was in the dead worker fails at once
  (its input is gone). A worker reported hung is killed and replaced the same way if its oldest stage
  has been in it for ``hang_after`` seconds (a stage that waited for a replacement only looks hung).
  When the MPS daemon and server die, the workers' CUDA contexts die with the server: a worker then exits
  (``mps_worker.EXIT_CONTEXT_LOST``) or hangs (killed as above), and before each replacement the daemon is
  started again if it no longer answers (``daemon_restarts``).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import multiprocessing as mp
import os
import select
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from daris_ros.runtime.backends import shm_channel as ch
from daris_ros.runtime.backends.base import BackendError, StageDone
from daris_ros.runtime.backends.mps_daemon import MpsDaemon
from daris_ros.runtime.backends.mps_worker import WorkerConfig, serialize_model, worker_main
from daris_ros.runtime.memory import SOURCE_WORKER, ContextMemory, traceback_summary

log = logging.getLogger("daris_ros.backends.mps")

STARTING, READY, DEAD = "starting", "ready", "dead"
_ZERO_REQ = array("q", bytes(8 * ch.REQ_FIELDS))


class WorkerLost(BackendError):
    """The worker process of a context died (or was replaced) with this stage, or its input, in it.

    ``in_flight_loss``: the stage itself was running or queued in the worker that died (its input may
    still exist: the engine's watchdog retries it); False: its input was a worker-resident output of a
    worker that is gone (nothing to retry)."""

    in_flight_loss: bool = False


@dataclass(frozen=True, slots=True)
class WorkerTensor:
    """A stage output kept in the worker of ``context`` (generation ``generation``) under ``hid``."""

    context: int
    generation: int
    hid: int


class ExampleInput:
    """Marker input: the worker's own example input of the requested (model, stage), resident on the GPU
    (nothing is transferred). Use the instance :data:`EXAMPLE_INPUT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXAMPLE_INPUT"


EXAMPLE_INPUT = ExampleInput()


@dataclass(slots=True)
class Completion:
    """One finished stage (lean API). Times are ``time.monotonic_ns`` (one clock for all processes)."""

    token: int
    context: int
    stream: int
    output: Any
    exec_time: float
    error: BaseException | None
    t_submit: int
    t_pick: int = 0
    t_launch: int = 0
    t_done: int = 0
    t_recv: int = 0
    done: StageDone | None = field(default=None, repr=False)
    stage_times: tuple[float, ...] = ()  # a whole job (send_job): its stage times, seconds


@dataclass(slots=True)
class _Pending:
    token: int
    context: int
    stream: int
    model: str
    stage: int
    done: StageDone | None
    t_submit: int
    x: Any = None
    out_kind: int = -1
    timed: bool = True
    in_slot: int = -1
    out_slot: int = -1
    hid: int = -1
    job: tuple[int, int, tuple[int, ...], int, bool] | None = None  # send_job: prio, release, deadlines, flags, host
    t_sent: float = 0.0  # time.monotonic() when written to the current worker


@dataclass(eq=False)
class _WorkerSlot:
    """One worker process (one generation of one context) and the parent's ends of its channel."""

    context: int
    generation: int
    process: Any
    shm: SharedMemory
    layout: ch.ChannelLayout
    ctrl: Connection
    req_w: Connection
    done_r: Connection
    state: str = STARTING
    info: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, _Pending] = field(default_factory=dict)
    died_at: float | None = None
    lost_handled: bool = False
    spawned_at: float = 0.0
    ready_at: float = 0.0

    def __post_init__(self) -> None:
        import torch

        self.req = ch.Ring(self.shm.buf, self.layout.req_offset, self.layout.ring_capacity, ch.REQ_FIELDS)
        self.done = ch.Ring(self.shm.buf, self.layout.done_offset, self.layout.ring_capacity, ch.DONE_FIELDS,
                            ch.DONE_TEXT)
        lay = self.layout
        self.in_u8 = [torch.frombuffer(self.shm.buf, dtype=torch.uint8, count=lay.in_slot_bytes,
                                       offset=lay.in_slot(k)) for k in range(lay.in_slots)]
        self.out_u8 = [torch.frombuffer(self.shm.buf, dtype=torch.uint8, count=lay.out_slot_bytes,
                                        offset=lay.out_slot(k)) for k in range(lay.out_slots)]
        self.in_pool = ch.SlotPool(lay.in_slots)
        self.out_pool = ch.SlotPool(lay.out_slots)
        self.hids = itertools.count(1)
        self.req_fd = self.req_w.fileno()
        self.done_fd = self.done_r.fileno()
        os.set_blocking(self.req_fd, False)
        os.set_blocking(self.done_fd, False)
        self.ctrl_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def release(self, unlink: bool = True) -> None:
        """Close the parent's ends (the process must be gone)."""
        for c in (self.ctrl, self.req_w, self.done_r):
            try:
                c.close()
            except OSError:
                pass
        self.in_u8 = self.out_u8 = []
        self.req.release()
        self.done.release()
        try:
            self.shm.close()
        except BufferError:
            pass
        if unlink:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def mps_thread_percentage(sm_count: int, n_sm_max: int) -> float:
    """``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` for ``sm_count`` SMs: half an SM above the share, so that MPS
    (which hands out SMs in pairs, rounding down: 25% of 132 gives 32) gives exactly ``sm_count``."""
    return min(100.0, 100.0 * (sm_count + 0.5) / n_sm_max)


class MpsBackend:
    """N_c MPS client processes x N_s streams (see the module docstring)."""

    name = "mps"
    worker_scope = "context"  # one worker process serves all N_s streams of its context

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cuda", cuda_graphs: bool = True,
                 oversubscription: float = 1.0, pipe_dir: str | None = None, log_dir: str | None = None,
                 sm_granularity: int = 2, spares: int | None = None, start_timeout: float = 300.0,
                 hang_after: float = 1.0, cpu_workers: bool = False, frame_pixels: int = 0) -> None:
        if n_contexts < 1 or n_streams < 1:
            raise BackendError(f"need n_contexts >= 1 and n_streams >= 1, got {n_contexts} x {n_streams}")
        from daris_ros.core import sm_per_context_eq9

        self.n_contexts = n_contexts
        self.n_streams = n_streams
        self.cuda_graphs = cuda_graphs
        self.oversubscription = oversubscription
        self.sm_granularity = sm_granularity
        self.cpu_workers = cpu_workers
        # worker-side preprocessing: camera frames up to this many pixels go to the workers as uint8 and are
        # resized and normalised there (on the GPU); 0: the engine preprocesses on the host
        self.frame_pixels = int(frame_pixels)
        self.preprocess_in_worker = self.frame_pixels > 0
        self.device = "cpu"  # the scheduler process stays off the GPU: frames are preprocessed on the host
        self.start_timeout = start_timeout
        self.spares = int(os.environ.get("DARIS_MPS_SPARES", "0")) if spares is None else spares
        self.hang_after = hang_after
        if cpu_workers:
            self.gpu_index = -1
            self.n_sm_max = 132
            self.worker_device = "cpu"
            self.torch_device: Any = None
        else:
            import torch

            if not torch.cuda.is_available():
                raise BackendError("backend 'mps' needs a CUDA device, but torch sees none "
                                   "(torch.cuda.is_available() is False); use backend 'cpu'")
            dev = torch.device("cuda" if device in ("", "cpu") else device)
            if dev.type != "cuda":
                raise BackendError(f"device {device!r} is not a CUDA device ('cuda' or 'cuda:N')")
            self.gpu_index = dev.index if dev.index is not None else 0
            if self.gpu_index >= torch.cuda.device_count():
                raise BackendError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
            # a device query: no CUDA context is created in this process
            self.n_sm_max = torch.cuda.get_device_properties(self.gpu_index).multi_processor_count
            self.worker_device = f"cuda:{self.gpu_index}"
            self.torch_device = torch.device("cuda", self.gpu_index)
        try:
            self.sm_per_context = sm_per_context_eq9(oversubscription, self.n_sm_max, n_contexts, sm_granularity)
        except ValueError as exc:
            raise BackendError(f"mps: {exc}") from exc
        self.thread_percentage = mps_thread_percentage(self.sm_per_context, self.n_sm_max)
        self.daemon: MpsDaemon | None = None if cpu_workers else MpsDaemon(pipe_dir, log_dir)
        if self.daemon is not None:
            self.daemon.executable()  # a missing nvidia-cuda-mps-control is reported before any work
        self.models: dict[str, Any] = {}
        self._model_index: dict[str, int] = {}
        self._n_stages: dict[str, int] = {}
        self._blobs: list[bytes] = []
        self._layout: ch.ChannelLayout | None = None
        self.workers: list[_WorkerSlot] = []
        self._spare_slots: deque[_WorkerSlot] = deque()
        self._locks = [threading.Lock() for _ in range(n_contexts)]
        self._backlog: list[list[_Pending]] = [[] for _ in range(n_contexts)]
        self._generations = [0] * n_contexts
        self._spare_gen = itertools.count(1_000_000)
        self._tokens = itertools.count(1)
        self._restart_lock = threading.Lock()
        self._immediate: deque[tuple[StageDone, BaseException]] = deque()
        self._lean_extra: list[Completion] = []
        self._lean_died: list[_WorkerSlot] = []
        self._check_alive_at = 0.0
        self._reader: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._mp = mp.get_context("spawn")
        self._closed = False
        self._started = False
        self.faults: list[dict[str, Any]] = []  # one record per replaced worker (backend's own view)
        self.daemon_restarts = 0  # the MPS daemon found dead and started again (_ensure_daemon)
        self.daemon_restart_s: list[float] = []  # how long each of those restarts took (until it answered)
        self._spare_thread: threading.Thread | None = None

    # -- start-up ------------------------------------------------------------------------------------
    def _make_layout(self, models: Mapping[str, Any]) -> ch.ChannelLayout:
        in_bytes = out_bytes = 0
        for m in models.values():
            h, w = m.input_size
            in_bytes = max(in_bytes, 3 * h * w * 4)
            if getattr(m, "kind", "classification") == "segmentation":
                out_bytes = max(out_bytes, m.num_classes * h * w * 4)
            else:
                out_bytes = max(out_bytes, int(getattr(m, "num_classes", 1000)) * 4, 64 * 1024)
        in_bytes = max(in_bytes, 3 * self.frame_pixels)  # a raw uint8 frame (worker-side preprocessing)
        return ch.ChannelLayout.make(self.n_streams, in_bytes, out_bytes)

    def start(self, models: Mapping[str, Any]) -> None:
        if self._started:
            raise BackendError("mps: start() was called already")
        self._started = True
        atexit.register(self.close)
        for key, m in models.items():
            self.models[key] = m
            self._model_index[key] = len(self._blobs)
            self._n_stages[key] = m.num_stages
            self._blobs.append(serialize_model(m))
        self._layout = self._make_layout(models)
        if self.daemon is not None:
            self.daemon.ensure()
        t0 = time.monotonic()
        started: list[_WorkerSlot] = []
        try:  # all workers start at once (import, CUDA/MPS init, model load, graph capture in parallel)
            for c in range(self.n_contexts):
                started.append(self._spawn(c, 0))
            for _ in range(self.spares):
                started.append(self._spawn(-1, next(self._spare_gen)))
            for s in started:
                self._await_ready(s, t0 + self.start_timeout)
        except BaseException:
            for s in started:
                self._stop_slot(s, graceful=False)
            self._stop_daemon()
            raise
        slots = started[:self.n_contexts]
        self.workers = slots
        self._spare_slots.extend(started[self.n_contexts:])
        sms = [s.info.get("sm_count", 0) for s in slots]
        log.info("mps: %d workers x %d streams up in %.1f s, SMs per worker %s (eq. 9: %d, %.2f%% threads)",
                 self.n_contexts, self.n_streams, time.monotonic() - t0, sms, self.sm_per_context,
                 self.thread_percentage)
        if not self.cpu_workers and any(n != self.sm_per_context for n in sms):
            log.warning("mps: workers report %s SMs, eq. 9 asks for %d", sms, self.sm_per_context)

    def _spawn(self, context: int, generation: int) -> _WorkerSlot:
        assert self._layout is not None
        lay = self._layout
        shm = SharedMemory(create=True, size=lay.size)
        env = {}
        if self.daemon is not None:
            env = {**self.daemon.env(), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": f"{self.thread_percentage:.4f}"}
        cfg = WorkerConfig(context=context, generation=generation, n_streams=self.n_streams,
                           device=self.worker_device, cuda_graphs=self.cuda_graphs, shm_name=shm.name, layout=lay,
                           model_keys=tuple(self.models), model_blobs=tuple(self._blobs), env=env)
        parent_ctrl, child_ctrl = self._mp.Pipe(duplex=True)
        req_r, req_w = self._mp.Pipe(duplex=False)
        done_r, done_w = self._mp.Pipe(duplex=False)
        proc = self._mp.Process(target=worker_main, args=(cfg, child_ctrl, req_r, done_w), daemon=True,
                                name=f"daris-mps-c{context}g{generation}")
        try:
            proc.start()
        except BaseException:
            for conn in (parent_ctrl, child_ctrl, req_r, req_w, done_r, done_w):
                conn.close()
            shm.close()
            shm.unlink()
            raise
        finally:
            for conn in (child_ctrl, req_r, done_w):
                conn.close()
        slot = _WorkerSlot(context, generation, proc, shm, lay, parent_ctrl, req_w, done_r)
        slot.spawned_at = time.monotonic()
        return slot

    def _await_ready(self, slot: _WorkerSlot, deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"mps: worker c{slot.context} (pid {slot.pid}) did not become ready in "
                                   f"{self.start_timeout:.0f} s{self._daemon_hint()}")
            r, _, _ = select.select([slot.ctrl, slot.process.sentinel], [], [], min(left, 1.0))
            if slot.ctrl in r:
                try:
                    msg = slot.ctrl.recv()
                except (EOFError, OSError):
                    msg = ("error", "the worker exited during start-up")
                if msg[0] == "ready":
                    slot.info = msg[1]
                    slot.state = READY
                    slot.ready_at = time.monotonic()
                    return
                raise BackendError(f"mps: worker c{slot.context} failed to start: {traceback_summary(msg[1])}\n"
                                   f"{msg[1]}{self._daemon_hint()}")
            if slot.process.sentinel in r and not slot.ctrl.poll():
                raise BackendError(f"mps: worker c{slot.context} exited during start-up (exit code "
                                   f"{slot.process.exitcode}){self._daemon_hint()}")

    def _daemon_hint(self) -> str:
        if self.daemon is None:
            return ""
        return (f"\n(MPS pipe directory {self.daemon.pipe_dir}; daemon log tail:\n{self.daemon.log_tail()})")

    def sm_counts(self) -> list[int]:
        """SMs per context as each worker's device properties report them (inside its MPS client)."""
        return [int(s.info.get("sm_count", 0)) for s in self.workers]

    def add_model(self, key: str, model: Any) -> None:
        """Make one more model resident in every worker (run-time task addition)."""
        assert self._layout is not None
        need = self._make_layout({key: model})
        if need.in_slot_bytes > self._layout.in_slot_bytes or need.out_slot_bytes > self._layout.out_slot_bytes:
            raise BackendError(f"mps: model {key!r} needs larger frame slots than the workers were started with; "
                               "restart the node with it in the task list")
        blob = serialize_model(model)
        for s in self.workers + list(self._spare_slots):
            reply = self._ctrl_call(s, ("add_model", key, blob), timeout=300.0)
            if reply[0] != "ok":
                raise BackendError(f"mps: worker c{s.context} could not load {key!r}:\n{reply[1]}")
        self.models[key] = model
        self._model_index[key] = len(self._blobs)
        self._n_stages[key] = model.num_stages
        self._blobs.append(blob)

    def _ctrl_call(self, slot: _WorkerSlot, msg: tuple, timeout: float = 60.0) -> tuple:
        with slot.ctrl_lock:
            slot.ctrl.send(msg)
            if not slot.ctrl.poll(timeout):
                raise BackendError(f"mps: worker c{slot.context} did not answer {msg[0]!r} in {timeout:.0f} s")
            return slot.ctrl.recv()

    # -- sending stages ------------------------------------------------------------------------------
    def _write(self, slot: _WorkerSlot, p: _Pending) -> None:
        """Encode ``p`` into ``slot``'s request ring (caller holds the context lock)."""
        rec = array("q", _ZERO_REQ)
        rec[ch.R_TOKEN] = p.token
        rec[ch.R_OP] = ch.OP_RUN
        rec[ch.R_STREAM] = p.stream
        rec[ch.R_MODEL] = self._model_index[p.model]
        rec[ch.R_STAGE] = p.stage
        rec[ch.R_TIMED] = int(p.timed)
        if p.job is not None:
            prio, release, deadlines, flags, host = p.job
            rec[ch.R_OP] = ch.OP_JOB
            rec[ch.R_PRIO] = prio
            rec[ch.R_NSTAGES] = len(deadlines)
            rec[ch.R_RELEASE] = release
            for j, d in enumerate(deadlines):
                rec[ch.R_DEADLINES + j] = d
            rec[ch.R_FLAGS] = flags
            rec[ch.R_HOST_TIME] = int(host)
        x = p.x
        if isinstance(x, WorkerTensor):
            if x.context != slot.context or x.generation != slot.generation:
                raise WorkerLost(f"stage input {x} is not in the current worker of context {slot.context} "
                                 f"(generation {slot.generation}): it was lost with a replaced worker")
            rec[ch.R_IN_KIND] = ch.IN_HANDLE
            rec[ch.R_IN_ID] = x.hid
        elif isinstance(x, ExampleInput):
            rec[ch.R_IN_KIND] = ch.IN_EXAMPLE
        else:
            import torch

            if not isinstance(x, torch.Tensor):
                raise BackendError(f"mps: a stage-0 input must be a tensor, got {type(x).__name__}")
            if x.device.type != "cpu":
                x = x.cpu()  # (the engine preprocesses on the host for this backend; this is a fallback copy)
            if not x.is_contiguous():
                x = x.contiguous()
            nbytes = x.numel() * x.element_size()
            if nbytes > slot.layout.in_slot_bytes or x.dim() > 4:
                raise BackendError(f"mps: input {tuple(x.shape)} does not fit a frame slot "
                                   f"({slot.layout.in_slot_bytes} B)")
            k = slot.in_pool.take()
            if k is None:
                raise BackendError(f"mps: no free input slot in context {slot.context} (more than "
                                   f"{slot.layout.in_slots} stage-0 inputs in flight)")
            ctypes.memmove(slot.in_u8[k].data_ptr(), x.data_ptr(), nbytes)
            p.in_slot = k
            frame = x.dtype == torch.uint8 and x.dim() == 3 and x.shape[-1] == 3
            if frame and (p.stage != 0 or p.job is not None):
                slot.in_pool.give(k)
                p.in_slot = -1
                raise BackendError("mps: a uint8 frame is only accepted as the input of stage 0 in stage mode")
            rec[ch.R_IN_KIND] = ch.IN_FRAME if frame else ch.IN_SLOT
            rec[ch.R_IN_ID] = k
            rec[ch.R_NDIM] = x.dim()
            for i, d in enumerate(x.shape):
                rec[ch.R_DIMS + i] = d
            rec[ch.R_DTYPE] = ch.DTYPES.index(str(x.dtype).removeprefix("torch."))
        out_kind = p.out_kind
        if out_kind < 0:
            out_kind = ch.OUT_SLOT if p.stage == self._n_stages[p.model] - 1 or p.job else ch.OUT_HANDLE
        if p.job is not None:
            pass  # a job's final output goes to an output slot the worker picks (rotating per stream)
        elif out_kind == ch.OUT_SLOT:
            k = slot.out_pool.take()
            if k is None:
                if p.in_slot >= 0:
                    slot.in_pool.give(p.in_slot)
                    p.in_slot = -1
                raise BackendError(f"mps: no free output slot in context {slot.context}")
            p.out_slot = k
            rec[ch.R_OUT_ID] = k
        elif out_kind == ch.OUT_HANDLE:
            p.hid = next(slot.hids)
            rec[ch.R_OUT_ID] = p.hid
        p.out_kind = out_kind
        rec[ch.R_OUT_KIND] = out_kind
        slot.pending[p.token] = p
        p.t_sent = time.monotonic()
        deadline = 0.0
        while not slot.req.push(rec):
            now = time.monotonic()
            deadline = deadline or now + 2.0
            if now > deadline or not slot.alive():
                del slot.pending[p.token]
                for pool, k in ((slot.in_pool, p.in_slot), (slot.out_pool, p.out_slot)):
                    if k >= 0:
                        pool.give(k)
                raise BackendError(f"mps: the request ring of context {slot.context} stays full")
            time.sleep(0.0001)
        try:
            os.write(slot.req_fd, b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the worker has wake-ups pending
        except BrokenPipeError:
            pass  # the worker died: its sentinel is reported by the reader

    def send(self, context: int, stream: int, model: str, stage: int, x: Any, *, out_kind: int = -1,
             timed: bool = True, done: StageDone | None = None) -> int:
        """Lean API: enqueue one stage on (context, stream) and return its token at once.

        ``x``: a host tensor (stage 0; copied into a frame slot), a :class:`WorkerTensor` of this context
        or an :class:`ExampleInput`. ``out_kind``: ``shm_channel.OUT_*`` (default: a final stage's output
        comes back to this process, other outputs stay in the worker). A stage sent while the context's
        worker is being replaced waits for the replacement, unless its input was lost (WorkerLost).
        """
        if self._closed:
            raise BackendError("backend is closed")
        token = next(self._tokens)
        p = _Pending(token, context, stream, model, stage, done, time.monotonic_ns(), x, out_kind, timed)
        self._enqueue(p)
        return token

    def _enqueue(self, p: _Pending) -> None:
        """Write ``p`` to its context's worker, or keep it for the replacement of a dead worker. A stage-0
        input waits (up to 2 s) for a free frame slot while all are in flight."""
        host_input = not isinstance(p.x, (WorkerTensor, ExampleInput))
        deadline = 0.0
        while True:
            with self._locks[p.context]:
                slot = self.workers[p.context]
                if slot.state != READY:
                    if isinstance(p.x, WorkerTensor):
                        raise WorkerLost(f"stage input {p.x} was lost with the worker of context {p.context}")
                    self._backlog[p.context].append(p)
                    return
                if not host_input or len(slot.in_pool):
                    self._write(slot, p)
                    return
            now = time.monotonic()
            deadline = deadline or now + 2.0
            if now > deadline:
                raise BackendError(f"mps: no free input slot in context {p.context} for 2 s (more than "
                                   f"{slot.layout.in_slots} frames in flight)")
            if self._reader is None:  # lean mode: collect here (what completes is handed out by the next poll)
                self._lean_extra.extend(self._collect(self._lean_died))
            else:
                time.sleep(0.0001)  # the reader thread frees slots as completions arrive

    def send_job(self, context: int, model: str, x: Any, *, priority: int, release: float,
                 deadlines: tuple[float, ...], host_time: bool = False, flags: int = 0,
                 out_kind: int = ch.OUT_SLOT) -> int:
        """Lean API, worker-side stage queue: hand a whole job to the worker of ``context``.

        The worker queues its stages in its own 8-level EDF queue (``stage_level`` of the core, ``flags``:
        bit 0 no_last, 1 no_prior, 2 no_fixed) and dispatches them on its idle streams; the only messages
        are this request and the job's completion (with every stage's time: GPU events, or launch to
        completion seen when ``host_time``). ``release``/``deadlines`` are absolute ``time.monotonic``
        seconds (``time.perf_counter`` is the same clock on Linux). Stage mode (:meth:`send`) and job mode
        must not run on one backend at the same time (they share the output slots).
        """
        if len(deadlines) > ch.MAX_STAGES:
            raise BackendError(f"mps: a job of more than {ch.MAX_STAGES} stages cannot be sent whole")
        if self._closed:
            raise BackendError("backend is closed")
        token = next(self._tokens)
        p = _Pending(token, context, -1, model, 0, None, time.monotonic_ns(), x, out_kind, True,
                     job=(int(priority), int(release * 1e9), tuple(int(d * 1e9) for d in deadlines), flags,
                          host_time))
        self._enqueue(p)
        return token

    # -- the Backend protocol ------------------------------------------------------------------------
    def accepts_frame(self, height: int, width: int) -> bool:
        """Whether a camera frame of this size goes to the worker as is (worker-side preprocessing)."""
        return self.preprocess_in_worker and 0 < height * width <= self.frame_pixels

    def submit(self, context: int, stream: int, model: str, stage: int, x: Any, done: StageDone) -> None:
        if self._closed:
            raise BackendError("backend is closed")
        self._ensure_reader()
        try:
            self.send(context, stream, model, stage, x, done=done)
        except BackendError as exc:
            self._immediate.append((done, exc))
            self._wake_reader()

    def run_now(self, model: str, stage: int, x: Any) -> tuple[Any, float]:
        ev = threading.Event()
        box: list[Any] = []

        def cb(y: Any, dt: float, err: BaseException | None) -> None:
            box.extend((y, dt, err))
            ev.set()

        self.submit(0, 0, model, stage, x, cb)
        if not ev.wait(60.0):
            raise BackendError("mps: run_now got no answer from worker c0 in 60 s")
        if box[2] is not None:
            raise box[2]
        return box[0], box[1]

    def _ensure_reader(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(target=self._reader_loop, name="daris-mps-reader", daemon=True)
            self._reader.start()

    def _wake_reader(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, InterruptedError):
            pass

    def _reader_loop(self) -> None:
        while not self._closed:
            self._wait(0.1)
            while self._immediate:
                done, exc = self._immediate.popleft()
                self._call(done, None, 0.0, exc)
            died: list[_WorkerSlot] = []
            for c in self._collect(died):
                self._call(c.done, c.output, c.exec_time, c.error)
            for slot in died:  # only now may the watchdog see it dead: its stages have been failed
                slot.lost_handled = True

    @staticmethod
    def _call(done: StageDone | None, y: Any, dt: float, err: BaseException | None) -> None:
        if done is None:
            return
        try:
            done(y, dt, err)
        except Exception:  # noqa: BLE001 - a failing consumer must not stop completions
            log.exception("stage completion callback failed")

    # -- completions ---------------------------------------------------------------------------------
    def _wait(self, timeout: float) -> None:
        """Block until a worker posts a completion, a worker exits, or ``timeout`` passes."""
        fds: list[Any] = [self._wake_r]
        for s in self.workers:
            if s.state != DEAD:
                fds.append(s.done_fd)
                fds.append(s.process.sentinel)
        try:
            r, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):  # a worker's fds were closed meanwhile (replaced)
            return
        for fd in r:
            if isinstance(fd, int) and (fd == self._wake_r or any(fd == s.done_fd for s in self.workers)):
                try:
                    while os.read(fd, 65536):
                        pass
                except OSError:  # BlockingIOError: drained (or closed meanwhile)
                    pass
            else:
                self._check_alive_at = 0.0  # a sentinel: a worker exited

    def _collect(self, died: list[_WorkerSlot]) -> list[Completion]:
        """Every completion posted so far; dead workers' stages in flight come back as WorkerLost (and the
        dead workers are appended to ``died``: the caller sets ``lost_handled`` once it delivered them)."""
        out: list[Completion] = []
        if self._lean_extra:
            out.extend(self._lean_extra)
            self._lean_extra.clear()
        now = time.monotonic()
        check = now >= self._check_alive_at  # process liveness costs a syscall: every 20 ms, or on a sentinel
        if check:
            self._check_alive_at = now + 0.02
        for slot in list(self.workers):
            if slot.state == DEAD:
                continue
            if slot.done.pending():
                out.extend(self._drain(slot))
            if check and slot.state == READY and not slot.alive():
                out.extend(self._drain(slot))  # what it finished before dying
                out.extend(self._on_death(slot))
                died.append(slot)
        return out

    def _drain(self, slot: _WorkerSlot) -> list[Completion]:
        import torch

        out = []
        with self._locks[slot.context]:
            if slot.state == DEAD:  # (also: its memory may be released already)
                return out
            recs = slot.done.pop_all(text_if=ch.C_STATUS)
            if not recs:
                return out
            t_recv = time.monotonic_ns()
            for rec in recs:
                if rec[ch.C_STATUS] == ch.STATUS_SLOT_FREE:  # a job's frame is on the GPU: its slot is free
                    p = slot.pending.get(rec[ch.C_TOKEN])
                    if p is not None and p.in_slot >= 0:
                        slot.in_pool.give(p.in_slot)
                        p.in_slot = -1
                    continue
                p = slot.pending.pop(rec[ch.C_TOKEN], None)
                if p is None:
                    continue
                if p.in_slot >= 0:
                    slot.in_pool.give(p.in_slot)
                err: BaseException | None = None
                y: Any = None
                if rec[ch.C_STATUS] != ch.STATUS_OK:
                    text = rec[-1] if len(rec) > ch.DONE_FIELDS else ""
                    err = BackendError(f"mps worker c{slot.context}: {text}")
                    if p.out_slot >= 0:
                        slot.out_pool.give(p.out_slot)
                elif p.out_kind == ch.OUT_SLOT:
                    dtype = getattr(torch, ch.DTYPES[rec[ch.C_DTYPE]])
                    shape = rec[ch.C_DIMS:ch.C_DIMS + rec[ch.C_NDIM]]
                    n = 1
                    for d in shape:
                        n *= d
                    y = slot.out_u8[rec[ch.C_OUT_ID]][:n * dtype.itemsize].view(dtype).view(shape).clone()
                    if p.out_slot >= 0:
                        slot.out_pool.give(p.out_slot)
                elif p.out_kind == ch.OUT_HANDLE:
                    y = WorkerTensor(slot.context, slot.generation, p.hid)
                times = tuple(rec[ch.C_STAGE_NS + j] * 1e-9 for j in range(rec[ch.C_NSTAGES])) if p.job else ()
                out.append(Completion(p.token, slot.context, p.stream, y, rec[ch.C_EXEC_NS] * 1e-9, err,
                                      p.t_submit, rec[ch.C_T_PICK], rec[ch.C_T_LAUNCH], rec[ch.C_T_DONE], t_recv,
                                      p.done, times))
        return out

    def _on_death(self, slot: _WorkerSlot) -> list[Completion]:
        """Mark ``slot`` dead and fail its stages in flight (WorkerLost)."""
        with self._locks[slot.context]:
            if slot.state == DEAD:
                return []
            slot.state = DEAD
            slot.died_at = time.monotonic()
            lost = list(slot.pending.values())
            slot.pending.clear()
        code = slot.process.exitcode
        log.warning("mps: worker c%d (pid %s) died (exit code %s) with %d stages in flight", slot.context,
                    slot.pid, code, len(lost))
        err = WorkerLost(f"worker c{slot.context} (pid {slot.pid}) died (exit code {code}) running this stage")
        err.in_flight_loss = True
        now = time.monotonic_ns()
        return [Completion(p.token, slot.context, p.stream, None, 0.0, err, p.t_submit, t_recv=now, done=p.done)
                for p in lost]

    def poll(self, timeout: float = 0.0) -> list[Completion]:
        """Lean API: the completions posted so far; with ``timeout`` > 0, waits up to that long for one."""
        if self._reader is not None:
            raise BackendError("mps: poll() cannot be used once submit() started the reader thread")
        died, self._lean_died = self._lean_died, []
        out = self._collect(died)
        if not out and timeout > 0:
            self._wait(timeout)
            out = self._collect(died)
        for slot in died:
            slot.lost_handled = True
        return out

    # -- worker faults: the engine watchdog's hook -----------------------------------------------------
    def worker_alive(self, context: int, stream: int) -> bool:
        """False once the worker of ``context`` died and its stages in flight were failed."""
        slot = self.workers[context]
        return not (slot.state == DEAD and slot.lost_handled)

    def worker_died_at(self, context: int, stream: int) -> float | None:
        slot = self.workers[context]
        return slot.died_at if slot.state == DEAD else None

    def worker_pid(self, context: int) -> int | None:
        return self.workers[context].pid

    def restart_worker(self, context: int, stream: int) -> None:
        """Replace the worker of ``context`` (dead, or alive but hung: then it is killed first) and return
        once the replacement serves; stages that waited for it are sent to it. Idempotent while a
        replacement is being started for the same death."""
        with self._restart_lock:
            if self._closed:
                return
            old = self.workers[context]
            if old.state == READY:
                if old.alive() and not self._stuck(old):
                    return
                if old.alive():  # reported hung: kill it
                    log.warning("mps: killing hung worker c%d (pid %s)", context, old.pid)
                    try:
                        os.kill(old.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                old.process.join(5.0)
                self._deliver(self._on_death(old))
                old.lost_handled = True
            elif old.state == STARTING:
                return
            t_detect = time.monotonic()
            self._ensure_daemon()
            new = self._take_spare(context)
            if new is None:
                self._generations[context] += 1
                new = self._spawn(context, self._generations[context])
                try:
                    self._await_ready(new, time.monotonic() + self.start_timeout)
                except BaseException:  # e.g. a new MPS server not ready yet: the watchdog tries again
                    self._stop_slot(new, graceful=False)  # (no process or shared memory of it is left)
                    raise
            with self._locks[context]:
                self.workers[context] = new
                backlog, self._backlog[context] = self._backlog[context], []
                failed = []
                for p in backlog:
                    try:
                        self._write(new, p)
                    except BackendError as exc:
                        failed.append((p, exc))
            self._deliver([Completion(p.token, context, p.stream, None, 0.0, exc, p.t_submit, done=p.done)
                           for p, exc in failed])
            with self._locks[context]:
                self._stop_slot(old, graceful=False)
            rec = {"context": context, "old_pid": old.pid, "new_pid": new.pid, "died": old.died_at,
                   "replacing": t_detect, "ready": time.monotonic(), "spare": new.generation >= 1_000_000,
                   "replay": len(backlog)}
            self.faults.append(rec)
            log.warning("mps: worker c%d replaced (pid %s -> %s) in %.1f ms after its death%s", context, old.pid,
                        new.pid, (rec["ready"] - (old.died_at or t_detect)) * 1e3,
                        " (spare)" if rec["spare"] else "")
            if self.spares and len(self._spare_slots) < self.spares:
                self._refill_spares()

    def _stuck(self, slot: _WorkerSlot) -> bool:
        """Whether a live worker reported hung really is: its oldest stage has been in it ``hang_after`` s.
        (A stage that waited for a replacement worker looks hung to the engine, which counts from submit.)"""
        with self._locks[slot.context]:
            oldest = min((p.t_sent for p in slot.pending.values()), default=None)
        age = None if oldest is None else time.monotonic() - oldest
        if age is None or age < self.hang_after:
            log.info("mps: worker c%d reported hung, but its oldest stage has been in it %s: not killed",
                     slot.context, "for no stage" if age is None else f"{age * 1e3:.0f} ms")
            return False
        return True

    def _deliver(self, comps: list[Completion]) -> None:
        """Hand completions made outside the reader (restart paths) to their callbacks, or to poll()."""
        for c in comps:
            if self._reader is not None:
                self._call(c.done, c.output, c.exec_time, c.error)
            else:
                self._lean_extra.append(c)

    def _take_spare(self, context: int) -> _WorkerSlot | None:
        while self._spare_slots:
            s = self._spare_slots.popleft()
            if s.alive():
                s.context = context  # (a spare serves any context: all contexts have the same SM share)
                try:
                    self._check_spare(s)
                except (BackendError, OSError, EOFError) as exc:  # e.g. a client of a daemon that died
                    log.warning("mps: spare worker (pid %s) unusable: %s", s.pid, exc)
                    self._stop_slot(s, graceful=False)
                    continue
                return s
            self._stop_slot(s, graceful=False)
        return None

    def _ensure_daemon(self) -> None:
        """Before a worker is replaced: the MPS control daemon must still answer. If it died (its server and
        clients go with it), it is started again in the same pipe directory (and stopped at close), so the
        replacement is an MPS client with its SM share again. Spares started under the old daemon are
        dropped. ``daemon_restarts`` counts these."""
        d = self.daemon
        if d is None or d.running():
            return
        log.error("mps: the MPS control daemon of %s is gone; starting it again", d.pipe_dir)
        self.daemon_restarts += 1
        t0 = time.monotonic()
        while self._spare_slots:
            self._stop_slot(self._spare_slots.popleft(), graceful=False)
        d.ensure()
        self.daemon_restart_s.append(time.monotonic() - t0)

    def _check_spare(self, slot: _WorkerSlot) -> None:
        reply = self._ctrl_call(slot, ("ping",), timeout=10.0)
        if reply[0] != "pong":
            raise BackendError(f"mps: spare worker did not answer: {reply}")

    def _refill_spares(self) -> None:
        if self._spare_thread is not None and self._spare_thread.is_alive():
            return

        def run() -> None:
            try:
                s = self._spawn(-1, next(self._spare_gen))
                self._await_ready(s, time.monotonic() + self.start_timeout)
                if self._closed:
                    self._stop_slot(s, graceful=True)
                else:
                    self._spare_slots.append(s)
            except BackendError:
                log.exception("mps: could not start a spare worker")

        self._spare_thread = threading.Thread(target=run, name="daris-mps-spare", daemon=True)
        self._spare_thread.start()

    # -- AFET profiling in the workers (paper IV-A1) -------------------------------------------------
    def profile_afet(self, model_keys: list[str], *, runs: int = 20, warmup: int = 3, cache: Any = None
                     ) -> dict[str, tuple[float, ...]]:
        """AFET per model: its stages on (0, 0) while every other stream of every worker runs random stages
        of random models (runs inside the workers; no stage crosses a process boundary)."""
        from daris_ros.runtime.profiling import afet_key

        out: dict[str, tuple[float, ...]] = {}
        todo = []
        for key in model_keys:
            cached = cache.get(afet_key(self, key)) if cache is not None else None
            if cached:
                out[key] = cached
            else:
                todo.append(key)
        if not todo:
            return out
        try:
            for s in self.workers:
                streams = [k for k in range(self.n_streams) if (s.context, k) != (0, 0)]
                self._ctrl_call(s, ("bg", streams))
            for key in todo:
                reply = self._ctrl_call(self.workers[0], ("profile", self._model_index[key], runs, warmup), 600.0)
                if reply[0] != "profile":
                    raise BackendError(f"mps: profiling {key} failed:\n{reply[1]}")
                out[key] = tuple(reply[1])
                if cache is not None:
                    cache.put(afet_key(self, key), out[key])
        finally:
            for s in self.workers:
                if s.state == READY:
                    self._ctrl_call(s, ("bg", []))
        return out

    # -- statistics ----------------------------------------------------------------------------------
    def memory_by_context(self) -> ContextMemory:
        """Reserved device memory of each context's worker process (0 for a worker that does not answer
        within 0.5 s, e.g. one being replaced)."""
        out = []
        for slot in list(self.workers):
            try:
                reply = self._ctrl_call(slot, ("info",), timeout=0.5) if slot.state == READY else ("",)
            except (BackendError, OSError, EOFError):
                reply = ("",)
            info = reply[1] if reply[0] == "info" else {}
            out.append(int(info.get("cuda_reserved", 0)))
        return ContextMemory(tuple(out), SOURCE_WORKER, False)

    def worker_cpu_seconds(self) -> float:
        """User + system CPU time of the current worker processes so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for s in self.workers:
            try:
                with open(f"/proc/{s.pid}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                total += (int(parts[11]) + int(parts[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    # -- shutdown ------------------------------------------------------------------------------------
    def _stop_slot(self, slot: _WorkerSlot, graceful: bool = True) -> None:
        if graceful and slot.alive():
            try:
                slot.ctrl.send(("stop",))
            except OSError:
                pass
            slot.process.join(5.0)
        if slot.alive():
            slot.process.kill()
            slot.process.join(5.0)
        slot.release()

    def _stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.started:
            if not self.daemon.stop():
                log.warning("mps: the MPS daemon this backend started did not stop")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._wake_reader()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        if self._spare_thread is not None:
            self._spare_thread.join(timeout=self.start_timeout)
        for s in self.workers + list(self._spare_slots):
            self._stop_slot(s, graceful=True)
        self._spare_slots.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stop_daemon()
