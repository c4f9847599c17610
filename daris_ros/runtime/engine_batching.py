"""The engine's batched path (``batching: true``): cross-task stage batching with real executions.

The policy core forms the batches (:meth:`~daris_ros.core.scheduler.Scheduler.dispatch`, docs/policy.md
"Cross-task stage batching"); this mixin runs them on the backend and reports them back:

* a job's stage input is ``(source, row)``: row 0 of its preprocessed frame, or row i of the output of the batch
  that ran its previous stage, so a batch output is never split per job until the job finishes;
* ``submit_batch`` gathers the rows (into the static input of the CUDA graph of that size on str/green, stacked
  on cpu) and runs the stage once; ``Scheduler.complete`` records the batch time (eq. 1 per model, stage and size)
  and advances every job;
* batch times per (model, stage, size) are profiled at start-up (``run_batch_now``) as the initial estimates
  that the measured batch-time MRET replaces;
* a worker fault loses the whole batch: it is run again once on the replacement worker, and a second loss fails
  every job in it (their results carry the error). Tasks are not moved to other contexts meanwhile.

Launch-ahead (batches queued behind a running one) and the LP fill wait are in the core and the bench, not here:
the engine keeps one batch in flight per stream.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

from daris_ros.core import BatchingConfig, Dispatch
from daris_ros.runtime.watchdog import MAX_STAGE_RETRIES, FaultLog, FaultRecord, WorkerFault

if TYPE_CHECKING:
    from collections.abc import Callable

    from daris_ros.core import Scheduler
    from daris_ros.settings import SchedulerSettings

log = logging.getLogger("daris_ros.engine")


def batching_config(s: SchedulerSettings) -> BatchingConfig | None:
    """The core's :class:`BatchingConfig` from the node's ``batch_*`` parameters (None: batching off)."""
    if not s.batching:
        return None
    return BatchingConfig(sizes=tuple(s.batch_sizes), pad_limit=s.batch_pad_limit,
                          lp_admit_margin=s.batch_lp_admit_margin or None, min_size=s.batch_min_size)


def supports_batching(backend: Any) -> bool:
    return callable(getattr(backend, "submit_batch", None)) and callable(getattr(backend, "run_batch_now", None))


def job_row(x: Any, row: int) -> Any:
    """Row ``row`` of a batch output, with its batch dimension (the shape an unbatched stage gives)."""
    if isinstance(x, tuple):
        return tuple(t.narrow(0, row, 1) for t in x)
    return x.narrow(0, row, 1)


class EngineBatching:
    """Batched submit / completion / fault handling on the :class:`~daris_ros.runtime.engine.Engine`'s state."""

    # set by Engine.__init__
    settings: SchedulerSettings
    backend: Any
    models: dict[str, Any]
    scheduler: Scheduler | None
    faults: FaultLog
    counters: Any
    _lock: threading.Lock
    _fault_lock: threading.Lock
    _running: dict[tuple[str, int], Any]
    _attempts: dict[tuple[int, int], Any]
    _tokens: itertools.count
    _closed: bool
    _clock: Callable[[], float]
    _batch_afet: dict[tuple[str, int, int], float]

    # -- start-up ------------------------------------------------------------------------------------------
    def _prepare_batching(self, keys: list[str]) -> None:
        """Check the backend and capture the batch-size graphs of ``keys`` (str/green). Their batch times are
        profiled with the AFET (``Engine.profile``)."""
        if not supports_batching(self.backend):
            raise ValueError(f"parameter 'batching': backend {self.backend.name!r} cannot run batched stages")
        capture = getattr(self.backend, "capture_batches", None)
        if callable(capture) and self.settings.cuda_graphs:
            capture(tuple(self.settings.batch_sizes), keys)

    def _profile_batches(self, keys: list[str]) -> None:
        """Isolated batch times per (model key, stage, size): the mean of ``profile_runs`` runs after a warm-up,
        the initial estimate of the batch-time MRET (``Scheduler(batch_afet=...)``)."""
        import numpy as np

        from daris_ros.runtime.preprocess import preprocess

        runs = self.settings.profile_runs
        for key in keys:
            model = self.models[key]
            t = next(t for t in self.settings.tasks if self._model_key(t) == key)  # type: ignore[attr-defined]
            frame = np.zeros((t.input_size[0], t.input_size[1], 3), dtype=np.uint8)
            x0 = self._model_input(key, preprocess(frame, t.input_size, device=self.backend.device))  # type: ignore[attr-defined]
            for size in self.settings.batch_sizes:
                totals = [0.0] * model.num_stages
                for run in range(runs + 1):
                    rows: list[tuple[Any, int]] = [(x0, 0)] * size
                    for j in range(model.num_stages):
                        y, dt = self.backend.run_batch_now(key, j, size, rows)
                        if run:  # the first run warms up
                            totals[j] += dt
                        rows = [(y, i) for i in range(size)]
                for j, total in enumerate(totals):
                    self._batch_afet[(key, j, size)] = max(total / runs, 1e-6)
        log.info("batch times (ms) at sizes %s: %s", list(self.settings.batch_sizes), "; ".join(
            f"{k.split(':', 1)[0]}: " + ", ".join(
                f"{s}: {sum(self._batch_afet[(k, j, s)] for j in range(self.models[k].num_stages)) * 1e3:.1f}"
                for s in self.settings.batch_sizes) for k in keys))

    def _batch_estimate(self, model: str, stage: int, size: int) -> float | None:
        return self._batch_afet.get((model, stage, size))

    # -- online phase --------------------------------------------------------------------------------------
    def _submit_batches(self, dispatches: list[Dispatch], now: float) -> None:
        if self._closed:
            return
        for d in dispatches:
            runs = [self._running[(job.task, job.job_id)] for job in d.jobs]
            for run in runs:
                run.context, run.stream = d.context, d.stream
                run.dispatched[d.stage] = now
            self.counters.dispatches += 1
            if all(run.error for run in runs):  # every job failed already: complete the batch without running it
                self._finish_batch_unrun(d, WorkerFault(f"stage not run: {runs[0].error}"))
            else:
                self._submit_batch_attempt(d, now, runs=runs)

    def _submit_batch_attempt(self, d: Dispatch, now: float, retries: int = 0,
                              fault: FaultRecord | None = None, runs: list[Any] | None = None) -> None:
        from daris_ros.runtime.engine import _Attempt

        if runs is None:  # (a retry after a worker fault)
            runs = [self._running[(job.task, job.job_id)] for job in d.jobs]
        healthy = next((run for run in runs if not run.error), runs[0])
        # a failed job's input may be of an earlier stage: it rides along on a healthy member's row
        rows = [(run.x, run.row) if not run.error else (healthy.x, healthy.row) for run in runs]
        token = next(self._tokens)
        self._attempts[(d.context, d.stream)] = _Attempt(d, token, now, retries, fault)  # type: ignore[arg-type]
        self.backend.submit_batch(d.context, d.stream, d.model, d.stage, d.size, rows,
                                  lambda y, dt, err, d=d, token=token: self._batch_done(d, y, dt, err, token))

    def _finish_batch_unrun(self, d: Dispatch, error: WorkerFault, retries: int = 0,
                              fault: FaultRecord | None = None) -> None:
        """Complete ``d`` without running it (its jobs fail), with its batch-time MRET as the execution time."""
        from daris_ros.runtime.engine import _Attempt

        now = self._clock()
        with self._lock:
            est = self.scheduler.batch_times().get((d.model, d.stage, d.size), 0.0)  # type: ignore[union-attr]
        token = next(self._tokens)
        self._attempts[(d.context, d.stream)] = _Attempt(d, token, now, retries, fault)  # type: ignore[arg-type]
        self._batch_done(d, None, est, error, token)

    def _batch_done(self, d: Dispatch, y: Any, exec_time: float, error: BaseException | None,
                    token: int | None = None) -> None:
        from daris_ros.runtime.engine import StageTrace

        now = self._clock()
        if self._closed:
            return
        finished = []
        with self._lock:
            att = self._attempts.get((d.context, d.stream))
            if token is not None:
                if att is None or att.token != token:  # a replaced worker's late result
                    self.faults.stale_completions += 1
                    return
                if getattr(error, "in_flight_loss", False):
                    return  # lost with its worker: the watchdog finds the attempt and retries it
                del self._attempts[(d.context, d.stream)]
                if att.fault is not None:
                    att.fault.recovered = now
            if error is not None and not isinstance(error, WorkerFault):
                self.counters.stage_errors += 1
                log.error("batch of %d jobs (%s stage %d, size %d) failed: %s: %s", len(d.jobs), d.model, d.stage,
                          d.size, type(error).__name__, error)
            for r, job in enumerate(d.jobs):
                run = self._running[(job.task, job.job_id)]
                if isinstance(error, WorkerFault):
                    run.error = run.error or str(error)
                elif error is not None:
                    run.error = run.error or f"{type(error).__name__}: {error}"
                elif not run.error:
                    run.x, run.row = y, r
                    run.exec_time += exec_time
                run.stages.append(StageTrace(d.stage, d.context, d.stream, d.levels[r],
                                             run.dispatched.get(d.stage, now), now, exec_time,
                                             min(d.virtual_deadline, job.abs_deadline)))
            measured = exec_time if error is None or isinstance(error, WorkerFault) else None
            for outcome in self.scheduler.complete(d, now, measured):  # type: ignore[union-attr]
                finished.append((outcome, self._running.pop((outcome.job.task, outcome.job.job_id))))
            dispatches = self.scheduler.dispatch(now)  # type: ignore[union-attr]
        self._submit_batches(dispatches, now)
        for outcome, run in finished:
            if not run.error:
                run.x = job_row(run.x, run.row)
            self._finish(outcome, run)  # type: ignore[attr-defined]

    # -- worker faults -------------------------------------------------------------------------------------
    def _take_lost_attempt(self, context: int, stream: int, reason: str, token: int | None, detected: float
                           ) -> tuple[Any, FaultRecord] | None:
        """(Under the core lock.) The attempt in flight on (context, stream), taken off the books so that a late
        result is stale, and the fault's new record; None when the fault was handled already (another token, or
        a "died" worker alive again)."""
        att = self._attempts.get((context, stream))
        if token is not None and (att is None or att.token != token):
            return None
        if reason == "died" and self.backend.worker_alive(context, stream):
            return None
        self._attempts.pop((context, stream), None)  # its result, if it ever comes, is stale now
        died_at = getattr(self.backend, "worker_died_at", None)
        rec = self.faults.open(context, stream, reason, detected, died_at(context, stream) if died_at else None)
        return att, rec

    def _restart_worker(self, context: int, stream: int, keep: Any) -> float:
        """Replace the worker of (context, stream); returns when the replacement serves. If that fails, the lost
        attempt ``keep`` stays on the books, so the next successful restart retries it."""
        try:
            self.backend.restart_worker(context, stream)
        except Exception:
            if keep is not None:
                with self._lock:
                    self._attempts.setdefault((context, stream), keep)
            raise
        return self._clock()

    def _on_batch_worker_fault(self, context: int, stream: int, reason: str, token: int | None,
                               detected: float | None = None) -> FaultRecord | None:
        """:meth:`Engine.on_worker_fault` with batching: the batch in flight is run again once on the replacement
        worker (same context and stream); a second loss fails its jobs."""
        # ``detected``: the watchdog's poll that found it. Another worker's fault may hold the lock for seconds (its
        # replacement starting): that is handling delay, not detection delay
        detected = self._clock() if detected is None else detected
        with self._fault_lock:
            if self._closed:
                return None
            with self._lock:
                taken = self._take_lost_attempt(context, stream, reason, token, detected)
                if taken is None:
                    return None
                att, rec = taken
                if att is not None:
                    job = att.d.jobs[0]
                    rec.task, rec.job_id, rec.stage = job.task, job.job_id, att.d.stage
            rec.replaced = self._restart_worker(context, stream, att)
            if att is None:
                rec.recovered, rec.outcome = rec.replaced, "idle"
            elif att.retries < MAX_STAGE_RETRIES:
                rec.outcome = "retried"
                self.faults.stages_retried += 1
                self._submit_batch_attempt(att.d, rec.replaced, att.retries + 1, rec)
            else:
                rec.outcome = "failed"
                self.faults.jobs_failed += len(att.d.jobs)
                self._finish_batch_unrun(att.d, WorkerFault(
                    f"WorkerFault: batched stage {att.d.stage} lost twice (worker c{context}s{stream} {reason})"),
                    att.retries, rec)
        log.warning("worker c%ds%d %s: replaced in %.1f ms, batch in flight %s", context, stream, reason,
                    (rec.replaced - detected) * 1e3, rec.outcome)
        return rec
