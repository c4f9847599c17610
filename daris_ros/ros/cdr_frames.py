"""Camera messages as they arrive (CDR bytes), read without copying their pixels.

The node subscribes with ``raw=True``: a frame is the serialized ``sensor_msgs/Image`` or ``CompressedImage``.
:func:`parse_frame` reads the header fields (stamp, frame_id, sizes, encoding or format) and where the pixel
data lies in the buffer, in microseconds; the pixels are read only when a release takes the frame
(:class:`RosFrameDecoder`), off the executor thread. Layout (XCDR1, the encoding ROS 2 uses): a 4-byte
encapsulation header (``00 01``: little endian; ``00 00``: big endian), then the fields, each aligned to its size
counted from the end of the encapsulation header; a string is a uint32 length (with its NUL) and the bytes; a
byte sequence a uint32 length and the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from daris_ros.runtime.frames import FrameError


@dataclass(frozen=True, slots=True)
class StampHeader:
    """The ``std_msgs/Header`` of a frame (what a result message carries back)."""

    sec: int
    nanosec: int
    frame_id: str


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A camera message, its header fields parsed, its pixels still in ``buffer`` (``data`` is a view). ``buffer``
    is the message as rclpy hands it (``bytes``) or as an intake process's pipe delivers it (a writable
    ``memoryview`` that nvJPEG reads without a copy, ``ros/frame_pipe.py``)."""

    buffer: bytes | memoryview
    header: StampHeader
    compressed: bool
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    format: str = ""
    data_offset: int = 0
    data_length: int = 0

    @property
    def data(self) -> memoryview:
        return memoryview(self.buffer)[self.data_offset:self.data_offset + self.data_length]


class _Reader:
    __slots__ = ("buf", "pos", "endian")

    def __init__(self, buf: bytes | memoryview) -> None:
        if len(buf) < 4:
            raise FrameError("undecodable", f"message of {len(buf)} bytes has no CDR encapsulation header")
        kind = buf[1]
        if buf[0] != 0 or kind not in (0, 1):
            raise FrameError("undecodable", f"unsupported CDR encapsulation {buf[:2].hex()}")
        self.buf = buf
        self.pos = 4
        self.endian = "<" if kind == 1 else ">"

    def _align(self, n: int) -> None:
        self.pos += (-(self.pos - 4)) % n

    def u32(self) -> int:
        self._align(4)
        end = self.pos + 4
        if end > len(self.buf):
            raise FrameError("undecodable", "message ends inside its header")
        (v,) = struct.unpack_from(self.endian + "I", self.buf, self.pos)
        self.pos = end
        return int(v)

    def i32(self) -> int:
        self._align(4)
        end = self.pos + 4
        if end > len(self.buf):
            raise FrameError("undecodable", "message ends inside its header")
        (v,) = struct.unpack_from(self.endian + "i", self.buf, self.pos)
        self.pos = end
        return int(v)

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise FrameError("undecodable", "message ends inside its header")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def string(self) -> str:
        n = self.u32()
        end = self.pos + n
        if n == 0 or end > len(self.buf):
            raise FrameError("undecodable", f"bad string length {n} in the message header")
        raw = self.buf[self.pos:end - 1]  # without the NUL
        self.pos = end
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("undecodable", f"a header string is not UTF-8: {exc}") from exc

    def sequence(self) -> tuple[int, int]:
        n = self.u32()
        start = self.pos
        if start + n > len(self.buf):  # a truncated message (what deserialize_message refuses too)
            raise FrameError("undecodable", f"data sequence of {n} bytes, the message holds {len(self.buf) - start}")
        self.pos = start + n
        return start, n

    def header(self) -> StampHeader:
        sec = self.i32()
        nanosec = self.u32()
        return StampHeader(sec, nanosec, self.string())


def parse_frame(buffer: bytes | memoryview, compressed: bool) -> RawFrame:
    """Header fields of a serialized ``sensor_msgs/Image`` (``compressed=False``) or ``CompressedImage``; raises
    :class:`FrameError` (``undecodable``) for a message that is not one."""
    r = _Reader(buffer)
    header = r.header()
    if compressed:
        fmt = r.string()
        offset, length = r.sequence()
        return RawFrame(buffer, header, True, format=fmt, data_offset=offset, data_length=length)
    height, width = r.u32(), r.u32()
    encoding = r.string()
    big = r.u8()
    step = r.u32()
    offset, length = r.sequence()
    return RawFrame(buffer, header, False, height, width, encoding, big, step, data_offset=offset,
                    data_length=length)


class RosFrameDecoder:
    """Decodes the raw camera messages of a release burst: raw images are viewed in place and converted to RGB
    (:func:`~daris_ros.ros.conversion.image_to_rgb`); JPEGs are decoded together on the GPU (nvJPEG, one batched
    call) when ``device`` is CUDA, else with Pillow, like PNGs."""

    def __init__(self, max_pixels: int, device: str = "cpu", threads: int = 4) -> None:
        self.max_pixels = max_pixels
        self.device = device
        #: The engine decodes bursts in a pool of this many threads, off its loop (0: in the loop). Pillow and nvJPEG
        #: release the GIL while they decode.
        self.threads = threads

    def warm_up(self) -> None:
        """Decode one small JPEG on the GPU (nvJPEG's decoder is made at its first use, in the calling thread's
        CUDA context); nothing to do on the CPU. The engine calls it in each decode thread before its loop runs."""
        if not self.device.startswith("cuda"):
            return
        import torch
        from torchvision.io import encode_jpeg

        from daris_ros.ros.conversion import decode_jpegs_on

        jpeg = encode_jpeg(torch.zeros((3, 64, 64), dtype=torch.uint8)).numpy().tobytes()
        (frame,) = decode_jpegs_on([jpeg], self.device)
        if isinstance(frame, FrameError):
            raise frame
        torch.cuda.current_stream(torch.device(self.device)).synchronize()

    def decode(self, tasks: Any, payloads: Any) -> list[Any]:
        from daris_ros.ros.conversion import compressed_to_rgb, decode_jpegs_on, image_to_rgb, is_jpeg

        out: list[Any] = [None] * len(payloads)
        jpegs: list[int] = []
        for i, frame in enumerate(payloads):
            try:
                if not frame.compressed:
                    out[i] = image_to_rgb(frame, self.max_pixels)
                elif self.device.startswith("cuda") and is_jpeg(frame.data):
                    jpegs.append(i)
                else:
                    out[i] = compressed_to_rgb(frame, self.max_pixels)
            except FrameError as exc:
                out[i] = exc
            except Exception as exc:  # noqa: BLE001 - whatever a frame holds, it is counted, not fatal
                out[i] = FrameError("invalid", f"{type(exc).__name__}: {exc}")
        if jpegs:
            for i, frame in zip(jpegs, decode_jpegs_on([payloads[i].data for i in jpegs], self.device), strict=True):
                out[i] = frame
            if self.threads > 0:  # (a decode thread's stream; in the loop its own stream is ordered after the decode)
                import torch

                torch.cuda.current_stream(torch.device(self.device)).synchronize()
        return out
