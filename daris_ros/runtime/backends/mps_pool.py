"""The ``mps`` backend's worker processes: start, readiness, spares, stop, and the MPS daemon's supervision.

:class:`WorkerSlot` is one worker process (one generation of one context) with the scheduler side's ends of
its channel: the shared-memory block (:mod:`.shm_channel`), the control pipe (start-up report, ``add_model``,
``info``, ``ping``, ``stop``) and the two wake-up pipes. :class:`WorkerPool` makes them:

* :meth:`WorkerPool.start` starts the MPS control daemon if none answers, then every context's worker and
  ``spares`` ready spares at once, and returns when all serve (or stops them all and raises BackendError);
* :meth:`WorkerPool.replacement` gives a serving worker for a context whose worker died or hung: first the
  daemon is started again if it no longer answers (``daemon_restarts``), then a ready spare is taken (a
  spare serves any context: all contexts have the same SM share) or a fresh process of the next generation
  is started; a replacement that fails to start leaves no process and no shared memory behind;
* :meth:`WorkerPool.close` stops the given workers and the spares, then the daemon if it was started here.

Workers are started with the ``spawn`` method (never ``fork`` after CUDA init) with the daemon's pipe
directory and ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (:func:`mps_thread_percentage`) in their environment.
Which requests are in flight in a worker (``WorkerSlot.pending``) is the backend's bookkeeping (:mod:`.mps`).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from daris_ros.runtime.backends import shm_channel as ch
from daris_ros.runtime.backends.base import BackendError
from daris_ros.runtime.backends.mps_daemon import MpsDaemon
from daris_ros.runtime.backends.mps_protocol import C_STATUS, PendingRequest
from daris_ros.runtime.backends.mps_worker import WorkerConfig, worker_main
from daris_ros.runtime.memory import traceback_summary

log = logging.getLogger("daris_ros.backends.mps")

#: WorkerSlot.state: started, not serving yet / serving / dead (its stages in flight were failed or dropped)
STARTING, READY, DEAD = "starting", "ready", "dead"
#: Generations of spare workers start here (a context's own replacements count 1, 2, ...).
SPARE_GENERATION_BASE = 1_000_000


def mps_thread_percentage(sm_count: int, n_sm_max: int) -> float:
    """``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` for ``sm_count`` SMs: half an SM above the share, so that MPS
    (which hands out SMs in pairs, rounding down: 25% of 132 gives 32) gives exactly ``sm_count``."""
    return min(100.0, 100.0 * (sm_count + 0.5) / n_sm_max)


@dataclass(eq=False)
class WorkerSlot:
    """One worker process (one generation of one context) and the scheduler side's ends of its channel."""

    context: int  # -1: a spare not yet given to a context
    generation: int
    process: Any  # multiprocessing.Process (spawn context)
    shm: SharedMemory
    layout: ch.ChannelLayout
    ctrl: Connection
    req_wake: Connection  # a byte per batch of requests written (-> worker)
    done_wake: Connection  # a byte per batch of completions written (<- worker)
    state: str = STARTING
    info: dict[str, Any] = field(default_factory=dict)  # the worker's start-up report (pid, sm_count, pinned...)
    pending: dict[int, PendingRequest] = field(default_factory=dict)  # token -> request in flight here
    died_at: float | None = None  # time.monotonic() when its death was seen
    lost_handled: bool = False  # its stages in flight were failed or dropped: the watchdog may see it dead
    spawned_at: float = 0.0
    ready_at: float = 0.0

    def __post_init__(self) -> None:
        import torch

        lay = self.layout
        buf = self.shm.buf
        assert buf is not None  # None only after close()
        self.requests = ch.Ring(buf, lay.req_offset, lay.ring_capacity, ch.REQ_FIELDS)
        self.completions = ch.Ring(buf, lay.done_offset, lay.ring_capacity, ch.DONE_FIELDS, ch.DONE_TEXT)
        self.in_u8: list[Any] = [torch.frombuffer(buf, dtype=torch.uint8, count=lay.in_slot_bytes,
                                                  offset=lay.in_slot(k)) for k in range(lay.in_slots)]
        self.out_u8: list[Any] = [torch.frombuffer(buf, dtype=torch.uint8, count=lay.out_slot_bytes,
                                                   offset=lay.out_slot(k)) for k in range(lay.out_slots)]
        self.free_in_slots = ch.SlotPool(lay.in_slots)
        self.free_out_slots = ch.SlotPool(lay.out_slots)
        self.handle_ids = itertools.count(1)
        self.req_fd: int = self.req_wake.fileno()
        self.done_fd: int = self.done_wake.fileno()
        os.set_blocking(self.req_fd, False)
        os.set_blocking(self.done_fd, False)
        self.ctrl_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    # -- requests and completions -------------------------------------------------------------------------
    def post_request(self, rec: Any, stay_full_s: float = 2.0) -> bool:
        """Write ``rec`` to the request ring and wake the worker; False when the ring stays full for
        ``stay_full_s`` or the worker is gone meanwhile (the caller gives the request's slots back)."""
        deadline = 0.0
        while not self.requests.push(rec):
            now = time.monotonic()
            deadline = deadline or now + stay_full_s
            if now > deadline or not self.alive():
                return False
            time.sleep(0.0001)
        try:
            os.write(self.req_fd, b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the worker has wake-ups pending
        except BrokenPipeError:
            pass  # the worker died: its sentinel is reported by the reader
        return True

    def take_completions(self) -> list[list[Any]]:
        """Every completion record the worker published, oldest first (an error's text appended)."""
        return self.completions.pop_all(text_if=C_STATUS)

    # -- control pipe -----------------------------------------------------------------------------------
    def control(self, msg: tuple[Any, ...], timeout: float = 60.0) -> tuple[Any, ...]:
        """Send a control message and wait for the worker's answer (one caller at a time)."""
        with self.ctrl_lock:
            self.ctrl.send(msg)
            if not self.ctrl.poll(timeout):
                raise BackendError(f"mps: worker c{self.context} did not answer {msg[0]!r} in {timeout:.0f} s")
            return self.ctrl.recv()

    def release(self, unlink: bool = True) -> None:
        """Close the scheduler side's ends (the process must be gone)."""
        for c in (self.ctrl, self.req_wake, self.done_wake):
            try:
                c.close()
            except OSError:
                pass
        self.in_u8 = self.out_u8 = []
        self.requests.release()
        self.completions.release()
        try:
            self.shm.close()
        except BufferError:
            pass
        if unlink:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


class WorkerPool:
    """Worker processes of one backend: start, replacement (spares, daemon restarts), stop."""

    def __init__(self, *, n_contexts: int, n_streams: int, worker_device: str, cuda_graphs: bool,
                 daemon: MpsDaemon | None, thread_percentage: float, spares: int, start_timeout: float) -> None:
        self.n_streams = n_streams
        self.worker_device = worker_device
        self.cuda_graphs = cuda_graphs
        self.daemon = daemon
        self.thread_percentage = thread_percentage
        self.spares = spares  # ready spare workers wanted
        self.start_timeout = start_timeout
        self.layout: ch.ChannelLayout | None = None
        self.model_keys: list[str] = []  # a request names a model by its index here
        self.model_blobs: list[bytes] = []  # serialised models every worker loads at start
        self.spare_slots: deque[WorkerSlot] = deque()
        self.spare_thread: threading.Thread | None = None
        self.daemon_restarts = 0  # the MPS daemon found dead and started again (ensure_daemon)
        self.daemon_restart_s: list[float] = []  # how long each of those restarts took (until it answered)
        self._generations = [0] * n_contexts  # last generation started per context
        self._spare_generations = itertools.count(SPARE_GENERATION_BASE)
        self._mp = mp.get_context("spawn")
        self.closed = False

    # -- start-up ----------------------------------------------------------------------------------------
    def add_model(self, key: str, blob: bytes) -> int:
        """Register a serialised model for the workers started from now on; returns its index."""
        self.model_keys.append(key)
        self.model_blobs.append(blob)
        return len(self.model_keys) - 1

    def start(self, n_contexts: int, layout: ch.ChannelLayout) -> list[WorkerSlot]:
        """The daemon (started if none answers), one serving worker per context and the spares; on any
        failure everything started here is stopped again before the error is raised."""
        self.layout = layout
        if self.daemon is not None:
            self.daemon.ensure()
        t0 = time.monotonic()
        started: list[WorkerSlot] = []
        try:  # all workers start at once (import, CUDA/MPS init, model load, graph capture in parallel)
            for c in range(n_contexts):
                started.append(self.spawn(c, 0))
            for _ in range(self.spares):
                started.append(self.spawn(-1, next(self._spare_generations)))
            for s in started:
                self.await_ready(s, t0 + self.start_timeout)
        except BaseException:
            for s in started:
                self.stop(s, graceful=False)
            self.stop_daemon()
            raise
        self.spare_slots.extend(started[n_contexts:])
        return started[:n_contexts]

    def spawn(self, context: int, generation: int) -> WorkerSlot:
        """Start one worker process (not waiting for it to serve: :meth:`await_ready`)."""
        assert self.layout is not None, "start() first"
        lay = self.layout
        shm = SharedMemory(create=True, size=lay.size)
        env: dict[str, str] = {}
        if self.daemon is not None:
            env = {**self.daemon.env(), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": f"{self.thread_percentage:.4f}"}
        cfg = WorkerConfig(context=context, generation=generation, n_streams=self.n_streams,
                           device=self.worker_device, cuda_graphs=self.cuda_graphs, shm_name=shm.name, layout=lay,
                           model_keys=tuple(self.model_keys), model_blobs=tuple(self.model_blobs), env=env)
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
        slot = WorkerSlot(context, generation, proc, shm, lay, parent_ctrl, req_w, done_r)
        slot.spawned_at = time.monotonic()
        return slot

    def await_ready(self, slot: WorkerSlot, deadline: float) -> None:
        """Wait for the worker's start-up report; BackendError if it fails, exits or takes past ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"mps: worker c{slot.context} (pid {slot.pid}) did not become ready in "
                                   f"{self.start_timeout:.0f} s{self.daemon_hint()}")
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
                                   f"{msg[1]}{self.daemon_hint()}")
            if slot.process.sentinel in r and not slot.ctrl.poll():
                raise BackendError(f"mps: worker c{slot.context} exited during start-up (exit code "
                                   f"{slot.process.exitcode}){self.daemon_hint()}")

    def daemon_hint(self) -> str:
        if self.daemon is None:
            return ""
        return f"\n(MPS pipe directory {self.daemon.pipe_dir}; daemon log tail:\n{self.daemon.log_tail()})"

    # -- replacement -------------------------------------------------------------------------------------
    def replacement(self, context: int) -> WorkerSlot:
        """A serving worker for ``context``: a ready spare, else a fresh process of the next generation (the
        daemon is started again first if it died). Raises BackendError when it cannot start (nothing of it
        is left then; the watchdog tries again at its next poll)."""
        self.ensure_daemon()
        new = self.take_spare(context)
        if new is not None:
            return new
        self._generations[context] += 1
        new = self.spawn(context, self._generations[context])
        try:
            self.await_ready(new, time.monotonic() + self.start_timeout)
        except BaseException:  # e.g. a new MPS server not ready yet
            self.stop(new, graceful=False)  # (no process or shared memory of it is left)
            raise
        return new

    def ensure_daemon(self) -> None:
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
        while self.spare_slots:
            self.stop(self.spare_slots.popleft(), graceful=False)
        d.ensure()
        self.daemon_restart_s.append(time.monotonic() - t0)

    def take_spare(self, context: int) -> WorkerSlot | None:
        """A ready spare that still answers, given to ``context``; None if there is none."""
        while self.spare_slots:
            s = self.spare_slots.popleft()
            if s.alive():
                s.context = context
                try:
                    reply = s.control(("ping",), timeout=10.0)
                    if reply[0] != "pong":
                        raise BackendError(f"mps: spare worker did not answer: {reply}")
                except (BackendError, OSError, EOFError) as exc:  # e.g. a client of a daemon that died
                    log.warning("mps: spare worker (pid %s) unusable: %s", s.pid, exc)
                    self.stop(s, graceful=False)
                    continue
                return s
            self.stop(s, graceful=False)
        return None

    def refill_spares(self) -> None:
        """Start one spare in the background if fewer than ``spares`` are ready (one start at a time)."""
        if len(self.spare_slots) >= self.spares:
            return
        if self.spare_thread is not None and self.spare_thread.is_alive():
            return

        def run() -> None:
            try:
                s = self.spawn(-1, next(self._spare_generations))
                self.await_ready(s, time.monotonic() + self.start_timeout)
                if self.closed:
                    self.stop(s, graceful=True)
                else:
                    self.spare_slots.append(s)
            except BackendError:
                log.exception("mps: could not start a spare worker")

        self.spare_thread = threading.Thread(target=run, name="daris-mps-spare", daemon=True)
        self.spare_thread.start()

    # -- shutdown ----------------------------------------------------------------------------------------
    def stop(self, slot: WorkerSlot, graceful: bool = True) -> None:
        """Stop a worker (``stop`` message, else SIGKILL) and release its channel."""
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

    def stop_daemon(self) -> None:
        """Stop the MPS daemon if it was started here."""
        if self.daemon is not None and self.daemon.started:
            if not self.daemon.stop():
                log.warning("mps: the MPS daemon this backend started did not stop")

    def close(self, workers: list[WorkerSlot]) -> None:
        """Stop ``workers`` and the spares (a spare being started is waited for), then the daemon."""
        self.closed = True
        if self.spare_thread is not None:
            self.spare_thread.join(timeout=self.start_timeout)
        for s in workers + list(self.spare_slots):
            self.stop(s, graceful=True)
        self.spare_slots.clear()
        self.stop_daemon()
