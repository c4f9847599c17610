"""The pipe between an intake process and the scheduler node: records written without joining, read without copying.

A record is a fixed head, ``<BHdQI`` (kind, subscription id, arrival on CLOCK_MONOTONIC in s, the writer's ROS clock
at arrival in ns, payload length), then the payload. Kinds: ``F`` (a checked frame; payload: its CDR bytes), ``D``
(a frame refused; payload: reason ``\\0`` message, UTF-8), ``E`` (an error of the intake; payload: the message).

Why not ``multiprocessing.connection``: its ``recv_bytes`` collects a message in a ``BytesIO`` and the frame then
had to be cut out of it and copied again for nvJPEG (a writable buffer), each copy of a 1280x720 JPEG under the
node's GIL. Here :meth:`FrameReader.read` reads the head, then the payload straight into a fresh writable buffer
(``os.readv``, which runs without the GIL), and that buffer is the frame until its release decodes it
(``torch.frombuffer`` shares it). :func:`write_record` sends the head and the payload with one ``os.writev``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

HEAD = struct.Struct("<BHdQI")
FRAME, DROP, ERROR = b"F"[0], b"D"[0], b"E"[0]
#: The size asked for each intake pipe (the frames waiting to be read).
PIPE_BYTES = 1 << 20
#: The largest payload a reader accepts (a bigger length means the stream is out of step).
MAX_PAYLOAD = 1 << 30


@dataclass(frozen=True, slots=True)
class Record:
    kind: int  # FRAME, DROP or ERROR
    sub_id: int
    arrival: float
    ros_ns: int
    payload: memoryview  # writable, over a buffer of its own


def write_record(fd: int, kind: int, sub_id: int, payload: bytes, arrival: float = 0.0, ros_ns: int = 0) -> None:
    """One record to ``fd`` (blocking); raises OSError when the reader is gone."""
    head = HEAD.pack(kind, sub_id, arrival, ros_ns, len(payload))
    total = len(head) + len(payload)
    written = os.writev(fd, [head, payload])
    if written < total:  # (a pipe takes a blocking write whole; a signal can cut one short)
        rest = memoryview(head + bytes(payload))[written:]
        while rest:
            n = os.write(fd, rest)
            rest = rest[n:]


class FrameReader:
    """Records from the read end ``fd`` of a pipe (one reader thread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._head = bytearray(HEAD.size)

    def read(self) -> Record:
        """The next record; raises EOFError when the writer closed its end."""
        self._fill(memoryview(self._head))
        kind, sub_id, arrival, ros_ns, length = HEAD.unpack(self._head)
        if kind not in (FRAME, DROP, ERROR) or length > MAX_PAYLOAD:
            raise OSError(f"intake pipe out of step: record kind {kind}, length {length}")
        payload = np.empty(length, dtype=np.uint8).data  # (a writable memoryview, not zeroed: filled below)
        self._fill(payload)
        return Record(kind, sub_id, arrival, ros_ns, payload)

    def _fill(self, view: memoryview) -> None:
        got = 0
        size = len(view)
        while got < size:
            n = os.readv(self.fd, [view[got:]])
            if n == 0:
                raise EOFError("the intake process closed its pipe")
            got += n

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def widen_pipe(fd: int) -> None:
    """A pipe that holds several frames (Linux: 1 MiB, where allowed), so a child rarely waits for the reader and
    the reader takes a frame in one read."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass
