"""Worker fault detection for the engine, independent of the backend.

A backend that can replace its workers offers two methods (the cpu backend's threads; worker processes
of an MPS backend would offer the same)::

    worker_alive(context, stream) -> bool      # False once the worker died (thread ended, process exited)
    restart_worker(context, stream) -> None    # start a replacement; results of the old one are ignored

and optionally ``worker_died_at(context, stream) -> float | None`` (``time.monotonic`` of the death, if
the backend saw it), which lets the detection latency be measured.

:class:`Watchdog` polls every ``period`` seconds: a dead worker, or a stage that has run longer than
``stage_timeout`` (a hung worker), is reported to the engine's ``on_worker_fault``. The engine replaces
the worker and retries the stage that was in flight on it once (see :class:`FaultLog` for the figures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("daris_ros.watchdog")

#: A stage lost with its worker is re-run this many times on the replacement before its job fails.
MAX_STAGE_RETRIES = 1
#: Fault records kept for the statistics (the counters are never windowed).
RECORDS_KEPT = 100


class WorkerFault(RuntimeError):
    """The worker running a stage died or hung; the stage's result was lost."""


@dataclass(slots=True)
class FaultRecord:
    """One detected worker fault, on the engine's clock (seconds).

    ``outcome``: ``retried`` (the stage in flight was re-run on the replacement), ``failed`` (it had been
    retried already: its job ends with an error), ``idle`` (nothing was in flight)."""

    context: int
    stream: int
    reason: str  # "died" | "hung"
    detected: float
    died: float | None = None
    replaced: float | None = None
    recovered: float | None = None
    task: str = ""
    job_id: int = -1
    stage: int = -1
    outcome: str = ""
    moved: dict[str, int] = field(default_factory=dict)  # tasks moved off the context while it was down
    moved_back: dict[str, int] = field(default_factory=dict)  # tasks moved back once it served again

    @property
    def detection_ms(self) -> float | None:
        """Death -> detection (None where the backend does not report the time of death)."""
        return None if self.died is None else (self.detected - self.died) * 1e3

    @property
    def recovery_ms(self) -> float | None:
        """Detection -> recovered: the replacement worker has finished the retried stage (or is running,
        when nothing was in flight)."""
        return None if self.recovered is None else (self.recovered - self.detected) * 1e3

    def as_dict(self) -> dict[str, Any]:
        return {"context": self.context, "stream": self.stream, "reason": self.reason,
                "outcome": self.outcome, "task": self.task, "job_id": self.job_id, "stage": self.stage,
                "detected": self.detected, "died": self.died, "replaced": self.replaced,
                "recovered": self.recovered, "detection_ms": self.detection_ms,
                "recovery_ms": self.recovery_ms, "moved": dict(self.moved), "moved_back": dict(self.moved_back)}


@dataclass(slots=True)
class FaultLog:
    """Fault counters of one engine, plus the most recent records."""

    worker_faults: int = 0
    stages_retried: int = 0
    jobs_failed: int = 0
    stale_completions: int = 0  # results of replaced workers that arrived late (ignored)
    records: deque[FaultRecord] = field(default_factory=lambda: deque(maxlen=RECORDS_KEPT))

    def open(self, context: int, stream: int, reason: str, detected: float, died: float | None) -> FaultRecord:
        rec = FaultRecord(context, stream, reason, detected, died)
        self.worker_faults += 1
        self.records.append(rec)
        return rec

    def summary(self) -> dict[str, object]:
        """Counters and the last recovery, for stats and /diagnostics."""
        last = self.records[-1] if self.records else None
        rec_ms = last.recovery_ms if last is not None else None
        return {"worker_faults": self.worker_faults, "worker_stages_retried": self.stages_retried,
                "worker_jobs_failed": self.jobs_failed, "worker_stale_results": self.stale_completions,
                "worker_last_fault": "" if last is None else f"c{last.context}s{last.stream} {last.reason}",
                "worker_last_recovery_ms": -1.0 if rec_ms is None else rec_ms}


def supports_recovery(backend: Any) -> bool:
    return callable(getattr(backend, "worker_alive", None)) and callable(getattr(backend, "restart_worker", None))


class Watchdog:
    """Polls the backend's workers and the stages in flight; reports faults to ``on_fault``.

    ``in_flight()`` returns ``(context, stream, token, submitted)`` of every stage in flight;
    ``on_fault(context, stream, reason, token, detected)`` handles one fault (``token`` is None for a dead worker,
    the attempt's token for a hung stage, so a stage that finished meanwhile is not retried; ``detected`` is the
    poll's time).
    """

    def __init__(self, streams: Iterable[tuple[int, int]], alive: Callable[[int, int], bool],
                 in_flight: Callable[[], list[tuple[int, int, int, float]]],
                 on_fault: Callable[[int, int, str, int | None, float], object], *, stage_timeout: float,
                 period: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        self._streams = list(streams)
        self._alive = alive
        self._in_flight = in_flight
        self._on_fault = on_fault
        self._timeout = stage_timeout
        self._period = period
        self._clock = clock
        self._stop = threading.Event()
        # detection (polling) and handling run in two threads: handling one fault (a replacement starting) can
        # take seconds, and a worker that dies meanwhile is still detected, and timed, at once
        self._thread = threading.Thread(target=self._main, name="daris-watchdog", daemon=True)
        self._handler = threading.Thread(target=self._handle_loop, name="daris-watchdog-recovery", daemon=True)
        self._faults: deque[tuple[int, int, str, int | None, float]] = deque()
        self._queued: set[tuple[int, int]] = set()  # (context, stream) with a fault waiting or being handled
        self._qlock = threading.Lock()
        self._wake = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._handler.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in (self._thread, self._handler):
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=2.0)

    def _find(self) -> list[tuple[int, int, str, int | None, float]]:
        """The faults one poll sees: dead workers, and stages in flight longer than the stage timeout."""
        now = self._clock()
        faults: list[tuple[int, int, str, int | None, float]] = [
            (c, s, "died", None, now) for c, s in self._streams if not self._alive(c, s)]
        if self._timeout > 0:
            faults += [(c, s, "hung", token, now) for c, s, token, submitted in self._in_flight()
                       if now - submitted > self._timeout]
        return faults

    def check(self) -> None:
        """One poll, its faults handled in this thread (callable directly, e.g. from tests). Every fault of the
        poll is found and timed before the first is handled."""
        for fault in self._find():
            self._on_fault(*fault)

    def _main(self) -> None:
        while not self._stop.wait(self._period):
            try:
                found = self._find()
            except Exception:  # noqa: BLE001 - a backend query failing must not stop the watchdog
                log.exception("worker watchdog: poll failed")
                continue
            with self._qlock:
                for fault in found:
                    if fault[:2] not in self._queued:  # a dead worker is seen at every poll until replaced
                        self._queued.add(fault[:2])
                        self._faults.append(fault)
                        self._wake.set()

    def _handle_loop(self) -> None:
        last_log = -1e9
        while not self._stop.is_set():
            with self._qlock:
                fault = self._faults.popleft() if self._faults else None
                if fault is None:
                    self._wake.clear()
            if fault is None:
                self._wake.wait(0.1)
                continue
            try:
                self._on_fault(*fault)
            except Exception:  # noqa: BLE001 - the watchdog must outlive any single failed recovery
                if self._clock() - last_log > 5.0:  # a restart failing at every poll: log every 5 s
                    last_log = self._clock()
                    log.exception("worker watchdog: recovery failed (retrying)")
            finally:
                with self._qlock:
                    self._queued.discard(fault[:2])  # seen again at the next poll if it still stands
