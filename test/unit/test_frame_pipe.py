"""The intake pipe's records (daris_ros/ros/frame_pipe.py): what is written is read back whole and in order, frames
larger than the pipe included; the payload is a writable buffer that a frame parses from without a copy; a closed
writer is EOF and a stream out of step an error, not a hang."""

from __future__ import annotations

import os
import struct
import threading

import pytest

from daris_ros.ros.cdr_frames import parse_frame
from daris_ros.ros.frame_pipe import DROP, ERROR, FRAME, HEAD, FrameReader, write_record


def _compressed_cdr(sec: int, nanosec: int, frame_id: str, fmt: str, data: bytes) -> bytes:
    """A little-endian CDR sensor_msgs/CompressedImage (header, format, data)."""
    out = bytearray(b"\x00\x01\x00\x00")

    def align(n: int) -> None:
        out.extend(b"\x00" * ((-(len(out) - 4)) % n))

    def string(s: str) -> None:
        align(4)
        raw = s.encode() + b"\x00"
        out.extend(struct.pack("<I", len(raw)) + raw)

    out.extend(struct.pack("<iI", sec, nanosec))
    string(frame_id)
    string(fmt)
    align(4)
    out.extend(struct.pack("<I", len(data)) + data)
    return bytes(out)


def test_records_round_trip_in_order_larger_than_the_pipe() -> None:
    read_fd, write_fd = os.pipe()
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: many reads on the reader's side
    sent = [(FRAME, 7, big, 12.5, 1_765_000_000_000_000_001), (DROP, 8, b"zero_size\0no data", 1.0, 2),
            (FRAME, 65535, b"", 0.0, 0), (ERROR, 0, "cannot subscribe to 'x': \u00e4".encode(), 0.0, 0)]

    def writer() -> None:
        for kind, sub_id, payload, arrival, ros_ns in sent:
            write_record(write_fd, kind, sub_id, payload, arrival, ros_ns)
        os.close(write_fd)

    thread = threading.Thread(target=writer)
    thread.start()
    reader = FrameReader(read_fd)
    got = [reader.read() for _ in sent]
    with pytest.raises(EOFError):
        reader.read()
    thread.join()
    reader.close()
    assert [(r.kind, r.sub_id, bytes(r.payload), r.arrival, r.ros_ns) for r in got] == sent
    assert not got[0].payload.readonly


def test_a_frame_parses_from_the_payload_and_its_pixels_are_writable() -> None:
    read_fd, write_fd = os.pipe()
    jpeg = b"\xff\xd8\xff\xe0" + b"\x11" * 100 + b"\xff\xd9"
    write_record(write_fd, FRAME, 3, _compressed_cdr(17, 5, "front", "jpeg", jpeg), 3.0, 4)
    os.close(write_fd)
    record = FrameReader(read_fd).read()
    os.close(read_fd)
    frame = parse_frame(record.payload, compressed=True)
    assert (frame.header.sec, frame.header.nanosec, frame.header.frame_id, frame.format) == (17, 5, "front", "jpeg")
    assert bytes(frame.data) == jpeg
    assert not frame.data.readonly  # (what lets nvJPEG's input share it: conversion.decode_jpegs_on)


def test_a_stream_out_of_step_is_an_error() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, HEAD.pack(ord("X"), 1, 0.0, 0, 10) + b"0123456789")
    os.close(write_fd)
    with pytest.raises(OSError, match="out of step"):
        FrameReader(read_fd).read()
    os.close(read_fd)


def test_a_writer_cut_off_inside_a_record_is_eof() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, HEAD.pack(FRAME, 1, 0.0, 0, 1000) + b"only part")
    os.close(write_fd)
    with pytest.raises(EOFError):
        FrameReader(read_fd).read()
    os.close(read_fd)
