"""The worker-side stage queue of an ``mps`` worker (``OP_JOB``: daris-bench's worker-side mode).

A whole job is handed to the worker of its context with its priority, release and eq. 8 stage deadlines
(``MpsBackend.send_job``). :class:`JobQueue` keeps the core's :class:`~daris_ros.core.stage_queue.StageQueue`
(8 levels + EDF, ``stage_level`` with the ablation flags) over the worker's N_s streams: a stage is launched
on an idle stream, its successor is queued when it finishes, and the job is reported once, with every
stage's time. A job's input slot is copied out at once (pinned host memory) and uploaded on a side stream,
so the slot is free while the job waits in the queue (``STATUS_SLOT_FREE``). The stages run through the
worker's own launch path (:mod:`.mps_worker`).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daris_ros.core.stage_queue import StageQueue, stage_level
from daris_ros.core.task import Priority
from daris_ros.runtime.backends import mps_protocol as proto

if TYPE_CHECKING:
    from daris_ros.runtime.backends.mps_worker import _Launch, _Worker


@dataclass(slots=True, eq=False)
class Job:
    """A whole job queued in this worker (OP_JOB): its stages are dispatched by the local stage queue."""

    token: int
    model: int
    priority: int  # 0 HP, 1 LP (daris_ros.core.Priority)
    n: int
    release: float
    deadlines: list[float]  # absolute virtual stage deadlines (monotonic seconds)
    x: Any
    out_kind: int
    host_time: bool
    flags: int
    t_pick: int
    ready: Any = None  # CUDA event: the input is on the GPU
    host: Any = None  # the pinned host copy of the input, kept until stage 0 is done
    times: list[int] = field(default_factory=list)
    t_first: int = 0


class JobQueue:
    """The jobs queued in one worker, their stages dispatched over its streams (see the module docstring)."""

    def __init__(self, worker: _Worker) -> None:
        n = worker.cfg.n_streams
        self.worker = worker
        self.queue: StageQueue[tuple[Job, int]] = StageQueue()  # (job, stage) by level, then deadline
        self.idle_streams: list[int] = list(range(n))  # a heap: the lowest idle stream first
        self.out_rotation: list[int] = [0] * n  # per stream: which of its output slots a final output takes
        self.upload_stream: Any = None  # CUDA stream of the jobs' input uploads (set once the device is)

    def accept(self, rec: list[int], t_pick: int) -> None:
        """Queue a whole job: stage 0 enters the local 8-level queue; an input slot is uploaded at once."""
        w = self.worker
        token = rec[proto.R_TOKEN]
        try:
            x = w._input(rec)
            ev = host = None
            if rec[proto.R_IN_KIND] == proto.IN_SLOT:
                # the job may wait in the local queue: copy the frame out of its slot now (pinned host memory,
                # ~10 us), give the slot back, and upload it on the side stream
                torch = w.torch
                if w.cuda:
                    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
                    host.copy_(x)
                    w._post(token, proto.STATUS_SLOT_FREE)
                    with torch.cuda.stream(self.upload_stream):
                        x = host.to(w.dev, non_blocking=True)
                        ev = torch.cuda.Event()
                        ev.record(self.upload_stream)
                else:
                    x = x.clone()
                    w._post(token, proto.STATUS_SLOT_FREE)
            n = rec[proto.R_NSTAGES]
            job = Job(token, rec[proto.R_MODEL], rec[proto.R_PRIO], n, rec[proto.R_RELEASE] * 1e-9,
                      proto.job_deadlines(rec), x, rec[proto.R_OUT_KIND], bool(rec[proto.R_HOST_TIME]),
                      rec[proto.R_FLAGS], t_pick, ev, host)
        except Exception as exc:  # noqa: BLE001 - reported as the job's error
            w._post(token, proto.STATUS_ERROR, f"{type(exc).__name__}: {exc}")
            w._wake_parent()
            return
        self._enqueue(job, 0, False)
        self.dispatch()
        w._wake_parent()  # (the slot-free notice)

    def _enqueue(self, job: Job, stage: int, delayed: bool) -> None:
        f = job.flags
        level = stage_level(Priority(job.priority), stage == job.n - 1, delayed, no_last=bool(f & 1),
                            no_prior=bool(f & 2), no_fixed=bool(f & 4))
        self.queue.push(level, job.deadlines[stage], job.release, "", job.token, (job, stage))

    def dispatch(self) -> None:
        """Launch queued stages on the idle streams, highest level (then earliest deadline) first."""
        w = self.worker
        while self.idle_streams and self.queue:
            _, (job, j) = self.queue.pop()
            s = heapq.heappop(self.idle_streams)
            last = j == job.n - 1
            out_kind, out_id = proto.OUT_LOCAL, 0
            if last and job.out_kind == proto.OUT_SLOT:
                k = w.cfg.layout.out_slots // w.cfg.n_streams  # rotating output slots per stream
                out_kind, out_id = proto.OUT_SLOT, s * k + self.out_rotation[s] % k
                self.out_rotation[s] += 1
            elif last:
                out_kind = proto.OUT_DISCARD
            t0 = time.monotonic_ns()
            try:
                if j == 0 and job.ready is not None:
                    w.str.streams[0][s].wait_event(job.ready)
                la = w._launch(s, job.model, j, job.x, out_kind, out_id, True, job.token, job.t_pick)
            except Exception as exc:  # noqa: BLE001 - the job fails, the worker lives on (unless CUDA is gone)
                heapq.heappush(self.idle_streams, s)
                w._post(job.token, proto.STATUS_ERROR, w._stage_failed(exc))
                w._wake_parent()
                continue
            if j == 0:
                job.t_first = t0
            la.job, la.stage, la.t0 = job, j, t0
            w.inflight[s].append(la)
            w.n_inflight += 1

    def stage_done(self, la: _Launch) -> None:
        """A job's stage finished: its next stage enters the queue, or the job's completion is posted."""
        w = self.worker
        job = la.job
        assert job is not None
        t_done = time.monotonic_ns()
        if la.end is not None:
            gpu_ns = int(la.start.elapsed_time(la.end) * 1e6)
            w._events.append((la.start, la.end))
        else:
            gpu_ns = int(la.exec_s * 1e9)
        job.times.append(t_done - la.t0 if job.host_time else gpu_ns)
        job.host = None
        heapq.heappush(self.idle_streams, la.stream)
        if la.stage < job.n - 1:
            job.x = la.y
            self._enqueue(job, la.stage + 1, t_done * 1e-9 > job.deadlines[la.stage])
            return
        rec = proto.new_completion(job.token)
        rec[proto.C_EXEC_NS] = sum(job.times)
        rec[proto.C_OUT_KIND] = la.out_kind
        rec[proto.C_OUT_ID] = la.out_id
        rec[proto.C_T_PICK] = job.t_pick
        rec[proto.C_T_LAUNCH] = job.t_first
        rec[proto.C_T_DONE] = t_done
        proto.set_stage_times(rec, job.times)
        if la.out_kind == proto.OUT_SLOT:
            proto.describe_tensor(rec, proto.C_TENSOR, la.y)
        w.completed += 1
        w._push(rec)
