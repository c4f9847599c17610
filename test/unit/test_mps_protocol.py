"""The ``mps`` backend's shared-memory channel and message format, without worker processes or a GPU:
rings (order, full, wrap-around, error text), the channel layout, slot pools, request and completion records
(header fields, tensors described and read back from a slot), and a :class:`WorkerSlot`'s two ends of one
channel (the scheduler side writes a request, a stand-in for the worker reads it and answers)."""

from __future__ import annotations

import multiprocessing
import os
from array import array
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory

import pytest
import torch

from daris_ros.runtime.backends import mps_protocol as proto
from daris_ros.runtime.backends import shm_channel as ch
from daris_ros.runtime.backends.mps_pool import READY, WorkerSlot, mps_thread_percentage


@pytest.fixture
def shm() -> Iterator[SharedMemory]:
    block = SharedMemory(create=True, size=1 << 16)
    yield block
    block.close()
    block.unlink()


def _rec(fields: int, first: int) -> array:
    return array("q", [first + i for i in range(fields)])


def test_ring_keeps_order_refuses_when_full_and_wraps_around(shm: SharedMemory) -> None:
    producer = ch.Ring(shm.buf, 0, 4, 8)
    consumer = ch.Ring(shm.buf, 0, 4, 8)  # the other process's view of the same bytes
    try:
        assert not consumer.pending() and consumer.pop_all() == []
        for k in range(4):
            assert producer.push(_rec(8, 10 * k))
        assert not producer.push(_rec(8, 99)) and len(producer) == 4  # full: the producer must wait
        assert consumer.pending()
        assert consumer.pop_all() == [list(range(10 * k, 10 * k + 8)) for k in range(4)]
        assert len(producer) == 0
        for k in range(10):  # past the capacity: indices wrap
            assert producer.push(_rec(8, k))
            assert consumer.pop_all() == [list(range(k, k + 8))]
    finally:
        producer.release()
        consumer.release()


def test_ring_text_is_appended_only_when_the_field_says_so(shm: SharedMemory) -> None:
    ring = ch.Ring(shm.buf, 0, 2, 4, text=16)
    try:
        ok = array("q", [1, 0, 0, 0])
        failed = array("q", [2, 1, 0, 0])
        assert ring.push(ok, b"ignored") and ring.push(failed, b"RuntimeError: stage failed")
        a, b = ring.pop_all(text_if=1)
        assert a == [1, 0, 0, 0]
        assert b == [2, 1, 0, 0, "RuntimeError: st"]  # truncated to the record's 16 bytes of text
        assert ring.push(failed, b"short") and ring.pop_all(text_if=1)[0][4] == "short"  # (no stale tail)
    finally:
        ring.release()
    with pytest.raises(ValueError, match="multiple of 8"):
        ch.Ring(shm.buf, 0, 2, 4, text=12)


def test_layout_regions_are_aligned_and_do_not_overlap() -> None:
    lay = ch.ChannelLayout.make(n_streams=2, in_bytes=3 * 224 * 224 * 4, out_bytes=1000 * 4)
    assert lay.in_slots == lay.out_slots == 4 * 2 + 4
    assert lay.req_offset == 0 < lay.done_offset < lay.in_offset < lay.out_offset < lay.size
    assert lay.done_offset >= ch.Ring.nbytes(lay.ring_capacity, ch.REQ_FIELDS)
    assert lay.in_offset - lay.done_offset >= ch.Ring.nbytes(lay.ring_capacity, ch.DONE_FIELDS, ch.DONE_TEXT)
    assert lay.in_offset % 4096 == 0 and lay.in_slot_bytes % 4096 == 0 and lay.out_slot_bytes % 4096 == 0
    assert lay.in_slot(1) - lay.in_slot(0) == lay.in_slot_bytes >= 3 * 224 * 224 * 4
    assert lay.slots_bytes == lay.size - lay.in_offset


def test_slot_pool_hands_out_each_slot_once() -> None:
    pool = ch.SlotPool(3)
    got = [pool.take(), pool.take(), pool.take()]
    assert sorted(got) == [0, 1, 2] and pool.take() is None and len(pool) == 0
    pool.give(got[1])
    assert pool.take() == got[1]


def test_request_record_carries_a_stage_and_a_tensor(shm: SharedMemory) -> None:
    rec = proto.new_request(7, 1, 2, 3)
    assert len(rec) == ch.REQ_FIELDS
    assert (rec[proto.R_TOKEN], rec[proto.R_STREAM], rec[proto.R_MODEL], rec[proto.R_STAGE]) == (7, 1, 2, 3)
    assert not any(rec[proto.R_STAGE + 1:])  # input, output and rows are set when it is written
    # a tensor through a slot: described in the record, viewed (not copied) on the other side
    slot_u8 = torch.frombuffer(shm.buf, dtype=torch.uint8, count=4096, offset=0)
    for x in (torch.randn(2, 3, 8, 8), torch.randint(0, 255, (6, 4, 3), dtype=torch.uint8),
              torch.randn(1, 5).to(torch.float16)):
        proto.describe_tensor(rec, proto.R_TENSOR, x)
        slot_u8[:proto.tensor_bytes(x)].copy_(x.contiguous().view(-1).view(torch.uint8))
        y = proto.tensor_in_slot(slot_u8, rec.tolist(), proto.R_TENSOR)
        assert y.dtype == x.dtype and torch.equal(y, x)
        assert y.data_ptr() == slot_u8.data_ptr()  # a view of the slot
    assert proto.is_frame(torch.zeros(6, 4, 3, dtype=torch.uint8))
    assert not proto.is_frame(torch.zeros(1, 3, 4, 4)) and not proto.is_frame(torch.zeros(6, 4, 3))
    assert proto.is_frame_batch(torch.zeros(1, 6, 4, 3, dtype=torch.uint8))  # how the engine hands frames over
    assert not proto.is_frame_batch(torch.zeros(6, 4, 3, dtype=torch.uint8))
    assert not proto.is_frame_batch(torch.zeros(1, 6, 4, 3))
    with pytest.raises(ValueError, match="5 dims"):
        proto.describe_tensor(rec, proto.R_TENSOR, torch.zeros(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="float64 cannot travel"):
        proto.describe_tensor(rec, proto.R_TENSOR, torch.zeros(2, dtype=torch.float64))
    del slot_u8, y


def test_completion_record_carries_an_output(shm: SharedMemory) -> None:
    rec = proto.new_completion(9)
    assert len(rec) == ch.DONE_FIELDS and rec[proto.C_TOKEN] == 9 and rec[proto.C_STATUS] == proto.STATUS_OK
    out = torch.randn(1, 1000)
    proto.describe_tensor(rec, proto.C_TENSOR, out)
    assert rec[proto.C_NDIM] == 2 and rec[proto.C_DIMS:proto.C_DIMS + 2].tolist() == [1, 1000]
    assert rec[proto.C_DTYPE] == proto.DTYPES.index("float32")
    assert proto.new_completion(3, proto.STATUS_ERROR)[proto.C_STATUS] == proto.STATUS_ERROR


def test_a_tuple_final_output_travels_part_by_part(shm: SharedMemory) -> None:
    """A detector's (boxes, scores, labels, counts): copied into slot views at 64-byte aligned offsets, described
    part by part in the completion, read back as a tuple of copies; one tensor still reads back as a tensor."""
    slot_u8 = torch.frombuffer(shm.buf, dtype=torch.uint8, count=4096, offset=0)
    k = 3
    y = (torch.rand(2, k, 4) * 100, torch.rand(2, k), torch.randint(0, 91, (2, k)), torch.tensor([3, 1]))
    views = proto.output_slot_views(slot_u8, y)
    assert isinstance(views, tuple) and len(views) == 4
    for dst, src in zip(views, y, strict=True):
        dst.copy_(src)
    offsets = [v.data_ptr() - slot_u8.data_ptr() for v in views]
    assert offsets == [0, 128, 192, 256]  # 96, 24, 48 B parts, each at the next multiple of 64
    rec = proto.new_completion(4)
    proto.describe_output(rec, views)
    assert rec[proto.C_PARTS] == 4
    assert rec[proto.C_TENSOR + 2 * proto.TENSOR_FIELDS + 1 + proto.MAX_DIMS] == proto.DTYPES.index("int64")
    back = proto.output_in_slot(slot_u8, rec.tolist())
    assert isinstance(back, tuple) and len(back) == 4
    for a, b in zip(back, y, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    slot_u8.zero_()  # copies, not views: the slot is free for the next output
    assert torch.equal(back[0], y[0])

    logits = torch.randn(2, 7)
    one = proto.output_slot_views(slot_u8, logits)
    one.copy_(logits)
    rec = proto.new_completion(5)
    proto.describe_output(rec, one)
    assert rec[proto.C_PARTS] == 0 and torch.equal(proto.output_in_slot(slot_u8, rec.tolist()), logits)

    with pytest.raises(ValueError, match="does not fit an output slot"):
        proto.output_slot_views(slot_u8, (torch.zeros(1000), torch.zeros(100)))
    with pytest.raises(ValueError, match="5 tensors"):
        proto.output_slot_views(slot_u8, tuple(torch.zeros(1) for _ in range(5)))
    with pytest.raises(TypeError, match="flat tuple of tensors"):
        proto.output_slot_views(slot_u8, (torch.zeros(1), (torch.zeros(1),)))
    del slot_u8, views, one


def test_final_output_bytes_from_the_output_spec() -> None:
    class Spec:
        def __init__(self, kind: str, num_classes: int, **extra: object) -> None:
            self.kind, self.num_classes, self.input_size = kind, num_classes, (30, 40)
            self.__dict__.update(extra)

    assert proto.final_output_bytes(Spec("classification", 1000)) == 4000
    assert proto.final_output_bytes(Spec("classification", 1000), rows=3) == 12000
    assert proto.final_output_bytes(Spec("segmentation", 21)) == 21 * 30 * 40 * 4
    # K = 100: boxes 1600 B, scores 400 B (at 1600), labels 800 B (at 2048), counts 8 B (at 2880)
    assert proto.final_output_bytes(Spec("detection", 91)) == 2888
    # 2 rows of K = 5: boxes 160 B, scores 40 B (at 192), labels 80 B (at 256), counts 16 B (at 384)
    assert proto.final_output_bytes(Spec("detection", 91, max_detections=5), rows=2) == 400


def test_worker_tensor() -> None:
    h = proto.WorkerTensor(1, 0, 5)
    assert h.rows == 1 and h == proto.WorkerTensor(1, 0, 5, 1) and h != proto.WorkerTensor(1, 1, 5)


def test_thread_percentage_gives_the_sm_count() -> None:
    for sms in (32, 34, 44, 66, 88, 132):
        assert int(mps_thread_percentage(sms, 132) / 100 * 132) // 2 * 2 == sms


def test_worker_slot_request_and_completion_through_one_channel() -> None:
    """The scheduler side of a WorkerSlot writes a request (and a wake-up byte); a stand-in worker reads it
    from the same shared memory and answers; the scheduler side takes the completion with its text."""
    lay = ch.ChannelLayout.make(1, 4096, 4096, ring_capacity=4)
    block = SharedMemory(create=True, size=lay.size)
    ctx = multiprocessing.get_context("spawn")
    parent_ctrl, child_ctrl = ctx.Pipe(duplex=True)
    req_r, req_w = ctx.Pipe(duplex=False)
    done_r, done_w = ctx.Pipe(duplex=False)

    class NoProcess:  # (the slot only asks whether it lives)
        pid = None

        @staticmethod
        def is_alive() -> bool:
            return True

    slot = WorkerSlot(0, 0, NoProcess(), block, lay, parent_ctrl, req_w, done_r, state=READY)
    worker_requests = ch.Ring(block.buf, lay.req_offset, lay.ring_capacity, ch.REQ_FIELDS)
    worker_completions = ch.Ring(block.buf, lay.done_offset, lay.ring_capacity, ch.DONE_FIELDS, ch.DONE_TEXT)
    try:
        assert len(slot.free_in_slots) == len(slot.free_out_slots) == lay.in_slots
        assert next(slot.handle_ids) == 1
        rec = proto.new_request(11, 0, 0, 2)
        assert slot.post_request(rec)
        assert req_r.poll(1.0) and os.read(req_r.fileno(), 64) == b"\0"  # the wake-up byte reached the worker
        (got,) = worker_requests.pop_all()
        assert got == rec.tolist()
        for k in range(lay.ring_capacity):  # a full ring: post_request gives up after stay_full_s
            assert slot.post_request(proto.new_request(20 + k, 0, 0, 0))
        assert not slot.post_request(proto.new_request(99, 0, 0, 0), stay_full_s=0.01)
        assert worker_completions.push(proto.new_completion(11))
        assert worker_completions.push(proto.new_completion(12, proto.STATUS_ERROR), b"RuntimeError: boom")
        ok, failed = slot.take_completions()
        assert ok[proto.C_TOKEN] == 11 and len(ok) == ch.DONE_FIELDS
        assert failed[proto.C_TOKEN] == 12 and failed[-1] == "RuntimeError: boom"
    finally:
        worker_requests.release()
        worker_completions.release()
        for conn in (child_ctrl, req_r, done_w):
            conn.close()
        slot.release()
