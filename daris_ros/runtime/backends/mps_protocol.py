"""The ``mps`` backend's messages: what a request and a completion record hold, and how tensors travel.

A worker's channel (:mod:`.shm_channel`) carries fixed-size int64 records, one ring per direction. This
module gives their fields a meaning, for both sides (the scheduler process in :mod:`.mps`, the worker in
:mod:`.mps_worker`):

* a **request** (scheduler -> worker) runs one stage (``OP_RUN``) or hands over a whole job (``OP_JOB``, the
  worker's own stage queue dispatches its stages). Its input is a tensor the worker kept from an earlier
  stage (``IN_HANDLE``: a :class:`WorkerTensor` on this side), a tensor in an input slot (``IN_SLOT``), a
  raw uint8 HxWx3 camera frame in an input slot that the worker preprocesses (``IN_FRAME``), or the
  worker's own resident example input (``IN_EXAMPLE``: :data:`EXAMPLE_INPUT`). Its output is kept in the
  worker under a handle id (``OUT_HANDLE``), copied into an output slot (``OUT_SLOT``: a job's final
  output) or dropped (``OUT_DISCARD``).
* a **completion** (worker -> scheduler) reports a request by its token: status, the stage's measured time
  (CUDA events; a job: every stage's time), three worker timestamps (``time.monotonic_ns``, one clock for
  all processes) and, for an output slot, the output's shape and dtype; an error carries its text.

A tensor in a slot is described by ``ndim``, 4 dims and a dtype code in consecutive fields
(:func:`describe_tensor` / :func:`tensor_in_slot`). On the scheduler side, :class:`PendingRequest` is a
request until its completion is read; :func:`write_request` encodes one into a worker's channel (its input
copied into an input slot, an output slot or handle id reserved) and :func:`read_completions` decodes what
the worker answered into :class:`Completion` records (slots given back, a final output copied out).
"""

from __future__ import annotations

import ctypes
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daris_ros.runtime.backends.base import BackendError
from daris_ros.runtime.backends.shm_channel import DONE_FIELDS, REQ_FIELDS

StageDone = Callable[[Any, float, BaseException | None], None]
"""A request's own completion callback (run_now waits on one); launches are reported through ``poll``."""

if TYPE_CHECKING:
    from daris_ros.runtime.backends.mps_pool import WorkerSlot

MAX_STAGES = 8  # stages of a job sent whole (OP_JOB)
MAX_DIMS = 4  # dims of a tensor described in a record

# -- request record fields ------------------------------------------------------------------------------
R_TOKEN, R_OP, R_STREAM, R_MODEL, R_STAGE, R_IN_KIND, R_IN_ID, R_OUT_KIND, R_OUT_ID, R_TIMED = range(10)
R_TENSOR = 10  # the input in a slot: ndim (10), MAX_DIMS dims (11-14), dtype code (15)
R_NDIM, R_DIMS, R_DTYPE = R_TENSOR, R_TENSOR + 1, R_TENSOR + 1 + MAX_DIMS
# OP_JOB only: the job's priority (0 HP, 1 LP), stage count, release and absolute virtual stage deadlines
# (time.monotonic_ns), level flags (bit 0 no_last, 1 no_prior, 2 no_fixed), stage times wanted (0 GPU events,
# 1 launch-to-completion on the host)
R_PRIO, R_NSTAGES, R_RELEASE = 16, 17, 18
R_DEADLINES = 19  # MAX_STAGES values
R_FLAGS, R_HOST_TIME = 27, 28
R_ROWS = 29  # OP_RUN: jobs (batch rows) in the input; 0 or 1: one job (the stage's CUDA graph applies)

# -- completion record fields ---------------------------------------------------------------------------
C_TOKEN, C_STATUS, C_EXEC_NS, C_OUT_KIND, C_OUT_ID = range(5)
C_TENSOR = 5  # the output in a slot: ndim (5), MAX_DIMS dims (6-9), dtype code (10)
C_NDIM, C_DIMS, C_DTYPE = C_TENSOR, C_TENSOR + 1, C_TENSOR + 1 + MAX_DIMS
C_T_PICK, C_T_LAUNCH, C_T_DONE = 11, 12, 13  # request picked up, launched, completion seen (monotonic_ns)
C_NSTAGES = 14
C_STAGE_NS = 16  # OP_JOB: MAX_STAGES stage times (ns)

assert R_ROWS < REQ_FIELDS and C_STAGE_NS + MAX_STAGES <= DONE_FIELDS

# -- codes ----------------------------------------------------------------------------------------------
OP_RUN = 1  # one stage, dispatched by the scheduler process
OP_JOB = 2  # a whole job: the worker's own stage queue dispatches its stages
# where a stage input comes from
IN_HANDLE = 0  # a tensor the worker kept from an earlier stage (handle id)
IN_SLOT = 1  # an input slot of the channel
IN_EXAMPLE = 2  # the worker's own example input of (model, stage): resident, no transfer
IN_FRAME = 3  # a uint8 HxWx3 camera frame in an input slot: the worker preprocesses it on its device
# where a stage output goes
OUT_HANDLE = 0  # kept in the worker under a handle id
OUT_SLOT = 1  # copied into an output slot (a job's final output)
OUT_DISCARD = 2  # dropped (background load, profiling)
OUT_LOCAL = 3  # (worker-internal) kept with the job for its next stage

STATUS_OK = 0
STATUS_ERROR = 1
STATUS_SLOT_FREE = 2  # OP_JOB: the job's input slot was copied to the GPU; the job goes on

DTYPES = ("float32", "float16", "bfloat16", "uint8", "int64")

_ZERO_REQUEST = array("q", bytes(8 * REQ_FIELDS))
_ZERO_COMPLETION = array("q", bytes(8 * DONE_FIELDS))


# -- stage inputs on the scheduler side -------------------------------------------------------------------
class WorkerLost(BackendError):
    """The worker process of a context died (or was replaced) with this stage, or its input, in it.

    ``in_flight_loss``: the stage itself was running or queued in the worker that died (its input may
    still exist: the engine's watchdog retries it; never reported by ``poll``); False: its input was a
    worker-resident output of a worker that is gone (nothing to retry)."""

    in_flight_loss: bool = False


@dataclass(frozen=True, slots=True)
class WorkerTensor:
    """A stage output kept in the worker of ``context`` (generation ``generation``) under ``hid``; ``rows``
    jobs (batch rows) in it."""

    context: int
    generation: int
    hid: int
    rows: int = 1


class ExampleInput:
    """Marker input: the worker's own example input of the requested (model, stage), resident on the GPU
    (nothing is transferred). Use the instance :data:`EXAMPLE_INPUT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXAMPLE_INPUT"


EXAMPLE_INPUT = ExampleInput()


def is_frame(x: Any) -> bool:
    """Whether the host tensor ``x`` is a raw HxWx3 uint8 camera frame (one job's, not batch-major)."""
    import torch

    return x.dtype == torch.uint8 and x.dim() == 3 and x.shape[-1] == 3


# -- records --------------------------------------------------------------------------------------------
def new_request(token: int, op: int, stream: int, model: int, stage: int, timed: bool = True) -> array:
    """A request record with its header fields set (everything else 0)."""
    rec = array("q", _ZERO_REQUEST)
    rec[R_TOKEN] = token
    rec[R_OP] = op
    rec[R_STREAM] = stream
    rec[R_MODEL] = model
    rec[R_STAGE] = stage
    rec[R_TIMED] = int(timed)
    return rec


def set_job(rec: array, priority: int, release_ns: int, deadlines_ns: tuple[int, ...], flags: int,
            host_time: bool) -> None:
    """The OP_JOB fields of a request (see the field list above)."""
    if len(deadlines_ns) > MAX_STAGES:
        raise ValueError(f"a job of more than {MAX_STAGES} stages cannot be sent whole")
    rec[R_OP] = OP_JOB
    rec[R_PRIO] = priority
    rec[R_NSTAGES] = len(deadlines_ns)
    rec[R_RELEASE] = release_ns
    for j, d in enumerate(deadlines_ns):
        rec[R_DEADLINES + j] = d
    rec[R_FLAGS] = flags
    rec[R_HOST_TIME] = int(host_time)


def job_deadlines(rec: list[int]) -> list[float]:
    """The absolute stage deadlines of an OP_JOB request, seconds."""
    return [rec[R_DEADLINES + j] * 1e-9 for j in range(rec[R_NSTAGES])]


def new_completion(token: int, status: int = STATUS_OK) -> array:
    """A completion record with its token and status set (everything else 0)."""
    rec = array("q", _ZERO_COMPLETION)
    rec[C_TOKEN] = token
    rec[C_STATUS] = status
    return rec


def set_stage_times(rec: array, stage_ns: list[int]) -> None:
    """A job's stage times (ns) into its completion."""
    rec[C_NSTAGES] = len(stage_ns)
    for j, t in enumerate(stage_ns[:MAX_STAGES]):
        rec[C_STAGE_NS + j] = t


def stage_times(rec: list[int]) -> tuple[float, ...]:
    """A job completion's stage times, seconds."""
    return tuple(rec[C_STAGE_NS + j] * 1e-9 for j in range(rec[C_NSTAGES]))


# -- tensors in slots -----------------------------------------------------------------------------------
def dtype_code(dtype: Any) -> int:
    name = str(dtype).removeprefix("torch.")
    try:
        return DTYPES.index(name)
    except ValueError:
        raise ValueError(f"dtype {name} cannot travel through shared memory (one of {', '.join(DTYPES)})") from None


def describe_tensor(rec: array, at: int, t: Any) -> None:
    """Shape and dtype of ``t`` into ``rec`` at ``at`` (``R_TENSOR`` or ``C_TENSOR``)."""
    if t.dim() > MAX_DIMS:
        raise ValueError(f"a tensor of {t.dim()} dims cannot travel through shared memory (at most {MAX_DIMS})")
    rec[at] = t.dim()
    for i, d in enumerate(t.shape):
        rec[at + 1 + i] = d
    rec[at + 1 + MAX_DIMS] = dtype_code(t.dtype)


def tensor_in_slot(slot_u8: Any, rec: list[int], at: int) -> Any:
    """The tensor ``rec`` describes at ``at``, as a view of the first bytes of the uint8 slot ``slot_u8``."""
    import torch

    dtype = getattr(torch, DTYPES[rec[at + 1 + MAX_DIMS]])
    shape = rec[at + 1:at + 1 + rec[at]]
    n = 1
    for d in shape:
        n *= d
    return slot_u8[:n * dtype.itemsize].view(dtype).view(shape)


def tensor_bytes(t: Any) -> int:
    return t.numel() * t.element_size()


# -- the scheduler side's records -----------------------------------------------------------------------
@dataclass(slots=True)
class PendingRequest:
    """A request written (or waiting to be written) to a worker, until its completion is read."""

    token: int
    context: int
    stream: int
    model: str
    stage: int
    done: StageDone | None  # None: reported through the backend's poll (or the lean collect)
    t_submit: int  # time.monotonic_ns
    x: Any = None  # host tensor, WorkerTensor or EXAMPLE_INPUT
    out_kind: int = -1  # OUT_*; -1: a final stage's output comes back, others stay in the worker
    timed: bool = True
    rows: int = 1  # jobs (batch rows) in x
    in_slot: int = -1
    out_slot: int = -1
    hid: int = -1
    job: tuple[int, int, tuple[int, ...], int, bool] | None = None  # OP_JOB: prio, release, deadlines, flags, host
    t_sent: float = 0.0  # time.monotonic() when written to the current worker


@dataclass(slots=True)
class Completion:
    """One finished request as the lean API reports it. Times are ``time.monotonic_ns`` (one clock)."""

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


# -- the scheduler side: requests written into a worker's channel, completions read from it ---------------
def write_request(slot: WorkerSlot, p: PendingRequest, model: int, last_stage: int) -> None:
    """Encode ``p`` (``model``: its model's index, ``last_stage``: that model's last stage) into ``slot``'s
    request ring and wake the worker: a host input is copied into an input slot, a final output gets an
    output slot, any other output a handle id. The caller holds the context's lock. Raises BackendError
    (:class:`WorkerLost`: the input died with a replaced worker); none of ``slot``'s slots is kept then."""
    rec = new_request(p.token, OP_RUN, p.stream, model, p.stage, p.timed)
    rec[R_ROWS] = p.rows
    if p.job is not None:
        set_job(rec, *p.job)
    _write_input(slot, p, rec)
    try:
        _write_output(slot, p, rec, last_stage)
    except BaseException:
        free_slots(slot, p)
        raise
    slot.pending[p.token] = p
    p.t_sent = time.monotonic()
    if not slot.post_request(rec):
        del slot.pending[p.token]
        free_slots(slot, p)
        raise BackendError(f"mps: the request ring of context {slot.context} stays full")


def _write_input(slot: WorkerSlot, p: PendingRequest, rec: array) -> None:
    """Where the input comes from: a handle, the example input, or a slot the input is copied into."""
    x = p.x
    if isinstance(x, WorkerTensor):
        if x.context != slot.context or x.generation != slot.generation:
            raise WorkerLost(f"stage input {x} is not in the current worker of context {slot.context} "
                             f"(generation {slot.generation}): it was lost with a replaced worker")
        rec[R_IN_KIND] = IN_HANDLE
        rec[R_IN_ID] = x.hid
        return
    if isinstance(x, ExampleInput):
        rec[R_IN_KIND] = IN_EXAMPLE
        return
    import torch

    if not isinstance(x, torch.Tensor):
        raise BackendError(f"mps: a stage-0 input must be a tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        x = x.cpu()  # (the engine preprocesses on the host for this backend; this is a fallback copy)
    if not x.is_contiguous():
        x = x.contiguous()
    frame = is_frame(x)
    if frame and (p.stage != 0 or p.job is not None):
        raise BackendError("mps: a uint8 frame is only accepted as the input of stage 0 in stage mode")
    nbytes = tensor_bytes(x)
    if nbytes > slot.layout.in_slot_bytes or x.dim() > MAX_DIMS:
        batch = f" (a batch of {p.rows} jobs; a slot holds one job's input)" if p.rows > 1 else ""
        raise BackendError(f"mps: input {tuple(x.shape)} does not fit a frame slot "
                           f"({slot.layout.in_slot_bytes} B){batch}")
    describe_tensor(rec, R_TENSOR, x)
    k = slot.free_in_slots.take()
    if k is None:
        raise BackendError(f"mps: no free input slot in context {slot.context} (more than "
                           f"{slot.layout.in_slots} stage-0 inputs in flight)")
    ctypes.memmove(slot.in_u8[k].data_ptr(), x.data_ptr(), nbytes)
    p.in_slot = k
    rec[R_IN_KIND] = IN_FRAME if frame else IN_SLOT
    rec[R_IN_ID] = k


def _write_output(slot: WorkerSlot, p: PendingRequest, rec: array, last_stage: int) -> None:
    """Where the output goes: a final stage's into an output slot, others stay in the worker (a handle)."""
    out_kind = p.out_kind
    if out_kind < 0:
        out_kind = OUT_SLOT if p.stage == last_stage or p.job else OUT_HANDLE
    if p.job is not None:
        pass  # a job's final output goes to an output slot the worker picks (rotating per stream)
    elif out_kind == OUT_SLOT:
        k = slot.free_out_slots.take()
        if k is None:
            raise BackendError(f"mps: no free output slot in context {slot.context}")
        p.out_slot = k
        rec[R_OUT_ID] = k
    elif out_kind == OUT_HANDLE:
        p.hid = next(slot.handle_ids)
        rec[R_OUT_ID] = p.hid
    p.out_kind = out_kind
    rec[R_OUT_KIND] = out_kind


def free_slots(slot: WorkerSlot, p: PendingRequest) -> None:
    """Give back the input and output slots ``p`` holds in ``slot``."""
    if p.in_slot >= 0:
        slot.free_in_slots.give(p.in_slot)
        p.in_slot = -1
    if p.out_slot >= 0:
        slot.free_out_slots.give(p.out_slot)
        p.out_slot = -1


def read_completions(slot: WorkerSlot) -> list[Completion]:
    """Decode every completion ``slot``'s worker published: its request leaves ``slot.pending``, its slots
    are given back, a final output is copied out of its output slot (the caller holds the context's lock,
    and ``slot`` is not dead)."""
    out: list[Completion] = []
    recs = slot.take_completions()
    if not recs:
        return out
    t_recv = time.monotonic_ns()
    for rec in recs:
        if rec[C_STATUS] == STATUS_SLOT_FREE:  # a job's frame is on the GPU: its slot is free
            p = slot.pending.get(rec[C_TOKEN])
            if p is not None and p.in_slot >= 0:
                slot.free_in_slots.give(p.in_slot)
                p.in_slot = -1
            continue
        p = slot.pending.pop(rec[C_TOKEN], None)
        if p is None:
            continue
        if p.in_slot >= 0:
            slot.free_in_slots.give(p.in_slot)
        err: BaseException | None = None
        y: Any = None
        if rec[C_STATUS] != STATUS_OK:
            text = rec[-1] if len(rec) > DONE_FIELDS else ""
            err = BackendError(f"mps worker c{slot.context}: {text}")
        elif p.out_kind == OUT_SLOT:
            y = tensor_in_slot(slot.out_u8[rec[C_OUT_ID]], rec, C_TENSOR).clone()
        elif p.out_kind == OUT_HANDLE:
            y = WorkerTensor(slot.context, slot.generation, p.hid, p.rows)
        if p.out_slot >= 0:
            slot.free_out_slots.give(p.out_slot)
        times = stage_times(rec) if p.job else ()
        out.append(Completion(p.token, slot.context, p.stream, y, rec[C_EXEC_NS] * 1e-9, err,
                              p.t_submit, rec[C_T_PICK], rec[C_T_LAUNCH], rec[C_T_DONE],
                              t_recv, p.done, times))
    return out
