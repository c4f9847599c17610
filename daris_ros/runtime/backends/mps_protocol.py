"""The ``mps`` backend's messages: what a request and a completion record hold, and how tensors travel.

A worker's channel (:mod:`.shm_channel`) carries fixed-size int64 records, one ring per direction. This
module gives their fields a meaning, for both sides (the scheduler process in :mod:`.mps`, the worker in
:mod:`.mps_worker`):

* a **request** (scheduler -> worker) runs one stage of one model on one stream, for one job or a batch of
  ``R_ROWS`` jobs. Its input is a tensor the worker kept from an earlier stage (``IN_HANDLE``: a
  :class:`WorkerTensor` on this side), a tensor in an input slot (``IN_SLOT``) or a raw uint8 HxWx3 camera
  frame in an input slot that the worker preprocesses (``IN_FRAME``). Its output is kept in the worker under
  a handle id (``OUT_HANDLE``) or copied into an output slot (``OUT_SLOT``: a job's final output).
* a **completion** (worker -> scheduler) reports a request by its token: status, the stage's measured time
  (CUDA events) and, for an output slot, the output's shape and dtype; an error carries its text.

A tensor in a slot is described by ``ndim``, 4 dims and a dtype code in consecutive fields
(:func:`describe_tensor` / :func:`tensor_in_slot`). A final output is one tensor (a classifier's logits, a
segmenter's mask logits) or a tuple of up to :data:`MAX_OUT_PARTS` tensors of fixed shapes (a detector's
``boxes, scores, labels, counts``): the completion then says how many (``C_PARTS``) and describes each part in
turn; the parts lie one after another in the output slot, each at a 64-byte aligned offset
(:func:`part_offsets`, computed from the descriptions on both sides). :func:`final_output_bytes` sizes an output
slot from a model's output spec (its kind, classes, input size and ``max_detections``).

On the scheduler side, :class:`PendingRequest` is a request until its completion is read;
:func:`write_request` encodes one into a worker's channel (its input copied into an input slot, an output slot
or handle id reserved) and :func:`read_completions` decodes what the worker answered into :class:`Completion`
records (slots given back, a final output copied out).
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

MAX_DIMS = 4  # dims of a tensor described in a record

# -- request record fields ------------------------------------------------------------------------------
R_TOKEN, R_STREAM, R_MODEL, R_STAGE, R_IN_KIND, R_IN_ID, R_OUT_KIND, R_OUT_ID = range(8)
R_TENSOR = 8  # the input in a slot: ndim (8), MAX_DIMS dims (9-12), dtype code (13)
R_NDIM, R_DIMS, R_DTYPE = R_TENSOR, R_TENSOR + 1, R_TENSOR + 1 + MAX_DIMS
R_ROWS = 14  # jobs (batch rows) in the input; 0 or 1: one job (the stage's CUDA graph applies)

# -- completion record fields ---------------------------------------------------------------------------
C_TOKEN, C_STATUS, C_EXEC_NS, C_OUT_KIND, C_OUT_ID = range(5)
C_TENSOR = 5  # the output in a slot: ndim (5), MAX_DIMS dims (6-9), dtype code (10); a tuple's part k follows
C_NDIM, C_DIMS, C_DTYPE = C_TENSOR, C_TENSOR + 1, C_TENSOR + 1 + MAX_DIMS
TENSOR_FIELDS = 2 + MAX_DIMS  # fields describing one tensor: ndim, dims, dtype code
MAX_OUT_PARTS = 4  # tensors in a tuple final output (a detector's boxes, scores, labels, counts)
C_PARTS = C_TENSOR + MAX_OUT_PARTS * TENSOR_FIELDS  # 0: one tensor; n >= 1: a tuple of n tensors
PART_ALIGN = 64  # bytes: where each part of a tuple output starts in the slot

assert R_ROWS < REQ_FIELDS and C_PARTS < DONE_FIELDS

# -- codes ----------------------------------------------------------------------------------------------
# where a stage input comes from
IN_HANDLE = 0  # a tensor the worker kept from an earlier stage (handle id)
IN_SLOT = 1  # an input slot of the channel
IN_FRAME = 2  # a uint8 HxWx3 camera frame in an input slot: the worker preprocesses it on its device
# where a stage output goes
OUT_HANDLE = 0  # kept in the worker under a handle id
OUT_SLOT = 1  # copied into an output slot (a job's final output)
OUT_DISCARD = 2  # (worker-internal) nothing to keep: the stage failed

STATUS_OK = 0
STATUS_ERROR = 1

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


def is_frame(x: Any) -> bool:
    """Whether the host tensor ``x`` is one raw HxWx3 uint8 camera frame (what travels in an input slot)."""
    import torch

    return x.dtype == torch.uint8 and x.dim() == 3 and x.shape[-1] == 3


def is_frame_batch(x: Any) -> bool:
    """Whether the host tensor ``x`` is a batch of raw NxHxWx3 uint8 camera frames (a launch's source: the engine
    hands a frame to a :class:`~.base.HostFrames` backend as a batch of one, as every source is batch-major)."""
    import torch

    return x.dtype == torch.uint8 and x.dim() == 4 and x.shape[-1] == 3


# -- records --------------------------------------------------------------------------------------------
def new_request(token: int, stream: int, model: int, stage: int) -> array:
    """A request record with its header fields set (everything else 0)."""
    rec = array("q", _ZERO_REQUEST)
    rec[R_TOKEN] = token
    rec[R_STREAM] = stream
    rec[R_MODEL] = model
    rec[R_STAGE] = stage
    return rec


def new_completion(token: int, status: int = STATUS_OK) -> array:
    """A completion record with its token and status set (everything else 0)."""
    rec = array("q", _ZERO_COMPLETION)
    rec[C_TOKEN] = token
    rec[C_STATUS] = status
    return rec


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


def described(rec: list[int], at: int) -> tuple[list[int], Any]:
    """The shape and torch dtype ``rec`` describes at ``at``."""
    import torch

    return rec[at + 1:at + 1 + rec[at]], getattr(torch, DTYPES[rec[at + 1 + MAX_DIMS]])


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def tensor_in_slot(slot_u8: Any, rec: list[int], at: int, offset: int = 0) -> Any:
    """The tensor ``rec`` describes at ``at``, as a view of the uint8 slot ``slot_u8`` from byte ``offset``."""
    shape, dtype = described(rec, at)
    return slot_u8[offset:offset + _numel(shape) * dtype.itemsize].view(dtype).view(shape)


def tensor_bytes(t: Any) -> int:
    return t.numel() * t.element_size()


# -- final outputs: one tensor or a tuple of fixed-shape tensors ------------------------------------------
def output_parts(y: Any) -> tuple[Any, ...]:
    """The tensors of a final stage output (one tensor, or a flat tuple/list of tensors); raises TypeError or
    ValueError for an output that cannot travel through an output slot."""
    import torch

    if isinstance(y, torch.Tensor):
        return (y,)
    if not isinstance(y, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in y):
        raise TypeError(f"a final stage output must be a tensor or a flat tuple of tensors to go back through "
                        f"shared memory, got {type(y).__name__}")
    if not 1 <= len(y) <= MAX_OUT_PARTS:
        raise ValueError(f"a final stage output of {len(y)} tensors cannot go back through shared memory "
                         f"(1 to {MAX_OUT_PARTS})")
    return tuple(y)


def part_offsets(nbytes: list[int]) -> tuple[list[int], int]:
    """Where each part of ``nbytes`` bytes starts in an output slot (one after another, each at a
    :data:`PART_ALIGN`-byte offset), and the bytes they need in all."""
    offsets: list[int] = []
    end = 0
    for n in nbytes:
        start = -(-end // PART_ALIGN) * PART_ALIGN
        offsets.append(start)
        end = start + n
    return offsets, end


def output_slot_views(slot_u8: Any, y: Any) -> Any:
    """Views of output slot ``slot_u8`` shaped like the final output ``y`` (a tensor, or a tuple with one view
    per part), for the worker to copy ``y`` into. Raises ValueError when ``y`` does not fit the slot."""
    parts = output_parts(y)
    for t in parts:
        if t.dim() > MAX_DIMS:
            raise ValueError(f"final output part {tuple(t.shape)} has more than {MAX_DIMS} dims")
        dtype_code(t.dtype)  # (raises for a dtype that cannot travel)
    offsets, total = part_offsets([tensor_bytes(t) for t in parts])
    if total > slot_u8.numel():
        shapes = ", ".join(str(tuple(t.shape)) for t in parts)
        raise ValueError(f"final output {shapes} ({total} B) does not fit an output slot ({slot_u8.numel()} B)")
    views = tuple(slot_u8[o:o + tensor_bytes(t)].view(t.dtype).view(t.shape) for o, t in zip(offsets, parts,
                                                                                              strict=True))
    return views[0] if not isinstance(y, (tuple, list)) else views


def describe_output(rec: array, y: Any) -> None:
    """The final output ``y`` (as :func:`output_slot_views` laid it out) into a completion record."""
    parts = output_parts(y)
    for k, t in enumerate(parts):
        describe_tensor(rec, C_TENSOR + k * TENSOR_FIELDS, t)
    rec[C_PARTS] = 0 if not isinstance(y, (tuple, list)) else len(parts)


def output_in_slot(slot_u8: Any, rec: list[int]) -> Any:
    """The final output a completion record describes, copied out of output slot ``slot_u8`` (a tensor, or a
    tuple of tensors)."""
    n = rec[C_PARTS]
    if n == 0:
        return tensor_in_slot(slot_u8, rec, C_TENSOR).clone()
    ats = [C_TENSOR + k * TENSOR_FIELDS for k in range(n)]
    sizes = []
    for at in ats:
        shape, dtype = described(rec, at)
        sizes.append(_numel(shape) * dtype.itemsize)
    offsets, _ = part_offsets(sizes)
    return tuple(tensor_in_slot(slot_u8, rec, at, o).clone() for at, o in zip(ats, offsets, strict=True))


def final_output_bytes(model: Any, rows: int = 1) -> int:
    """Bytes of ``rows`` jobs' final output of ``model``, from its output spec (float32 upper bounds): logits
    ``num_classes`` (classification), ``num_classes x H x W`` mask logits at the input size (segmentation), or
    ``(boxes K x 4 float32, scores K float32, labels K int64)`` per row and ``counts`` (detection, K =
    ``max_detections``; the parts' alignment included)."""
    from daris_ros.runtime.models.base import DEFAULT_MAX_DETECTIONS

    kind = getattr(model, "kind", "classification")
    classes = int(getattr(model, "num_classes", 1000))
    if kind == "segmentation":
        h, w = model.input_size
        return rows * classes * h * w * 4
    if kind == "detection":
        k = int(getattr(model, "max_detections", DEFAULT_MAX_DETECTIONS))
        _, total = part_offsets([rows * k * 4 * 4, rows * k * 4, rows * k * 8, rows * 8])
        return total
    return rows * classes * 4


# -- the scheduler side's records -----------------------------------------------------------------------
@dataclass(slots=True)
class PendingRequest:
    """A request written (or waiting to be written) to a worker, until its completion is read."""

    token: int
    context: int
    stream: int
    model: str
    stage: int
    done: StageDone | None  # None: reported through the backend's poll
    x: Any = None  # host tensor or WorkerTensor
    rows: int = 1  # jobs (batch rows) in x
    out_kind: int = -1  # OUT_HANDLE or OUT_SLOT once written (a final stage's output comes back)
    in_slot: int = -1
    out_slot: int = -1
    hid: int = -1
    t_sent: float = 0.0  # time.monotonic() when written to the current worker


@dataclass(slots=True)
class Completion:
    """One finished request (read from its worker, or failed on this side), before the backend hands it out."""

    token: int
    output: Any
    exec_time: float
    error: BaseException | None
    done: StageDone | None = field(default=None, repr=False)


# -- the scheduler side: requests written into a worker's channel, completions read from it ---------------
def write_request(slot: WorkerSlot, p: PendingRequest, model: int, last_stage: int) -> None:
    """Encode ``p`` (``model``: its model's index, ``last_stage``: that model's last stage) into ``slot``'s
    request ring and wake the worker: a host input is copied into an input slot, a final output gets an
    output slot, any other output a handle id. The caller holds the context's lock. Raises BackendError
    (:class:`WorkerLost`: the input died with a replaced worker); none of ``slot``'s slots is kept then."""
    rec = new_request(p.token, p.stream, model, p.stage)
    rec[R_ROWS] = p.rows
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
    """Where the input comes from: a handle, or a slot the input is copied into."""
    x = p.x
    if isinstance(x, WorkerTensor):
        if x.context != slot.context or x.generation != slot.generation:
            raise WorkerLost(f"stage input {x} is not in the current worker of context {slot.context} "
                             f"(generation {slot.generation}): it was lost with a replaced worker")
        rec[R_IN_KIND] = IN_HANDLE
        rec[R_IN_ID] = x.hid
        return
    import torch

    if not isinstance(x, torch.Tensor):
        raise BackendError(f"mps: a stage-0 input must be a tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        x = x.cpu()  # (the engine preprocesses on the host for this backend; this is a fallback copy)
    if not x.is_contiguous():
        x = x.contiguous()
    frame = is_frame(x)
    if frame and p.stage != 0:
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
    if p.stage == last_stage:
        k = slot.free_out_slots.take()
        if k is None:
            raise BackendError(f"mps: no free output slot in context {slot.context}")
        p.out_kind, p.out_slot = OUT_SLOT, k
        rec[R_OUT_ID] = k
    else:
        p.out_kind, p.hid = OUT_HANDLE, next(slot.handle_ids)
        rec[R_OUT_ID] = p.hid
    rec[R_OUT_KIND] = p.out_kind


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
    for rec in recs:
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
            y = output_in_slot(slot.out_u8[rec[C_OUT_ID]], rec)
        elif p.out_kind == OUT_HANDLE:
            y = WorkerTensor(slot.context, slot.generation, p.hid, p.rows)
        if p.out_slot >= 0:
            slot.free_out_slots.give(p.out_slot)
        out.append(Completion(p.token, y, rec[C_EXEC_NS] * 1e-9, err, p.done))
    return out
