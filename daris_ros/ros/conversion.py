"""sensor_msgs Image / CompressedImage -> HxWx3 RGB uint8 numpy array, with named errors.

Two steps. :func:`validate_image` / :func:`validate_compressed` (and :func:`check_stamp`) are the cheap
checks the node runs on every frame the moment it arrives (sizes, step, data length, encoding; format,
signature, header, size and end marker of compressed data; the stamp), so every malformed frame is
counted even when a newer frame replaces it before a release. :func:`image_to_rgb` /
:func:`compressed_to_rgb` convert the pixels at release time (they validate again). 8-bit encodings are
converted by ROS 2's ``cv_bridge`` where it is importable (a ROS install), else by numpy; 16-bit mono is
always converted here (the top byte, as an 8-bit picture).

A malformed frame raises :class:`FrameError` whose ``reason`` is a short code the node counts per task
(``dropped`` and ``drop_reasons``/``drop_counts`` in the stats, ``dropped.<reason>`` in /diagnostics).
Nothing here keeps state.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from daris_ros.runtime.frames import FrameError

__all__ = ["FrameError", "check_stamp", "compressed_to_rgb", "decode_jpeg_on", "decode_jpegs_on", "image_to_rgb",
           "is_jpeg", "validate_compressed", "validate_image"]

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
#: Every encoding accepted (the unknown-encoding error lists them all).
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
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


def validate_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Header and size checks of a ``sensor_msgs/msg/Image``: O(1), no pixel is read.

    Raises :class:`FrameError` (encoding, zero or too large size, step, data length)."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise FrameError("unknown_encoding",
                         f"encoding {enc!r} is not supported (use one of {', '.join(SUPPORTED_ENCODINGS)})")
    channels, kind, _ = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise FrameError("zero_size", f"image size {w}x{h} is empty")
    if h * w > max_pixels:
        raise FrameError("too_large", f"image size {w}x{h} exceeds the limit of {max_pixels} pixels")
    row = w * channels * (2 if kind == "u2" else 1)
    if step < row:
        raise FrameError("bad_step", f"step {step} < width*channels*bytes = {row} for {enc}")
    n = len(msg.data)
    if n != h * step:
        reason = "short_data" if n < h * step else "long_data"
        raise FrameError(reason, f"data has {n} bytes, expected height*step = {h * step}")


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a ``sensor_msgs/msg/Image`` to an HxWx3 RGB uint8 array (a copy)."""
    validate_image(msg, max_pixels)
    enc = msg.encoding
    channels, kind, order = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = 2 if kind == "u2" else 1
    row = w * channels * itemsize
    data = msg.data
    if _CV_BRIDGE is not None and itemsize == 1 and not isinstance(data, memoryview):
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
    if order == (0, 1, 2) and channels == 3:
        return px  # rgb8: a view of the message (read-only); preprocessing copies it once, to the device
    if order is None:
        return np.repeat(px, 3, axis=2)
    return np.ascontiguousarray(px[:, :, list(order)])


_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# In entropy-coded data 0xFF is followed by 0x00 (stuffing), a restart marker (D0-D7) or fill bytes (FF);
# anything else is the marker that ends the scan.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_IEND = b"IEND\xaeB`\x82"


def jpeg_end(data: bytes) -> int | None:
    """The index just after the JPEG's end-of-image marker, found by walking its structure (marker
    segments by their lengths, each scan's entropy-coded data up to the next marker), so bytes after EOI
    (padding some cameras send, even bytes that look like markers) are not taken for the image. None when
    the data ends before EOI: a truncated frame. Extraneous bytes where a marker is due are skipped, as
    libjpeg does."""
    n = len(data)
    if not data.startswith(_JPEG_SOI[:2]):
        return None
    i = 2
    while True:
        i = data.find(b"\xff", i)
        if i < 0:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes before the marker code
            i += 1
        if i >= n:
            return None
        code = data[i]
        i += 1
        if code == 0xD9:
            return i
        if code == 0x00 or code == 0x01 or 0xD0 <= code <= 0xD7:  # no segment (TEM, RSTn; 00: stray stuffing)
            continue
        if i + 2 > n:
            return None
        i += int.from_bytes(data[i:i + 2], "big")  # the length counts its own two bytes
        if code == 0xDA:  # start of scan: entropy-coded data up to the next marker
            m = _MARKER_AFTER_SCAN.search(data, i)
            if m is None:
                return None
            i = m.start()


def jpeg_payload(data: bytes) -> bytes | None:
    """``data`` up to and including its EOI marker (the bytes after it dropped), or None when truncated."""
    end = jpeg_end(data)
    return None if end is None else data[:end]


def _open_header(data: bytes, fmt: str, max_pixels: int) -> Any:
    """Pillow image opened lazily (only the header is parsed), with the size checked."""
    from PIL import Image as PILImage

    try:
        im = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:
        raise FrameError("too_large", f"{fmt or 'compressed'} image: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise FrameError("corrupt_compressed", f"cannot read the {fmt or 'compressed'} header: {exc}") from exc
    w, h = im.size
    if w == 0 or h == 0:
        im.close()
        raise FrameError("zero_size", f"image size {w}x{h} is empty")
    if w * h > max_pixels:
        im.close()
        raise FrameError("too_large", f"image size {w}x{h} exceeds the limit of {max_pixels} pixels")
    return im


def validate_compressed(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Cheap checks of a ``sensor_msgs/msg/CompressedImage`` (no pixel is decoded): format string, a
    JPEG or PNG signature, a parsable header with a size within ``max_pixels``, and the end-of-stream
    marker (JPEG EOI, which may be followed by padding of any bytes: :func:`jpeg_end`; PNG IEND), whose
    absence means a truncated frame.

    Corruption inside the entropy-coded data is only found by decoding (:func:`compressed_to_rgb`)."""
    fmt = (msg.format or "").lower()
    if fmt and "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise FrameError("unknown_format", f"compressed format {msg.format!r} is not jpeg or png")
    data = bytes(msg.data)
    if not data:
        raise FrameError("zero_size", "compressed image has no data")
    is_jpeg = data.startswith(_JPEG_SOI)
    if not is_jpeg and not data.startswith(_PNG_SIGNATURE):
        raise FrameError("corrupt_compressed", "data starts with neither a JPEG nor a PNG signature")
    _open_header(data, fmt, max_pixels).close()
    # EOI at the end (zero padding allowed) needs no walk: the common case, checked on every frame
    if is_jpeg and not data.rstrip(b"\x00").endswith(_JPEG_EOI) and jpeg_end(data) is None:
        raise FrameError("truncated_compressed", "JPEG data ends before its EOI marker (truncated)")
    if not is_jpeg and not data.endswith(_PNG_IEND):
        raise FrameError("truncated_compressed", "PNG data does not end with an IEND chunk (truncated)")


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, device: str = "cpu") -> Any:
    """Decode a ``sensor_msgs/msg/CompressedImage`` (jpeg or png) to HxWx3 RGB uint8.

    With a CUDA ``device``, JPEG is decoded there (torchvision's nvJPEG decoder) and a torch tensor on
    that device is returned, which preprocessing resizes in place; PNG, and every image on the CPU, is
    decoded by Pillow into a numpy array. The header is checked by Pillow in both cases."""
    fmt = (msg.format or "").lower()
    if fmt and "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise FrameError("unknown_format", f"compressed format {msg.format!r} is not jpeg or png")
    data = bytes(msg.data)
    if not data:
        raise FrameError("zero_size", "compressed image has no data")
    with _open_header(data, fmt, max_pixels) as im:
        if device.startswith("cuda") and im.format == "JPEG":
            return decode_jpeg_on(jpeg_payload(data) or data, device)  # (nvJPEG without the bytes after EOI)
        try:
            return np.asarray(im.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
            raise FrameError("corrupt_compressed", f"cannot decode {fmt or 'compressed'} image: {exc}") from exc


def decode_jpeg_on(data: bytes, device: str) -> Any:
    """JPEG bytes -> HxWx3 RGB uint8 torch tensor decoded on ``device`` (``cuda:N``: nvJPEG; ``cpu``:
    libjpeg-turbo), by ``torchvision.io.decode_jpeg``."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        chw = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                          device=device)
    except RuntimeError as exc:
        raise FrameError("corrupt_compressed", f"cannot decode jpeg image on {device}: {exc}") from exc
    return chw.permute(1, 2, 0)


def check_stamp(sec: int, nanosec: int, now_ns: int, future_tolerance: float, past_tolerance: float) -> None:
    """Raise :class:`FrameError` for a zero stamp, or one more than ``future_tolerance`` seconds ahead of /
    ``past_tolerance`` seconds behind ``now_ns`` (the node's clock). A tolerance <= 0 disables that check;
    ``now_ns == 0`` (sim time before the first /clock) skips both."""
    stamp_ns = int(sec) * 1_000_000_000 + int(nanosec)
    if stamp_ns == 0:
        raise FrameError("zero_stamp", "header.stamp is zero (the camera driver set no time)")
    if now_ns <= 0:
        return
    ahead = (stamp_ns - now_ns) * 1e-9
    if future_tolerance > 0 and ahead > future_tolerance:
        raise FrameError("stamp_future", f"header.stamp is {ahead:.3f} s ahead of the node's clock "
                                         f"(tolerance {future_tolerance:g} s)")
    if past_tolerance > 0 and -ahead > past_tolerance:
        raise FrameError("stamp_past", f"header.stamp is {-ahead:.3f} s behind the node's clock "
                                       f"(tolerance {past_tolerance:g} s)")


def is_jpeg(data: Any) -> bool:
    return bytes(data[:3]) == _JPEG_SOI


def decode_jpegs_on(datas: list[Any], device: str) -> list[Any]:
    """Several JPEGs -> HxWx3 RGB uint8 torch tensors on ``device``, decoded in one batched call
    (``torchvision.io.decode_jpeg`` with a list: nvJPEG's batched decoder on CUDA). A JPEG the batch cannot decode
    is decoded alone, so one corrupt frame fails only itself (its entry is a :class:`FrameError`)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    # (a writable buffer, as an intake process's pipe delivers it, is shared; a read-only one, bytes, is copied:
    # torch refuses to view memory it may not write)
    tensors = [torch.frombuffer(d if isinstance(d, memoryview) and not d.readonly else bytearray(d),
                                dtype=torch.uint8) for d in datas]
    try:
        chws = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        return [chw.permute(1, 2, 0) for chw in chws]
    except RuntimeError:
        out: list[Any] = []
        for t in tensors:
            try:
                out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device).permute(1, 2, 0))
            except RuntimeError as exc:
                out.append(FrameError("corrupt_compressed", f"cannot decode jpeg image on {device}: {exc}"))
        return out
