"""The transport between the scheduler process and one MPS worker process: two rings and frame slots.

One :class:`ChannelLayout` per worker generation describes a single ``multiprocessing.shared_memory``
block::

    [request ring][completion ring][input slots][output slots]

* The rings are single-producer single-consumer queues of fixed-size int64 records (the scheduler
  writes requests, the worker writes completions). A record is written first and published by storing
  the ring's tail afterwards; the consumer reads the tail, then the records, then stores its head. On
  x86-64 (the only target: the GPU machines) aligned 8-byte stores are atomic and stores/loads are not
  reordered with older ones of the same kind, so no locks are needed across the processes. Counters
  are written through a ``memoryview`` cast to ``'q'`` (one ``memcpy`` of 8 bytes), never with
  ``struct``'s standard-size packers (byte by byte: a reader could see a torn value).
* Input slots carry a stage-0 input (a preprocessed frame, float32) from the scheduler to the worker,
  which copies it to the GPU straight from the slot (the worker registers the slots as pinned memory,
  so that copy is an asynchronous DMA). Output slots carry a job's final output back. A slot is owned by
  one request from submit until its completion is read, so neither side ever waits on the other.

Wake-ups do not go through the rings: each side writes a byte to a pipe after publishing records (see
:mod:`.mps_pool`), so an idle process can block in ``select`` instead of spinning. What a record's fields
mean, and how a tensor is described in one, is :mod:`.mps_protocol`; nothing here knows about stages.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

#: Record geometry of the two rings (what the fields mean: :mod:`.mps_protocol`).
REQ_FIELDS = 32  # int64 per request record
DONE_FIELDS = 32  # int64 per completion record
DONE_TEXT = 192  # bytes of error text carried by a completion record
_HEADER = 128  # head at byte 0, tail at byte 64 (separate cache lines)
_PAGE = 4096


def _align(n: int, to: int = _PAGE) -> int:
    return (n + to - 1) // to * to


class Ring:
    """A single-producer single-consumer ring of ``capacity`` records of ``fields`` int64 (+ ``text`` bytes)."""

    def __init__(self, buf: memoryview, offset: int, capacity: int, fields: int, text: int = 0) -> None:
        if text % 8:
            raise ValueError("text must be a multiple of 8 bytes")
        self.capacity: int = capacity
        self.fields: int = fields
        self.text: int = text
        self._stride = fields + text // 8  # int64 per record
        self._hdr = buf[offset:offset + _HEADER].cast("q")
        size = capacity * self._stride * 8
        self._bytes = buf[offset + _HEADER:offset + _HEADER + size]
        self._q = self._bytes.cast("q")

    @staticmethod
    def nbytes(capacity: int, fields: int, text: int = 0) -> int:
        return _align(_HEADER + capacity * (fields * 8 + text), 64)

    def __len__(self) -> int:
        return self._hdr[8] - self._hdr[0]

    def push(self, values: array, text: bytes = b"") -> bool:
        """Append one record (an ``array('q')`` of ``fields`` values); False when the ring is full."""
        hdr = self._hdr
        tail = hdr[8]
        if tail - hdr[0] >= self.capacity:
            return False
        base = (tail % self.capacity) * self._stride
        self._q[base:base + self.fields] = values
        if self.text:
            start = (base + self.fields) * 8
            data = text[:self.text]
            self._bytes[start:start + len(data)] = data
            if len(data) < self.text:
                self._bytes[start + len(data)] = 0
        hdr[8] = tail + 1  # publish after the record is written
        return True

    def pending(self) -> bool:
        hdr = self._hdr
        return hdr[8] != hdr[0]

    def pop_all(self, text_if: int = -1) -> list[list[Any]]:
        """Every published record, oldest first (their slots are free for the producer afterwards).

        With ``text_if >= 0``, a record whose field ``text_if`` is non-zero gets its text appended (str).
        """
        hdr = self._hdr
        head, tail = hdr[0], hdr[8]
        if head == tail:
            return []
        out: list[list[Any]] = []
        q, stride, cap, n = self._q, self._stride, self.capacity, self.fields
        while head < tail:
            base = (head % cap) * stride
            rec: list[Any] = q[base:base + n].tolist()
            if text_if >= 0 and rec[text_if] and self.text:
                start = (base + n) * 8
                raw = bytes(self._bytes[start:start + self.text])
                rec.append(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
            out.append(rec)
            head += 1
        hdr[0] = head
        return out

    def release(self) -> None:
        """Drop the views (so the shared memory can be closed)."""
        for v in (self._q, self._bytes, self._hdr):
            v.release()


@dataclass(frozen=True, slots=True)
class ChannelLayout:
    """Sizes and offsets of one worker's shared-memory block."""

    ring_capacity: int
    in_slots: int
    in_slot_bytes: int
    out_slots: int
    out_slot_bytes: int

    @property
    def req_offset(self) -> int:
        return 0

    @property
    def done_offset(self) -> int:
        return Ring.nbytes(self.ring_capacity, REQ_FIELDS)

    @property
    def in_offset(self) -> int:
        return _align(self.done_offset + Ring.nbytes(self.ring_capacity, DONE_FIELDS, DONE_TEXT))

    @property
    def out_offset(self) -> int:
        return self.in_offset + self.in_slots * self.in_slot_bytes

    @property
    def slots_bytes(self) -> int:
        """Bytes of both slot regions (contiguous, page-aligned: what the worker pins)."""
        return self.in_slots * self.in_slot_bytes + self.out_slots * self.out_slot_bytes

    @property
    def size(self) -> int:
        return self.out_offset + self.out_slots * self.out_slot_bytes

    def in_slot(self, k: int) -> int:
        return self.in_offset + k * self.in_slot_bytes

    def out_slot(self, k: int) -> int:
        return self.out_offset + k * self.out_slot_bytes

    @staticmethod
    def make(n_streams: int, in_bytes: int, out_bytes: int, ring_capacity: int = 1024) -> ChannelLayout:
        """Slots for ``4 N_s + 4`` stages in flight each way (one stage per stream is the normal case)."""
        n = 4 * n_streams + 4
        return ChannelLayout(ring_capacity, n, _align(max(in_bytes, 64)), n, _align(max(out_bytes, 64)))


class SlotPool:
    """Free slot indices (used by the scheduler side only, under its lock)."""

    def __init__(self, n: int) -> None:
        self._free: list[int] = list(range(n - 1, -1, -1))

    def take(self) -> int | None:
        return self._free.pop() if self._free else None

    def give(self, k: int) -> None:
        self._free.append(k)

    def __len__(self) -> int:
        return len(self._free)
