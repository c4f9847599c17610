"""What the node checks of every camera frame at arrival, before it reaches the engine's inbox (no pixel decoded).

:func:`check_frame` parses the CDR header fields (:func:`~daris_ros.ros.cdr_frames.parse_frame`), checks the image
(size within ``max_pixels``, an encoding or format we accept, a JPEG or PNG that is not truncated) and its stamp
against the node's clock, and raises :class:`~daris_ros.runtime.frames.FrameError` naming what is wrong. The node's
own subscriptions and the intake processes (``intake_processes``) run the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from daris_ros.ros.cdr_frames import RawFrame, parse_frame
from daris_ros.ros.conversion import check_stamp, validate_compressed, validate_image


@dataclass(frozen=True, slots=True)
class FrameChecks:
    """The limits a frame is checked against (parameters ``max_pixels``, ``stamp_future_tolerance``,
    ``stamp_past_tolerance``)."""

    max_pixels: int
    stamp_future_tolerance: float
    stamp_past_tolerance: float


def check_frame(raw: bytes, compressed: bool, checks: FrameChecks, now_ns: int) -> RawFrame:
    """The frame in ``raw`` (a serialized ``CompressedImage`` when ``compressed``, else ``Image``), checked;
    ``now_ns``: the node's clock at arrival (0: unknown, the stamp is not compared)."""
    frame = parse_frame(raw, compressed)
    if compressed:
        validate_compressed(frame, checks.max_pixels)
    else:
        validate_image(frame, checks.max_pixels)
    check_stamp(frame.header.sec, frame.header.nanosec, now_ns, checks.stamp_future_tolerance,
                checks.stamp_past_tolerance)
    return frame
