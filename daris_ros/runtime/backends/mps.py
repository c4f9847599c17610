"""``mps`` backend: N_c worker processes, each an MPS client (one DARIS context) with N_s CUDA streams.

The paper's contexts are MPS contexts; stock PyTorch only uses the primary context, so here each context
is a process (:mod:`.mps_worker`) started with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` from eq. 9
(``N_SM = ceil_even(OS * N_SM,max / N_c)``; MPS gives SMs in pairs, so ``sm_granularity = 2``). With
``sm_limit`` (a node that shares its GPU) N_SM,max is the limit and each client's percentage is its eq. 9
share of the limited set against the whole device (MPS bounds how many SMs a client uses, not which). The
in-process counterpart is ``green`` (green contexts); docs/gpu_runtime.md compares the two.

The pieces: :mod:`.mps_pool` starts, replaces and stops the worker processes and supervises the MPS daemon
(:mod:`.mps_daemon`); :mod:`.mps_protocol` is the request/completion format over the shared-memory channel
of :mod:`.shm_channel`; this module is the backend: where each request goes, what came back, and faults.

* **Models.** Every model is resident in every worker (migrating an LP task costs no load time); each
  worker captures a CUDA graph per (model, stage, stream), as ``str``/``green`` do.
* **Data.** The scheduler process never touches CUDA (``device`` is ``"cpu"``: the engine preprocesses
  on the host, or hands raw frames over: :meth:`MpsBackend.accepts_frame`). A stage-0 input is copied once
  into a shared-memory slot that the worker has pinned; the worker's graph copies it to the GPU straight
  from there. Intermediate outputs stay in the worker (:class:`~.mps_protocol.WorkerTensor` handles: a job
  stays in its context for all its stages); a final output (one tensor, or a tuple of fixed-shape tensors: a
  detector's boxes, scores, labels, counts) comes back through an output slot sized from the models' output
  specs (:func:`~.mps_protocol.final_output_bytes`).
* **The Backend protocol** (:class:`~.base.Backend`): :meth:`MpsBackend.launch` writes the request at once
  and returns a ticket; one reader thread blocks on the workers' wake-up pipes, queues what finished for
  :meth:`MpsBackend.poll` and calls the engine's ``notify`` (``polled = False``). ``rows`` of one job is
  the normal case; several rows are stacked into one batch when they are host tensors that fit one input
  slot together, or are one whole worker-resident batch output in order (the workers have no batch graphs:
  settings refuse ``batching`` with ``mps``); anything else fails the launch with a BackendError.
  This is the only way work reaches the workers: the engine decides every stage (issue 14 removed the
  bench's second API, ``send``/``collect`` without a reader thread, the worker-side stage queue of
  ``send_job`` and the AFET profiling inside the workers; ``Engine.profile`` profiles through launch/poll).
* **Faults** (:class:`~.base.WorkerFaults`, ``worker_scope = "context"``: one process serves all N_s
  streams of its context). When a worker process dies (SIGKILL, crash) the reader thread sees its sentinel,
  drops its launches in flight (never reported: the engine's watchdog retries them) and only then reports the
  worker dead (``worker_alive``); the watchdog calls ``restart_worker``, which takes a replacement from the
  pool (a ready spare, ``spares=1``, or a fresh process) and returns once it serves. Stage-0 requests that
  arrive meanwhile wait for it; a later stage of a job whose data was in the dead worker fails at once (its
  input is gone: reported by ``poll`` with :class:`WorkerLost`). A worker reported hung is killed and
  replaced the same way if its oldest stage has been in it for ``hang_after`` seconds (a stage that waited
  for a replacement only looks hung). When the MPS daemon and server die, the workers' CUDA contexts die
  with the server: a worker then exits (``mps_worker.EXIT_CONTEXT_LOST``) or hangs (killed as above), and
  the pool starts the daemon again before the next replacement (``daemon_restarts``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from daris_ros.runtime.backends import mps_protocol as proto
from daris_ros.runtime.backends import shm_channel as ch
from daris_ros.runtime.backends.base import (
    Backend,
    BackendError,
    Finished,
    HostFrames,
    MemoryStats,
    Rows,
    RuntimeModels,
    SmCounts,
    SupervisedDaemon,
    WorkerFaults,
    checked_sm_limit,
)
from daris_ros.runtime.backends.mps_daemon import MpsDaemon
from daris_ros.runtime.backends.mps_pool import (
    DEAD,
    READY,
    SPARE_GENERATION_BASE,
    STARTING,
    WorkerPool,
    WorkerSlot,
    mps_thread_percentage,
)
from daris_ros.runtime.backends.mps_protocol import (
    Completion,
    PendingRequest,
    WorkerLost,
    WorkerTensor,
)
from daris_ros.runtime.backends.mps_worker import serialize_model
from daris_ros.runtime.memory import SOURCE_WORKER, ContextMemory

log = logging.getLogger("daris_ros.backends.mps")

__all__ = ["DEAD", "READY", "STARTING", "MpsBackend", "WorkerLost", "WorkerTensor", "mps_thread_percentage"]

FAULT_KINDS = ("kill", "hang")
#: Output slots are at least this large when every final output is small (logits, detections).
OUT_SLOT_MIN_BYTES = 64 * 1024


class MpsBackend(Backend, WorkerFaults, MemoryStats, RuntimeModels, SmCounts, HostFrames, SupervisedDaemon):
    """N_c MPS client processes x N_s streams (see the module docstring)."""

    name = "mps"
    polled = False  # completions arrive on the reader thread, which calls notify
    worker_scope = "context"  # one worker process serves all N_s streams of its context

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cuda", cuda_graphs: bool = True,
                 oversubscription: float = 1.0, pipe_dir: str | None = None, log_dir: str | None = None,
                 sm_granularity: int = 2, spares: int | None = None, start_timeout: float = 300.0,
                 hang_after: float = 1.0, cpu_workers: bool = False, frame_pixels: int = 0, sm_limit: int = 0) -> None:
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
        self.hang_after = hang_after
        self.torch_device: Any = None
        if cpu_workers:
            self.gpu_index = -1
            self.n_sm_max = 132
            worker_device = "cpu"
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
            worker_device = f"cuda:{self.gpu_index}"
            self.torch_device = torch.device("cuda", self.gpu_index)
        self.worker_device = worker_device
        self.sm_limit = checked_sm_limit(sm_limit, self.n_sm_max, sm_granularity, self.name)
        try:  # eq. 9 on the SMs this node may use; the percentage is of the whole device's SMs
            self.sm_per_context = sm_per_context_eq9(oversubscription, self.usable_sms, n_contexts, sm_granularity)
        except ValueError as exc:
            raise BackendError(f"mps: {exc}") from exc
        self.thread_percentage = mps_thread_percentage(self.sm_per_context, self.n_sm_max)
        daemon = None if cpu_workers else MpsDaemon(pipe_dir, log_dir)
        if daemon is not None:
            daemon.executable()  # a missing nvidia-cuda-mps-control is reported before any work
        self.pool = WorkerPool(n_contexts=n_contexts, n_streams=n_streams, worker_device=worker_device,
                               cuda_graphs=cuda_graphs, daemon=daemon, thread_percentage=self.thread_percentage,
                               spares=int(os.environ.get("DARIS_MPS_SPARES", "0")) if spares is None else spares,
                               start_timeout=start_timeout)
        self.models: dict[str, Any] = {}
        self._model_index: dict[str, int] = {}  # model key -> its index in the requests
        self._n_stages: dict[str, int] = {}
        self._layout: ch.ChannelLayout | None = None
        self.workers: list[WorkerSlot] = []  # the serving worker of each context (swapped on replacement)
        self._locks = [threading.Lock() for _ in range(n_contexts)]  # per context: its worker, ring and slots
        self._backlog: list[list[PendingRequest]] = [[] for _ in range(n_contexts)]  # waiting for a replacement
        self._tokens = itertools.count(1)
        self._restart_lock = threading.Lock()
        # the reader thread (launch/run_now) and what it hands out
        self._reader: threading.Thread | None = None
        self._finished: deque[Finished] = deque()  # for poll()
        self._notify: Callable[[], None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._check_alive_at = 0.0
        self._closed = False
        self._started = False
        self.faults: list[dict[str, Any]] = []  # one record per replaced worker (backend's own view)

    # -- the pool's state, as the node and the tests read it ---------------------------------------------------
    @property
    def daemon(self) -> MpsDaemon | None:
        return self.pool.daemon

    @daemon.setter
    def daemon(self, daemon: MpsDaemon | None) -> None:
        self.pool.daemon = daemon

    @property
    def daemon_restarts(self) -> int:
        """The MPS daemon found dead and started again before a replacement."""
        return self.pool.daemon_restarts

    @property
    def daemon_restart_s(self) -> list[float]:
        return self.pool.daemon_restart_s

    @property
    def spares(self) -> int:
        return self.pool.spares

    # -- start-up ------------------------------------------------------------------------------------
    def _make_layout(self, models: Mapping[str, Any]) -> ch.ChannelLayout:
        in_bytes = out_bytes = 0
        for m in models.values():
            h, w = m.input_size
            in_bytes = max(in_bytes, 3 * h * w * 4)
            # from the model's output spec (proto.final_output_bytes): a segmenter's slot holds one job's mask
            # logits; logits and detections are small, so their slots hold a batch of several jobs (64 KiB)
            one_job = proto.final_output_bytes(m)
            small = getattr(m, "kind", "classification") != "segmentation"
            out_bytes = max(out_bytes, one_job, OUT_SLOT_MIN_BYTES if small else 0)
        in_bytes = max(in_bytes, 3 * self.frame_pixels)  # a raw uint8 frame (worker-side preprocessing)
        return ch.ChannelLayout.make(self.n_streams, in_bytes, out_bytes)

    def _register_model(self, key: str, model: Any, blob: bytes) -> None:
        self.models[key] = model
        self._model_index[key] = self.pool.add_model(key, blob)
        self._n_stages[key] = model.num_stages

    def start(self, models: Mapping[str, Any]) -> None:
        if self._started:
            raise BackendError("mps: start() was called already")
        self._started = True
        atexit.register(self.close)
        for key, m in models.items():
            self._register_model(key, m, serialize_model(m))
        self._layout = self._make_layout(models)
        t0 = time.monotonic()
        self.workers = self.pool.start(self.n_contexts, self._layout)
        sms = self.sm_counts()
        log.info("mps: %d workers x %d streams up in %.1f s, SMs per worker %s (eq. 9: %d, %.2f%% threads)",
                 self.n_contexts, self.n_streams, time.monotonic() - t0, sms, self.sm_per_context,
                 self.thread_percentage)
        if not self.cpu_workers and any(n != self.sm_per_context for n in sms):
            log.warning("mps: workers report %s SMs, eq. 9 asks for %d", sms, self.sm_per_context)

    def sm_counts(self) -> list[int]:
        """SMs per context as each worker's device properties report them (inside its MPS client)."""
        return [int(s.info.get("sm_count", 0)) for s in self.workers]

    def add_model(self, name: str, model: Any) -> None:
        """Make one more model resident in every worker and spare (run-time task addition)."""
        assert self._layout is not None, "start() first"
        need = self._make_layout({name: model})
        if need.in_slot_bytes > self._layout.in_slot_bytes or need.out_slot_bytes > self._layout.out_slot_bytes:
            raise BackendError(f"mps: model {name!r} needs larger frame slots than the workers were started with; "
                               "restart the node with it in the task list")
        blob = serialize_model(model)
        for s in self.workers + list(self.pool.spare_slots):
            reply = s.control(("add_model", name, blob), timeout=300.0)
            if reply[0] != "ok":
                raise BackendError(f"mps: worker c{s.context} could not load {name!r}:\n{reply[1]}")
        self._register_model(name, model, blob)

    def accepts_frame(self, height: int, width: int) -> bool:
        """Whether a camera frame of this size goes to the worker as is (worker-side preprocessing)."""
        return self.preprocess_in_worker and 0 < height * width <= self.frame_pixels

    # -- the Backend protocol ------------------------------------------------------------------------
    def launch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows) -> int:
        """Write stage ``stage`` of ``model`` for ``rows`` to the worker of ``context`` (``size`` is not used:
        the workers have no batch graphs); returns its ticket at once. A launch that cannot be written (an
        input lost with a replaced worker, rows that cannot be stacked, no free slot) is reported by
        :meth:`poll` with its error."""
        if self._closed:
            raise BackendError("backend is closed")
        self._ensure_reader()
        token = next(self._tokens)
        try:
            x, n_rows = self._rows_input(rows)
            self._enqueue(PendingRequest(token, context, stream, model, stage, None, x, n_rows))
        except Exception as exc:  # noqa: BLE001 - reported through poll, as the protocol says
            self._finished.append(Finished(token, None, 0.0, exc))
            self._notify_engine()
        return token

    def poll(self) -> list[Finished]:
        """What finished since the last call (the reader thread queued it); never blocks."""
        out: list[Finished] = []
        finished = self._finished
        while finished:
            out.append(finished.popleft())
        return out

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        """``notify()`` is called on the reader thread after completions were queued for :meth:`poll`."""
        self._notify = notify

    def run_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        """One dispatch on (0, 0), synchronously: (output, exec_time)."""
        x, n_rows = self._rows_input(rows)
        ev = threading.Event()
        box: list[Any] = []

        def done(y: Any, dt: float, err: BaseException | None) -> None:
            box.extend((y, dt, err))
            ev.set()

        if self._closed:
            raise BackendError("backend is closed")
        self._ensure_reader()
        self._enqueue(PendingRequest(next(self._tokens), 0, 0, model, stage, done, x, n_rows))
        if not ev.wait(60.0):
            raise BackendError("mps: run_now got no answer from worker c0 in 60 s")
        if box[2] is not None:
            raise box[2]
        return box[0], box[1]

    def _rows_input(self, rows: Rows) -> tuple[Any, int]:
        """The one input a request carries for ``rows``, and how many jobs (batch rows) are in it."""
        n = len(rows)
        if n == 0:
            raise BackendError("mps: a launch needs at least one row")
        src, row = rows[0]
        if n == 1:
            if isinstance(src, WorkerTensor):
                if src.rows == 1 and row == 0:
                    return src, 1
                raise BackendError(f"mps: row {row} of the worker-resident batch {src} cannot go on alone (the "
                                   "workers keep a batch output whole; the mps backend does not batch)")
            if proto.is_frame_batch(src):  # raw frames: row ``row`` travels as one HxWx3 frame
                return src[row], 1
            return (src if row == 0 and src.shape[0] == 1 else src.narrow(0, row, 1)), 1
        if isinstance(src, WorkerTensor):
            if src.rows == n and all(s is src and r == i for i, (s, r) in enumerate(rows)):
                return src, n
            raise BackendError(f"mps: {n} rows cannot be batched from worker-resident outputs unless they are one "
                               "whole batch output in order (the workers cannot gather rows of several outputs)")
        import torch

        if all(isinstance(s, torch.Tensor) and not proto.is_frame_batch(s) for s, _ in rows):
            from daris_ros.runtime.backends.cuda_graphs import stack_rows

            return stack_rows(rows), n  # (one input slot must hold them all: checked when written)
        raise BackendError(f"mps: {n} rows cannot be batched: only host tensors (or one whole worker-resident batch "
                           "output) are stacked, never frames")

    # -- requests ------------------------------------------------------------------------------------
    def _enqueue(self, p: PendingRequest) -> None:
        """Write ``p`` to its context's worker, or keep it for the replacement of a dead worker. A stage-0
        input waits (up to 2 s) for a free frame slot while all are in flight (never with the engine: it has
        one stage per stream in flight, and a worker has 4 N_s + 4 slots)."""
        host_input = not isinstance(p.x, WorkerTensor)
        deadline = 0.0
        while True:
            with self._locks[p.context]:
                slot = self.workers[p.context]
                if slot.state != READY:
                    if isinstance(p.x, WorkerTensor):
                        raise WorkerLost(f"stage input {p.x} was lost with the worker of context {p.context}")
                    self._backlog[p.context].append(p)
                    return
                if not host_input or len(slot.free_in_slots):
                    self._write(slot, p)
                    return
            now = time.monotonic()
            deadline = deadline or now + 2.0
            if now > deadline:
                raise BackendError(f"mps: no free input slot in context {p.context} for 2 s (more than "
                                   f"{slot.layout.in_slots} frames in flight)")
            time.sleep(0.0001)  # the reader thread frees slots as completions arrive

    def _write(self, slot: WorkerSlot, p: PendingRequest) -> None:
        """Write ``p`` to ``slot``'s worker (caller holds the context's lock)."""
        proto.write_request(slot, p, self._model_index[p.model], self._n_stages[p.model] - 1)

    # -- completions ---------------------------------------------------------------------------------
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
            died: list[WorkerSlot] = []
            self._deliver(self._collect(died))
            for slot in died:  # only now may the watchdog see it dead: its stages were failed or dropped
                slot.lost_handled = True

    def _deliver(self, comps: list[Completion]) -> None:
        """Hand completions out: to their callback (run_now), or to :meth:`poll` (launch; a launch lost with its
        worker is dropped)."""
        queued = False
        for c in comps:
            if c.done is not None:
                self._call(c.done, c.output, c.exec_time, c.error)
            elif not (isinstance(c.error, WorkerLost) and c.error.in_flight_loss):
                self._finished.append(Finished(c.token, c.output, c.exec_time, c.error))
                queued = True
        if queued:
            self._notify_engine()

    def _notify_engine(self) -> None:
        notify = self._notify
        if notify is None:
            return
        try:
            notify()
        except Exception:  # noqa: BLE001 - a failing consumer must not stop completions
            log.exception("mps: the notify callback failed")

    @staticmethod
    def _call(done: proto.StageDone, y: Any, dt: float, err: BaseException | None) -> None:
        try:
            done(y, dt, err)
        except Exception:  # noqa: BLE001 - a failing consumer must not stop completions
            log.exception("stage completion callback failed")

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

    def _collect(self, died: list[WorkerSlot]) -> list[Completion]:
        """Every completion posted so far; dead workers' stages in flight come back as WorkerLost (and the
        dead workers are appended to ``died``: the caller sets ``lost_handled`` once it delivered them)."""
        out: list[Completion] = []
        now = time.monotonic()
        check = now >= self._check_alive_at  # process liveness costs a syscall: every 20 ms, or on a sentinel
        if check:
            self._check_alive_at = now + 0.02
        for slot in list(self.workers):
            if slot.state == DEAD:
                continue
            if slot.completions.pending():
                out.extend(self._drain(slot))
            if check and slot.state == READY and not slot.alive():
                out.extend(self._drain(slot))  # what it finished before dying
                out.extend(self._on_death(slot))
                died.append(slot)
        return out

    def _drain(self, slot: WorkerSlot) -> list[Completion]:
        """Decode ``slot``'s completions (none once it is dead: its memory may be released already)."""
        with self._locks[slot.context]:
            if slot.state == DEAD:
                return []
            return proto.read_completions(slot)

    def _on_death(self, slot: WorkerSlot) -> list[Completion]:
        """Mark ``slot`` dead and fail its stages in flight (WorkerLost, ``in_flight_loss``)."""
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
        return [Completion(p.token, None, 0.0, err, p.done) for p in lost]

    # -- worker faults: the engine watchdog's hook -----------------------------------------------------
    def worker_alive(self, context: int, stream: int) -> bool:
        """False once the worker of ``context`` died and its stages in flight were failed or dropped."""
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
                    hung_pid = old.pid
                    assert hung_pid is not None  # a live process has a pid
                    log.warning("mps: killing hung worker c%d (pid %s)", context, hung_pid)
                    try:
                        os.kill(hung_pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                old.process.join(5.0)
                self._deliver(self._on_death(old))
                old.lost_handled = True
            elif old.state == STARTING:
                return
            t_detect = time.monotonic()
            new = self.pool.replacement(context)  # (raises when it cannot start: the watchdog tries again)
            with self._locks[context]:
                self.workers[context] = new
                backlog, self._backlog[context] = self._backlog[context], []
                failed: list[tuple[PendingRequest, BackendError]] = []
                for p in backlog:
                    try:
                        self._write(new, p)
                    except BackendError as exc:
                        failed.append((p, exc))
            self._deliver([Completion(p.token, None, 0.0, exc, p.done) for p, exc in failed])
            with self._locks[context]:
                self.pool.stop(old, graceful=False)
            t_ready = time.monotonic()
            rec: dict[str, Any] = {"context": context, "old_pid": old.pid, "new_pid": new.pid, "died": old.died_at,
                                   "replacing": t_detect, "ready": t_ready,
                                   "spare": new.generation >= SPARE_GENERATION_BASE, "replay": len(backlog)}
            self.faults.append(rec)
            log.warning("mps: worker c%d replaced (pid %s -> %s) in %.1f ms after its death%s", context, old.pid,
                        new.pid, (t_ready - (old.died_at or t_detect)) * 1e3,
                        " (spare)" if rec["spare"] else "")
            self.pool.refill_spares()

    def _stuck(self, slot: WorkerSlot) -> bool:
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

    def inject_fault(self, kind: str, context: int, stream: int, seconds: float = 0.0, wait_busy: float = 1.0,
                     times: int = 1) -> bool:
        """Test hook on the worker process of ``context`` (it serves every stream of it; ``times`` is not
        used). Waits up to ``wait_busy`` s for a stage to be in flight there, then ``kill``: SIGKILL (the
        replacement starts as for any death: ``seconds`` is not used); ``hang``: SIGSTOP, and SIGCONT after
        ``seconds`` (0: stopped until the watchdog finds it hung and it is replaced). Returns whether a stage
        was in flight."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
        slot = self.workers[context]
        deadline = time.monotonic() + wait_busy
        while not slot.pending and time.monotonic() < deadline and not self._closed:
            time.sleep(0.0005)
        busy = bool(slot.pending)
        pid = slot.pid
        if pid is None or not slot.alive():
            return busy
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)
            if seconds > 0:
                def resume() -> None:
                    if slot.alive():
                        try:
                            os.kill(pid, signal.SIGCONT)
                        except ProcessLookupError:
                            pass

                threading.Timer(seconds, resume).start()
        log.warning("mps: injected %s on worker c%d (pid %s; stage in flight: %s)", kind, context, pid, busy)
        return busy

    # -- statistics ----------------------------------------------------------------------------------
    def memory_by_context(self) -> ContextMemory:
        """Reserved device memory of each context's worker process (0 for a worker that does not answer
        within 0.5 s, e.g. one being replaced)."""
        out = []
        for slot in list(self.workers):
            try:
                reply = slot.control(("info",), timeout=0.5) if slot.state == READY else ("",)
            except (BackendError, OSError, EOFError):
                reply = ("",)
            info = reply[1] if reply[0] == "info" else {}
            out.append(int(info.get("cuda_reserved", 0)))
        return ContextMemory(tuple(out), SOURCE_WORKER, False)

    # -- shutdown ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reader, the workers and spares, then the daemon if started here; launches in flight are
        discarded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._wake_reader()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        self.pool.close(self.workers)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
