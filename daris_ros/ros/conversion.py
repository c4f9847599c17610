"""sensor_msgs Image / CompressedImage -> HxWx3 RGB uint8 numpy array, with named errors.

Every frame is validated here first (sizes, step, data length, encoding). 8-bit encodings are then
converted by ROS 2's ``cv_bridge`` where it is importable (a ROS install), else by numpy; 16-bit mono is
always converted here (the top byte, as an 8-bit picture).

A malformed frame raises :class:`FrameError` whose ``reason`` is a short code the node counts per task
(``dropped`` in the stats, and per reason in /diagnostics). Nothing here keeps state.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# encoding -> (channels, dtype, channel order to reach RGB)
_ENCODINGS: dict[str, tuple[int, str, tuple[int, ...] | None]] = {
    "rgb8": (3, "u1", (0, 1, 2)),
    "bgr8": (3, "u1", (2, 1, 0)),
    "rgba8": (4, "u1", (0, 1, 2)),
    "bgra8": (4, "u1", (2, 1, 0)),
    "mono8": (1, "u1", None),
    "8UC1": (1, "u1", None),
    "mono16": (1, "u2", None),
    "16UC1": (1, "u2", None),
}
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEFAULT_MAX_PIXELS = 4096 * 4096


def _load_cv_bridge() -> Any:
    """ROS 2's cv_bridge where a ROS install provides it (it is not installable from PyPI: PyPI's
    ``cv-bridge`` is ROS 1's). None otherwise; the numpy path below is then the converter."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]

        return CvBridge()
    except Exception:  # noqa: BLE001 - ImportError, or a broken binary install
        return None


_CV_BRIDGE = _load_cv_bridge()
USING_CV_BRIDGE = _CV_BRIDGE is not None


class FrameError(ValueError):
    """A frame that cannot be converted; ``reason`` is a short counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a ``sensor_msgs/msg/Image`` to an HxWx3 RGB uint8 array (a copy)."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise FrameError("unknown_encoding",
                         f"encoding {enc!r} is not supported (use one of {', '.join(SUPPORTED_ENCODINGS)})")
    channels, kind, order = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise FrameError("zero_size", f"image size {w}x{h} is empty")
    if h * w > max_pixels:
        raise FrameError("too_large", f"image size {w}x{h} exceeds the limit of {max_pixels} pixels")
    itemsize = 2 if kind == "u2" else 1
    row = w * channels * itemsize
    if step < row:
        raise FrameError("bad_step", f"step {step} < width*channels*bytes = {row} for {enc}")
    data = msg.data
    n = len(data)
    if n != h * step:
        reason = "short_data" if n < h * step else "long_data"
        raise FrameError(reason, f"data has {n} bytes, expected height*step = {h * step}")
    if _CV_BRIDGE is not None and itemsize == 1:
        # validated above, so cv_bridge only ever sees well-formed frames
        return np.ascontiguousarray(_CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    buf = np.frombuffer(data if not isinstance(data, list) else bytes(data), dtype=np.uint8)
    rows = buf.reshape(h, step)[:, :row]
    if itemsize == 2:
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        mono = np.ascontiguousarray(rows).view(dt).reshape(h, w)
        img8 = (mono >> 8).astype(np.uint8)
        return np.repeat(img8[:, :, None], 3, axis=2)
    px = rows.reshape(h, w, channels)
    if order is None:
        return np.repeat(px, 3, axis=2)
    return np.ascontiguousarray(px[:, :, list(order)])


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/msg/CompressedImage`` (jpeg or png) to HxWx3 RGB uint8."""
    from PIL import Image as PILImage

    fmt = (msg.format or "").lower()
    if fmt and "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise FrameError("unknown_format", f"compressed format {msg.format!r} is not jpeg or png")
    data = bytes(msg.data)
    if not data:
        raise FrameError("zero_size", "compressed image has no data")
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise FrameError("too_large", f"image size {w}x{h} exceeds the limit of {max_pixels} pixels")
            return np.asarray(im.convert("RGB"))
    except FrameError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise FrameError("corrupt_compressed", f"cannot decode {fmt or 'compressed'} image: {exc}") from exc
