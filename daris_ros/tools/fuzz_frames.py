"""Seeded malformed camera frames for ``daris-fuzz``: every way a driver or a bad bag gets them wrong.

Each :class:`FuzzFrame` is a ``sensor_msgs/Image`` or ``CompressedImage`` (or raw CDR bytes) with the
drop reason the scheduler node must count for it (``None`` for a good frame). Generation is
deterministic for a seed; stamps are offsets applied at publish time (the node checks them against its
clock).

Kinds whose reason is found only by decoding the pixels (``release_only``: a JPEG whose entropy-coded
data is corrupt but whose structure is intact) are counted by the node when a release decodes them, so
the fuzzer leaves such a frame alone on its topic for a few periods.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

IMAGE = "image"
COMPRESSED = "compressed"
GOOD_FRAME_ID = "camera_optical_frame"


@dataclass(slots=True)
class FuzzFrame:
    kind: str
    input_type: str  # IMAGE | COMPRESSED
    reason: str | None  # expected drop reason; None: the node keeps (and later releases) it
    msg: Image | CompressedImage
    stamp_offset: float | None = 0.0  # seconds from "now" at publish time; None: keep msg's stamp (zero)
    raw: bytes | None = None  # publish these bytes instead of msg (undecodable CDR)
    release_only: bool = False  # the reason is found at release (pixel decoding), not on receipt

    @property
    def good_at_receipt(self) -> bool:
        return self.reason is None or self.release_only


@dataclass(frozen=True, slots=True)
class FuzzLimits:
    """What the node under test is configured with (its parameters of the same names)."""

    max_pixels: int = 100_000
    stamp_future_tolerance: float = 1.0
    stamp_past_tolerance: float = 5.0


class FrameFactory:
    """Good and malformed frames from one seeded generator."""

    def __init__(self, seed: int, limits: FuzzLimits, width: int = 64, height: int = 48) -> None:
        self.rng = np.random.default_rng(seed)
        self.limits = limits
        self.w, self.h = width, height
        self._jpeg = self._encode("JPEG")
        self._png = self._encode("PNG")
        self._sos = self._jpeg.index(b"\xff\xda")  # start of scan: cut after it for a truncated JPEG
        self._sof = self._find_sof(self._jpeg)

    # -- good frames ---------------------------------------------------------------------------------
    def _pixels(self) -> np.ndarray:
        return self.rng.integers(0, 256, size=(self.h, self.w, 3), dtype=np.uint8)

    def _encode(self, fmt: str) -> bytes:
        buf = io.BytesIO()
        PILImage.fromarray(self._pixels()).save(buf, format=fmt, quality=85)
        return buf.getvalue()

    def image(self, encoding: str = "rgb8") -> Image:
        channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}[encoding]
        m = Image(height=self.h, width=self.w, encoding=encoding, step=self.w * channels)
        m.data = self.rng.integers(0, 256, size=self.h * self.w * channels, dtype=np.uint8).tobytes()
        m.header.frame_id = GOOD_FRAME_ID
        return m

    def compressed(self, png: bool = False) -> CompressedImage:
        m = CompressedImage(format="rgb8; png compressed bgr8" if png else "rgb8; jpeg compressed bgr8")
        m.data = self._png if png else self._jpeg
        m.header.frame_id = GOOD_FRAME_ID
        return m

    def good(self, input_type: str) -> FuzzFrame:
        if input_type == IMAGE:
            enc = ("rgb8", "bgr8", "mono8")[int(self.rng.integers(3))]
            return FuzzFrame("good", IMAGE, None, self.image(enc))
        return FuzzFrame("good", COMPRESSED, None, self.compressed(png=bool(self.rng.random() < 0.25)))

    # -- malformed: sensor_msgs/Image ------------------------------------------------------------------
    def _img(self, kind: str, reason: str | None, mutate: Callable[[Image], None]) -> FuzzFrame:
        m = self.image("rgb8")
        mutate(m)
        return FuzzFrame(kind, IMAGE, reason, m)

    def image_kinds(self) -> dict[str, Callable[[], FuzzFrame]]:
        r = self.rng
        lim = self.limits
        side = int(np.ceil(np.sqrt(lim.max_pixels + 1)))

        def step_small(m: Image) -> None:
            m.step = m.width * 3 - int(r.integers(1, m.width * 3))
            m.data = bytes(m.height * m.step)

        def over_limit(m: Image) -> None:  # consistent, just larger than max_pixels
            m.encoding, m.height, m.width, m.step = "mono8", side, side, side
            m.data = bytes(side * side)

        def huge(m: Image) -> None:  # absurd header, small data
            m.height, m.width = int(r.integers(60_000, 2**31)), int(r.integers(60_000, 2**31))

        def zero_height(m: Image) -> None:
            m.height, m.data = 0, b""

        def zero_width(m: Image) -> None:
            m.width, m.step, m.data = 0, 0, b""

        return {
            "image_step_too_small": lambda: self._img("image_step_too_small", "bad_step", step_small),
            "image_data_short": lambda: self._img(
                "image_data_short", "short_data",
                lambda m: setattr(m, "data", bytes(m.data)[: -int(r.integers(1, len(m.data)))])),
            "image_data_long": lambda: self._img(
                "image_data_long", "long_data",
                lambda m: setattr(m, "data", bytes(m.data) + bytes(int(r.integers(1, 5000))))),
            "image_zero_height": lambda: self._img("image_zero_height", "zero_size", zero_height),
            "image_zero_width": lambda: self._img("image_zero_width", "zero_size", zero_width),
            "image_huge_header": lambda: self._img("image_huge_header", "too_large", huge),
            "image_over_max_pixels": lambda: self._img("image_over_max_pixels", "too_large", over_limit),
            "image_step_overflow": lambda: self._img(
                "image_step_overflow", "short_data", lambda m: setattr(m, "step", 2**32 - 1)),
            "image_unknown_encoding": lambda: self._img(
                "image_unknown_encoding", "unknown_encoding",
                lambda m: setattr(m, "encoding", ("yuv422", "bayer_rggb8", "32FC1", "", "RGB8", "nv12",
                                                  "8UC3")[int(r.integers(7))])),
        }

    # -- malformed: sensor_msgs/CompressedImage --------------------------------------------------------
    def _cmp(self, kind: str, reason: str, data: bytes, fmt: str = "rgb8; jpeg compressed bgr8",
             release_only: bool = False) -> FuzzFrame:
        m = CompressedImage(format=fmt)
        m.data = data
        m.header.frame_id = GOOD_FRAME_ID
        return FuzzFrame(kind, COMPRESSED, reason, m, release_only=release_only)

    @staticmethod
    def _find_sof(jpeg: bytes) -> int:
        i = 2
        while i < len(jpeg) - 4:
            marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return i
            i += 2 + length
        raise ValueError("no SOF marker")

    def _jpeg_dims(self, h: int, w: int) -> bytes:
        d = bytearray(self._jpeg)
        d[self._sof + 5:self._sof + 7] = h.to_bytes(2, "big")
        d[self._sof + 7:self._sof + 9] = w.to_bytes(2, "big")
        return bytes(d)

    def _corrupt_body(self) -> bytes:
        """Bytes flipped in the entropy-coded data, EOI intact, and Pillow fails to decode it."""
        j = self._jpeg
        while True:
            d = bytearray(j)
            for p in self.rng.integers(self._sos + 20, len(j) - 2, size=12):
                d[int(p)] ^= int(self.rng.integers(1, 256))
            data = bytes(d)
            try:
                with PILImage.open(io.BytesIO(data)) as im:
                    im.convert("RGB")
            except Exception:  # noqa: BLE001 - the decoder rejects it: what we want
                return data

    def compressed_kinds(self) -> dict[str, Callable[[], FuzzFrame]]:
        r = self.rng
        side = int(np.ceil(np.sqrt(self.limits.max_pixels + 1)))
        return {
            "compressed_unknown_format": lambda: self._cmp(
                "compressed_unknown_format", "unknown_format", self._jpeg,
                fmt=("tiff", "h264", "bmp", "rgb8; theora")[int(r.integers(4))]),
            "compressed_empty": lambda: self._cmp("compressed_empty", "zero_size", b""),
            "compressed_random_bytes": lambda: self._cmp(
                "compressed_random_bytes", "corrupt_compressed",
                b"\x00" + r.integers(0, 256, size=int(r.integers(1, 4000)), dtype=np.uint8).tobytes()),
            "compressed_big_garbage": lambda: self._cmp(
                "compressed_big_garbage", "corrupt_compressed",
                b"\x00" + r.integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes()),
            "jpeg_soi_then_garbage": lambda: self._cmp(
                "jpeg_soi_then_garbage", "corrupt_compressed",
                b"\xff\xd8\xff\xe0" + r.integers(0, 256, size=int(r.integers(8, 500)), dtype=np.uint8).tobytes()),
            "png_signature_then_garbage": lambda: self._cmp(
                "png_signature_then_garbage", "corrupt_compressed",
                b"\x89PNG\r\n\x1a\n" + r.integers(0, 256, size=int(r.integers(8, 500)), dtype=np.uint8).tobytes(),
                fmt="png"),
            "jpeg_truncated": lambda: self._cmp(
                "jpeg_truncated", "truncated_compressed",
                self._jpeg[: int(r.integers(self._sos + 20, len(self._jpeg) - 2))]),
            "png_truncated": lambda: self._cmp(
                "png_truncated", "truncated_compressed", self._png[: int(r.integers(40, len(self._png) - 12))],
                fmt="png"),
            "jpeg_zero_dims": lambda: self._cmp("jpeg_zero_dims", "corrupt_compressed", self._jpeg_dims(0, 0)),
            "jpeg_huge_dims": lambda: self._cmp(
                "jpeg_huge_dims", "too_large", self._jpeg_dims(int(r.integers(20_000, 65_536)), 65_535)),
            "jpeg_over_max_pixels": lambda: self._cmp(
                "jpeg_over_max_pixels", "too_large", self._jpeg_dims(min(side, 65_535), min(side, 65_535))),
            "jpeg_corrupt_body": lambda: self._cmp(
                "jpeg_corrupt_body", "corrupt_compressed", self._corrupt_body(), release_only=True),
        }

    # -- malformed: both types -------------------------------------------------------------------------
    def common_kinds(self, input_type: str) -> dict[str, Callable[[], FuzzFrame]]:
        r = self.rng
        lim = self.limits
        p = "image" if input_type == IMAGE else "compressed"

        def stamped(kind: str, reason: str | None, offset: float | None) -> FuzzFrame:
            f = self.good(input_type)
            f.kind, f.reason, f.stamp_offset = kind, reason, offset
            return f

        def frame_id() -> FuzzFrame:
            f = self.good(input_type)
            f.kind = f"{p}_frame_id_change"
            f.msg.header.frame_id = f"other_frame_{int(r.integers(1000))}"
            return f

        kinds = {
            f"{p}_stamp_future": lambda: stamped(f"{p}_stamp_future", "stamp_future",
                                                 lim.stamp_future_tolerance + float(r.uniform(1.0, 1e6))),
            f"{p}_stamp_zero": lambda: stamped(f"{p}_stamp_zero", "zero_stamp", None),
            f"{p}_undecodable_cdr": lambda: self._undecodable(input_type),
            f"{p}_frame_id_change": frame_id,
        }
        if lim.stamp_past_tolerance > 0:
            kinds[f"{p}_stamp_past"] = lambda: stamped(f"{p}_stamp_past", "stamp_past",
                                                       -(lim.stamp_past_tolerance + float(r.uniform(1.0, 1e5))))
        return kinds

    def _undecodable(self, input_type: str) -> FuzzFrame:
        """Serialized CDR cut short or overwritten so that rclpy cannot deserialize it, also after the zero
        padding the middleware may add on the way (measured: a payload cut 1-3 bytes short of a complete
        message arrived complete)."""
        f = self.good(input_type)
        cls = Image if input_type == IMAGE else CompressedImage
        good = serialize_message(f.msg)
        while True:
            if self.rng.random() < 0.5:
                raw = good[: int(self.rng.integers(1, len(good)))]
            else:
                raw = self.rng.integers(0, 256, size=int(self.rng.integers(1, 200)), dtype=np.uint8).tobytes()
            if not any(_decodes(raw + bytes(pad), cls) for pad in range(8)):
                f.kind = f"{'image' if input_type == IMAGE else 'compressed'}_undecodable_cdr"
                f.reason, f.raw = "undecodable", raw
                return f

    def all_kinds(self) -> dict[str, Callable[[], FuzzFrame]]:
        """Every malformed kind (and frame_id changes), by name."""
        return {**self.image_kinds(), **self.common_kinds(IMAGE), **self.compressed_kinds(),
                **self.common_kinds(COMPRESSED)}


def _decodes(raw: bytes, cls: type) -> bool:
    with _quiet_stderr():  # the middleware prints every CDR error on stderr
        try:
            deserialize_message(raw, cls)
        except Exception:  # noqa: BLE001 - rclpy raises RMWError (and others) for bad CDR
            return False
    return True


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
