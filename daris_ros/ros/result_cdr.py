"""An ``InferenceResult`` written straight to its CDR bytes, for ``Publisher.publish(bytes)``.

Why: building the Python message (:func:`~daris_ros.ros.messages.result_msg`) and rclpy's conversion of it to C at
``publish`` hold the interpreter lock (GIL) for about 70 us a result; at 1,440 results a second that was a tenth of
the node's GIL time, taken from the engine's loop (py-spy ``--gil`` at 48 cameras, docs/benchmarks/node_e2e,
session 15). :func:`serialize_result` writes the same bytes with ``struct`` in a fraction of that. The same bytes:
``test/ros/test_result_cdr.py`` compares them with ``rclpy.serialization.serialize_message(result_msg(...))`` for
every kind of result, so a change to ``msg/InferenceResult.msg`` or ``StageRecord.msg`` that this writer does not
follow fails there.

Layout: XCDR1 little endian (encapsulation ``00 01 00 00``), each primitive aligned to its size counted from the
end of the encapsulation header; a string is a uint32 length (with its NUL), the bytes and a NUL; a sequence is a
uint32 count and its elements.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from daris_ros.ros.cdr_frames import StampHeader
from daris_ros.runtime.labels import name_of
from daris_ros.runtime.results import JobResult

_PRIORITY = {"HP": 0}  # InferenceResult.PRIORITY_HIGH; anything else PRIORITY_LOW (1)
_KIND = {"classification": 0, "segmentation": 1, "detection": 2}  # InferenceResult.KIND_*
_U32 = struct.Struct("<I")
_STAGE_HEAD = struct.Struct("<B3xiiB")  # stage, (pad to 4), context, stream, level
_F64x4 = struct.Struct("<dddd")
_TIME = struct.Struct("<iI")
_U64 = struct.Struct("<Q")
_U32x2 = struct.Struct("<II")
_I32x2 = struct.Struct("<ii")
_F64 = struct.Struct("<d")
_F64x2 = struct.Struct("<dd")
NS = 1_000_000_000


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray(b"\x00\x01\x00\x00")

    def align(self, n: int) -> None:
        pad = -(len(self.buf) - 4) % n
        if pad:
            self.buf += bytes(pad)

    def pack(self, fmt: struct.Struct, size: int, *values: Any) -> None:
        """``values`` as ``fmt``, aligned to ``size`` (the first member's)."""
        self.align(size)
        self.buf += fmt.pack(*values)

    def string(self, s: str) -> None:
        data = s.encode()
        self.align(4)
        self.buf += _U32.pack(len(data) + 1)
        self.buf += data
        self.buf += b"\x00"

    def sequence(self, code: str, size: int, values: Sequence[Any]) -> None:
        self.align(4)
        self.buf += _U32.pack(len(values))
        if values:
            self.align(size)
            self.buf += struct.pack(f"<{len(values)}{code}", *values)

    def time(self, ns: int) -> None:
        self.align(4)
        self.buf += _TIME.pack(ns // NS, ns % NS)


def serialize_result(r: JobResult, header: StampHeader, offset_ns: int, *, payload_topic: str = "",
                     class_names: Sequence[str] = ()) -> bytes:
    """The CDR bytes of ``result_msg(r, Header(stamp=(header.sec, header.nanosec), frame_id=header.frame_id),
    to_ros, ...)`` where ``to_ros`` maps engine seconds ``t`` to ``round(t * 1e9) + offset_ns`` nanoseconds of ROS
    time (the engine's clock mapped onto the node's at the frame's arrival)."""
    w = _Writer()
    w.pack(_TIME, 4, header.sec, header.nanosec)
    w.string(header.frame_id)
    w.string(r.task)
    w.pack(_U64, 8, r.job_id)
    w.buf.append(_PRIORITY.get(r.priority, 1))
    w.string(r.model)
    w.sequence("i", 4, [int(c) for c in r.class_ids])
    w.sequence("f", 4, [float(s) for s in r.scores])
    if r.segmentation is not None:
        h, wd, ids, fractions = r.segmentation
        w.pack(_U32x2, 4, int(h), int(wd))
        w.sequence("i", 4, [int(c) for c in ids])
        w.sequence("f", 4, [float(f) for f in fractions])
    else:
        w.pack(_U32x2, 4, 0, 0)
        w.sequence("i", 4, ())
        w.sequence("f", 4, ())
    for instant in (r.receive_time, r.release_time, r.start_time, r.finish_time, r.deadline):
        w.time(round(instant * 1e9) + offset_ns)
    w.pack(_F64x2, 8, float(r.response_time), float(r.exec_time))
    w.buf.append(1 if r.met else 0)
    w.pack(_F64, 8, float(r.mret))
    w.pack(_I32x2, 4, int(r.context), int(r.stream))
    w.align(4)
    w.buf += _U32.pack(len(r.stages))
    release = r.release_time
    for stage in r.stages:
        w.pack(_STAGE_HEAD, 4, stage.stage, stage.context, stage.stream, stage.level)
        w.pack(_F64x4, 8, stage.start - release, stage.finish - release, stage.exec_time,
               stage.virtual_deadline - release)
    w.buf.append(_KIND[r.kind])
    w.string(payload_topic)
    h_src, w_src = (int(r.source_size[0]), int(r.source_size[1])) if r.source_size is not None else (0, 0)
    w.pack(_U32x2, 4, h_src, w_src)
    names = [name_of(class_names, int(c)) for c in r.class_ids] if class_names and r.class_ids else []
    w.align(4)
    w.buf += _U32.pack(len(names))
    for name in names:
        w.string(name)
    w.pack(_U32, 4, len(r.detections) if r.detections is not None else 0)
    return bytes(w.buf)
