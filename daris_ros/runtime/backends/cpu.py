"""``cpu`` backend: real execution on worker threads, one thread per (context, stream).

This is what CI and laptops use. A context is a group of N_s threads; there is no SM partitioning on a
CPU, so contexts only matter to the policy (admission, migration, queues). With ``device='cuda:N'`` the
same threads run on the GPU's default stream (a debugging aid, not a spatial backend).

Worker faults: a worker thread that ends (``worker_alive`` False) or hangs is replaced by the engine's
watchdog through ``restart_worker``; a replaced thread's late result is never delivered. A thread
cannot be killed from outside, so faults are injected from inside (:meth:`CpuBackend.inject_fault`, or
the ``DARIS_CPU_FAULTS`` environment variable read at :meth:`CpuBackend.start`, see
:func:`parse_fault_schedule`): ``kill`` makes the worker end after the stage it is running, without
reporting it (the stage's result is lost, as with a SIGKILLed worker process), and its replacement
start ``seconds`` later; ``hang`` makes its current or next stage take ``seconds`` longer.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from daris_ros.runtime.backends.base import (
    Backend,
    BackendError,
    Finished,
    Rows,
    RuntimeModels,
    WorkerFaults,
    checked_sm_limit,
)
from daris_ros.runtime.backends.cuda_graphs import stack_rows

log = logging.getLogger("daris_ros.backends.cpu")

_STOP = object()
_KILL = object()
FAULTS_ENV = "DARIS_CPU_FAULTS"
FAULT_KINDS = ("kill", "hang")


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """``kind`` on worker (context, stream), ``at`` seconds after the first launched stage."""

    kind: str
    context: int
    stream: int
    at: float
    seconds: float = 0.0


def parse_fault_schedule(spec: str) -> list[ScheduledFault]:
    """``kind:context:stream:at[:seconds]`` entries separated by ``;`` or ``,``, e.g.
    ``kill:0:0:3.0;hang:1:0:6.0:2.5`` (times in seconds after the first launched stage)."""
    out = []
    for entry in spec.replace(",", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        try:
            kind, c, s, at = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
            seconds = float(parts[4]) if len(parts) > 4 else 0.0
        except (IndexError, ValueError):
            raise BackendError(f"{FAULTS_ENV}: cannot parse {entry!r}; expected kind:context:stream:at[:seconds]"
                               ) from None
        if kind not in FAULT_KINDS or len(parts) > 5:
            raise BackendError(f"{FAULTS_ENV}: {entry!r}: kind must be one of {', '.join(FAULT_KINDS)}")
        out.append(ScheduledFault(kind, c, s, at, seconds))
    return sorted(out, key=lambda f: f.at)


@dataclass(slots=True)
class _Slot:
    """The worker of one (context, stream); ``generation`` grows with every replacement."""

    queue: queue.SimpleQueue
    thread: threading.Thread | None = None
    generation: int = 0
    busy: bool = False
    kill: bool = False
    hang: float = 0.0
    hang_times: int = 0  # stages still to hang; kept across replacements (an input that hangs any worker)
    died_at: float | None = None
    restart_delay: float = 0.0  # fault injection: the next replacement takes this long to start
    abandoned: list[threading.Thread] = field(default_factory=list)


class CpuBackend(Backend, WorkerFaults, RuntimeModels):
    """Worker threads, one per (context, stream); completions are queued and handed out by :meth:`poll`."""

    name = "cpu"
    worker_scope = "stream"  # one thread per (context, stream): a dead thread leaves its context's others
    polled = False  # workers notify the engine loop after each completion

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cpu", sm_limit: int = 0) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but torch sees no CUDA device")
        # no SMs to confine: the limit only feeds eq. 9's arithmetic (SMs per context in the stats), checked
        # against the nominal n_sm_max the cpu backend stands for
        self.sm_limit = checked_sm_limit(sm_limit, self.n_sm_max, self.sm_granularity, self.name)
        self.device = device
        self.n_contexts = n_contexts
        self.n_streams = n_streams
        self._models: dict[str, Any] = {}
        self._slots: list[list[_Slot]] = []
        self._closed = False
        self._restart_lock = threading.Lock()
        self._schedule: list[ScheduledFault] = []
        self._first_launch = threading.Event()
        self._stop_injector = threading.Event()
        self._tickets = itertools.count(1)
        self._finished: collections.deque[Finished] = collections.deque()
        self._notify: Callable[[], None] | None = None

    def start(self, models: Mapping[str, Any]) -> None:
        n_workers = self.n_contexts * self.n_streams
        if self.device == "cpu":
            # Intra-op threads per worker: share the cores instead of oversubscribing them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))
        for name, model in models.items():
            self._models[name] = model.to(self.device).eval()
        self._slots = [[_Slot(queue.SimpleQueue()) for _ in range(self.n_streams)] for _ in range(self.n_contexts)]
        for c in range(self.n_contexts):
            for s in range(self.n_streams):
                self._spawn(c, s)
        self._schedule = parse_fault_schedule(os.environ.get(FAULTS_ENV, ""))
        if self._schedule:
            log.warning("fault injection from %s: %s", FAULTS_ENV, self._schedule)
            threading.Thread(target=self._injector, name="daris-cpu-faults", daemon=True).start()

    def _spawn(self, c: int, s: int) -> None:
        slot = self._slots[c][s]
        t = threading.Thread(target=self._worker, args=(slot, slot.queue, slot.generation),
                             name=f"daris-cpu-c{c}s{s}g{slot.generation}", daemon=True)
        slot.thread = t
        t.start()

    def add_model(self, name: str, model: Any) -> None:
        """Make one more model resident (run-time task addition)."""
        self._models[name] = model.to(self.device).eval()

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        self._notify = notify

    def launch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows) -> int:
        """Queue the dispatch for the worker of (context, stream). No graphs here: it runs at ``len(rows)``
        (``size``, the captured size of GPU backends, is not padded to)."""
        ticket = next(self._tickets)
        if self._closed:  # shutting down: nothing runs any more, and nothing is reported
            return ticket
        if not self._first_launch.is_set():
            self._first_launch.set()
        with self._restart_lock:  # never into the queue of a worker being replaced
            self._slots[context][stream].queue.put((ticket, model, stage, rows))
        return ticket

    def poll(self) -> list[Finished]:
        out: list[Finished] = []
        finished = self._finished
        while finished:
            out.append(finished.popleft())
        return out

    def _report(self, record: Finished) -> None:
        self._finished.append(record)
        notify = self._notify
        if notify is not None:
            notify()

    def run_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        return self._run(model, stage, rows)

    def _run(self, model: str, stage: int, rows: Rows) -> tuple[Any, float]:
        m = self._models[model]
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = m.run_stage(stage, stack_rows(rows))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
        return y, time.perf_counter() - t0

    def _worker(self, slot: _Slot, q: queue.SimpleQueue, generation: int) -> None:
        while True:
            item = q.get()
            if item is _STOP or slot.generation != generation:
                return
            if item is _KILL or slot.kill:
                break  # killed while idle: an item taken here is lost with the worker
            ticket, model, stage, rows = item
            slot.busy = True
            try:
                y, dt = self._run(model, stage, rows)
            except Exception as exc:  # noqa: BLE001 - reported to the engine, the worker lives on
                slot.busy = False
                self._report(Finished(ticket, None, 0.0, exc))
                continue
            if slot.hang_times > 0:
                slot.hang_times -= 1
                time.sleep(slot.hang)
            if slot.generation != generation:  # replaced while hung: the stage was retried elsewhere, and
                self._report(Finished(ticket, y, dt))  # the engine ignores this late result
                return
            slot.busy = False
            if slot.kill:
                break  # killed mid-stage: the result is lost
            self._report(Finished(ticket, y, dt))
        slot.kill = False
        slot.died_at = time.monotonic()
        log.warning("cpu worker %s killed (fault injection)", threading.current_thread().name)

    # -- fault handling: used by the engine's watchdog (daris_ros.runtime.watchdog) ---------------------
    def worker_alive(self, context: int, stream: int) -> bool:
        t = self._slots[context][stream].thread
        return t is not None and t.is_alive()

    def worker_died_at(self, context: int, stream: int) -> float | None:
        return self._slots[context][stream].died_at

    def restart_worker(self, context: int, stream: int) -> None:
        """Replace the worker of (context, stream); stages queued for the old one move to the new one. A
        hung old thread is abandoned (a daemon thread: it exits when its stage returns)."""
        delay, self._slots[context][stream].restart_delay = self._slots[context][stream].restart_delay, 0.0
        if delay > 0:  # injected: a replacement as slow as a worker process started without a spare
            time.sleep(delay)
        with self._restart_lock:
            if self._closed:
                return
            slot = self._slots[context][stream]
            old_q, old_t = slot.queue, slot.thread
            slot.generation += 1
            slot.queue = queue.SimpleQueue()
            slot.kill, slot.busy = False, False
            while True:
                try:
                    item = old_q.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP and item is not _KILL:
                    slot.queue.put(item)
            old_q.put(_STOP)
            if old_t is not None and old_t.is_alive():
                slot.abandoned.append(old_t)
            slot.abandoned = [t for t in slot.abandoned if t.is_alive()]
            self._spawn(context, stream)

    def inject_fault(self, kind: str, context: int, stream: int, seconds: float = 0.0,
                     wait_busy: float = 1.0, times: int = 1) -> bool:
        """Test hook. ``kill``: the worker ends after its current stage without reporting it (waits up to
        ``wait_busy`` s for the worker to be running a stage, so the kill hits one in flight), and its
        replacement takes ``seconds`` to start (0: at once; a worker process without a spare takes
        seconds); ``hang``:
        its current or next ``times`` stages take ``seconds`` longer (also on a replacement worker, like an
        input that hangs whoever runs it). Returns whether a stage was in flight."""
        slot = self._slots[context][stream]
        deadline = time.monotonic() + wait_busy
        while not slot.busy and time.monotonic() < deadline and not self._closed:
            time.sleep(0.0005)
        busy = slot.busy
        if kind == "kill":
            slot.restart_delay = seconds
            slot.kill = True
            if not busy:
                slot.queue.put(_KILL)
        elif kind == "hang":
            slot.hang, slot.hang_times = seconds, times
        else:
            raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
        return busy

    def _injector(self) -> None:
        self._first_launch.wait()
        t0 = time.monotonic()
        for f in self._schedule:
            if self._stop_injector.wait(max(0.0, t0 + f.at - time.monotonic())):
                return
            busy = self.inject_fault(f.kind, f.context, f.stream, f.seconds)
            log.warning("injected %s on worker c%ds%d (stage in flight: %s)", f.kind, f.context, f.stream, busy)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_injector.set()
        self._first_launch.set()
        with self._restart_lock:
            for row in self._slots:
                for slot in row:
                    slot.queue.put(_STOP)
        deadline = time.monotonic() + 5.0
        for row in self._slots:
            for slot in row:
                if slot.thread is not None:  # a hung stage is waited for 5 s at most, all workers together
                    slot.thread.join(timeout=max(0.0, deadline - time.monotonic()))
