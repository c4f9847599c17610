"""Synthetic camera streams: moving test pictures, sensor_msgs encodings and camera timing.

Everything here is deterministic given the configuration and its seed: the same ``SynthConfig``
always yields the same messages, byte for byte.

Picture (``FrameRenderer``): a colour gradient that scrolls with the frame index, a square that
bounces around the picture, and a *frame counter bar* across the top rows that encodes the frame index
as ``COUNTER_BITS`` black/white cells (most significant bit first), so a consumer can tell which
frame it got (:func:`decode_counter`) even after JPEG compression. Consecutive frames always differ.

Timing (``camera_schedule``): frame ``k`` of a camera is captured at ``start + phase + k / rate``
plus a uniform jitter in ``[-jitter, +jitter]`` (clamped below half a period so capture order is
kept); each frame is then dropped with probability ``drop_prob``. Jitter and drops use separate
seeded generators per camera, so changing one does not change the other. Dropped frames keep their
index: a receiver sees a gap in the counter. ``header.stamp`` is the capture time, and the bag's log
time equals it (a recorder with zero transport delay).
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage

if TYPE_CHECKING:  # (rosbags is needed for bags only: the frame renderer and encoder run without it)
    from rosbags.typesys.store import Typestore


IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"

#: Raw encodings: name -> (channels, bytes per channel). All little-endian (``is_bigendian = 0``).
RAW_ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
#: Compressed formats (sensor_msgs/msg/CompressedImage).
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
ENCODINGS: tuple[str, ...] = (*RAW_ENCODINGS, *COMPRESSED_FORMATS)

#: Bits of the frame counter bar (the index wraps modulo 2**COUNTER_BITS).
COUNTER_BITS = 16
#: Smallest picture the renderer accepts (the counter bar needs one column per bit).
MIN_SIZE = 16

#: Default capture time of the first frame: 2023-11-14T22:13:20Z (fixed, for reproducible bags).
DEFAULT_START_NS = 1_700_000_000 * 10**9

_LUMA = np.array([299, 587, 114], dtype=np.uint32)


def _check_size(width: int, height: int) -> None:
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"picture must be at least {MIN_SIZE}x{MIN_SIZE}, got {width}x{height}")


def counter_layout(width: int, height: int) -> tuple[int, int]:
    """(bar height in rows, cell width in columns) of the frame counter bar."""
    return max(2, height // 12), width // COUNTER_BITS


class FrameRenderer:
    """Renders the moving test picture of one camera as RGB ``(height, width, 3)`` uint8 arrays."""

    def __init__(self, width: int, height: int, *, camera: int = 0, seed: int = 0) -> None:
        _check_size(width, height)
        self.width = width
        self.height = height
        self.camera = camera
        self.seed = seed
        rng = np.random.default_rng([seed, camera, 0])
        scale = max(width, height) / 320.0
        self._vx = float(rng.uniform(2.0, 5.0)) * scale
        self._vy = float(rng.uniform(1.5, 4.0)) * scale
        self._x0 = float(rng.uniform(0.0, 1000.0))
        self._y0 = float(rng.uniform(0.0, 1000.0))
        self._shift = int(rng.integers(0, 256))
        self._colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        self._colour[int(rng.integers(0, 3))] = 255  # keep the square bright
        self._bar_h, self._cell_w = counter_layout(width, height)
        self._side = max(4, min(width, height) // 5)
        x = np.arange(width, dtype=np.int64)
        y = np.arange(height, dtype=np.int64)
        self._gx = x * 256 // width
        self._gy = y * 256 // height
        self._diag = np.add.outer(y, x) * 128 // (width + height)

    def rgb(self, index: int) -> np.ndarray:
        """The picture of frame ``index`` (contiguous uint8, shape (height, width, 3))."""
        w, h, k = self.width, self.height, int(index)
        img = np.empty((h, w, 3), dtype=np.uint8)
        img[..., 0] = ((self._gx + 4 * k + self._shift) % 256).astype(np.uint8)[None, :]
        img[..., 1] = ((self._gy + 2 * k + 3 * self._shift) % 256).astype(np.uint8)[:, None]
        img[..., 2] = ((self._diag + 6 * k + 5 * self._shift) % 256).astype(np.uint8)
        # bouncing square, below the counter bar
        s = self._side
        x = _bounce(self._x0 + self._vx * k, w - s)
        y = self._bar_h + _bounce(self._y0 + self._vy * k, h - self._bar_h - s)
        img[y : y + s, x : x + s] = self._colour
        # frame counter bar
        bar = img[: self._bar_h]
        bar[:] = 128
        value = k % (1 << COUNTER_BITS)
        cw = self._cell_w
        for bit in range(COUNTER_BITS):
            on = (value >> (COUNTER_BITS - 1 - bit)) & 1
            bar[:, bit * cw : (bit + 1) * cw] = 255 if on else 0
        return img


def _bounce(pos: float, span: int) -> int:
    """Triangle wave: position ``pos`` reflected into ``[0, span]``."""
    if span <= 0:
        return 0
    period = 2 * span
    p = int(pos) % period
    return p if p <= span else period - p


def decode_counter(picture: np.ndarray) -> int:
    """Read the frame counter bar of a picture (RGB, BGR, RGBA, BGRA or mono; 8 or 16 bit)."""
    arr = np.asarray(picture)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2)
    if arr.dtype == np.uint16:
        arr = arr / 257.0
    h, w = arr.shape[:2]
    bar_h, cw = counter_layout(w, h)
    row = arr[bar_h // 2]
    value = 0
    for bit in range(COUNTER_BITS):
        centre = float(row[bit * cw + cw // 2])
        value = (value << 1) | (1 if centre >= 128 else 0)
    return value


def encode_raw(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """Convert an RGB picture to a raw encoding: (flat uint8 data, step in bytes per row)."""
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"unknown raw encoding {encoding!r}; expected one of {sorted(RAW_ENCODINGS)}")
    h, w, _ = rgb.shape
    channels, depth = RAW_ENCODINGS[encoding]
    if encoding == "rgb8":
        out = rgb
    elif encoding == "bgr8":
        out = rgb[..., ::-1]
    elif encoding in ("rgba8", "bgra8"):
        out = np.empty((h, w, 4), dtype=np.uint8)
        out[..., :3] = rgb if encoding == "rgba8" else rgb[..., ::-1]
        out[..., 3] = 255
    else:
        luma = ((rgb.astype(np.uint32) @ _LUMA + 500) // 1000).astype(np.uint8)
        out = luma if encoding == "mono8" else (luma.astype("<u2") * 257)
    data = np.ascontiguousarray(out).view(np.uint8).reshape(-1)
    return data, w * channels * depth


def decode_raw(data: bytes | np.ndarray, width: int, height: int, encoding: str, step: int) -> np.ndarray:
    """Inverse of :func:`encode_raw`: an (height, width, channels) array (uint16 for mono16)."""
    channels, depth = RAW_ENCODINGS[encoding]
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    rows = buf.reshape(height, step)[:, : width * channels * depth]
    if depth == 2:
        arr = rows.copy().view("<u2").reshape(height, width, channels)
    else:
        arr = rows.reshape(height, width, channels)
    return arr


def encode_compressed(rgb: np.ndarray, fmt: str, *, quality: int = 90) -> bytes:
    """JPEG or PNG bytes of an RGB picture (Pillow)."""
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"unknown compressed format {fmt!r}; expected one of {COMPRESSED_FORMATS}")
    buf = io.BytesIO()
    pil = PILImage.fromarray(rgb, mode="RGB")
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def compressed_format_string(fmt: str, source_encoding: str = "rgb8") -> str:
    """``CompressedImage.format`` as image_transport's compressed plugin writes it.

    E.g. ``"rgb8; jpeg compressed bgr8"``: the source encoding, the codec, and the encoding OpenCV
    decodes to. The file itself is an ordinary JPEG/PNG.
    """
    return f"{source_encoding}; {fmt} compressed bgr8"


@dataclass(frozen=True)
class FrameTime:
    """One captured (not dropped) frame: its per-camera index and capture time."""

    index: int
    stamp_ns: int


def camera_schedule(
    rate: float,
    duration: float,
    *,
    start_ns: int = DEFAULT_START_NS,
    phase_ns: int = 0,
    jitter_ms: float = 0.0,
    drop_prob: float = 0.0,
    seed: int = 0,
    camera: int = 0,
) -> list[FrameTime]:
    """Capture times of one camera over ``duration`` seconds (see the module docstring)."""
    if rate <= 0 or duration < 0:
        raise ValueError(f"need rate > 0 and duration >= 0, got rate={rate} duration={duration}")
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
    if jitter_ms < 0:
        raise ValueError(f"jitter_ms must be >= 0, got {jitter_ms}")
    period_ns = 1e9 / rate
    dur_ns = duration * 1e9
    n = max(0, math.ceil((dur_ns - phase_ns) / period_ns - 1e-9))
    nominal = [int(round(phase_ns + k * period_ns)) for k in range(n)]
    jitter_ns = min(jitter_ms * 1e6, 0.49 * period_ns)
    if jitter_ns > 0:
        offsets = np.random.default_rng([seed, camera, 1]).uniform(-jitter_ns, jitter_ns, n)
    else:
        offsets = np.zeros(n)
    keep = np.random.default_rng([seed, camera, 2]).random(n) >= drop_prob
    out: list[FrameTime] = []
    for k in range(n):
        if keep[k]:
            out.append(FrameTime(k, start_ns + max(0, nominal[k] + int(round(offsets[k])))))
    return out


def camera_topic(prefix: str, name: str, compressed: bool) -> str:
    """``<prefix>/<name>/image_raw`` (``.../image_raw/compressed`` for compressed images)."""
    base = f"{prefix.rstrip('/')}/{name}/image_raw"
    if not base.startswith("/"):
        base = "/" + base
    return base + "/compressed" if compressed else base


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise (defaults: the ``daris-make-bag`` CLI defaults)."""

    cameras: int = 4
    width: int = 640
    height: int = 480
    encoding: str = "rgb8"
    rate: float = 30.0
    duration: float = 10.0
    jitter_ms: float = 0.0
    drop_prob: float = 0.0
    seed: int = 0
    prefix: str = "/cameras"
    start_ns: int = DEFAULT_START_NS
    #: spread the cameras' first frames over one period (unsynchronised cameras)
    stagger: bool = True
    jpeg_quality: int = 90
    #: camera names; default cam0, cam1, ...
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.cameras < 1:
            raise ValueError(f"need at least one camera, got {self.cameras}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {ENCODINGS}")
        _check_size(self.width, self.height)
        if self.names is not None and len(self.names) != self.cameras:
            raise ValueError(f"{len(self.names)} names given for {self.cameras} cameras")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def compressed(self) -> bool:
        return self.encoding in COMPRESSED_FORMATS

    @property
    def msgtype(self) -> str:
        return COMPRESSED_TYPE if self.compressed else IMAGE_TYPE

    def camera_names(self) -> tuple[str, ...]:
        return self.names if self.names is not None else tuple(f"cam{i}" for i in range(self.cameras))

    def topic(self, camera: int) -> str:
        return camera_topic(self.prefix, self.camera_names()[camera], self.compressed)

    def frame_id(self, camera: int) -> str:
        return f"{self.camera_names()[camera]}_optical_frame"

    def topics(self) -> tuple[str, ...]:
        return tuple(self.topic(i) for i in range(self.cameras))

    def schedule(self, camera: int) -> list[FrameTime]:
        phase = int(round(camera * 1e9 / self.rate / self.cameras)) if self.stagger else 0
        return camera_schedule(
            self.rate,
            self.duration,
            start_ns=self.start_ns,
            phase_ns=phase,
            jitter_ms=self.jitter_ms,
            drop_prob=self.drop_prob,
            seed=self.seed,
            camera=camera,
        )

    def expected_counts(self) -> dict[str, int]:
        """Messages per topic after drops (without rendering anything)."""
        return {self.topic(i): len(self.schedule(i)) for i in range(self.cameras)}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["names"] = list(self.camera_names())
        return data


@dataclass(frozen=True)
class SynthMessage:
    """One serialised message, ready for a bag writer."""

    topic: str
    msgtype: str
    timestamp_ns: int  # bag log time (= header.stamp)
    camera: int
    index: int  # the frame index (also in the counter bar)
    data: bytes  # CDR


def make_image_message(
    rgb: np.ndarray,
    encoding: str,
    stamp_ns: int,
    frame_id: str,
    *,
    store: Typestore | None = None,
    jpeg_quality: int = 90,
) -> tuple[str, Any]:
    """A rosbags Image / CompressedImage object for an RGB picture: (msgtype, message)."""
    if store is None:
        from .typestore import get_typestore

        store = get_typestore()
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id,
    )
    if encoding in COMPRESSED_FORMATS:
        payload = encode_compressed(rgb, encoding, quality=jpeg_quality)
        msg = types[COMPRESSED_TYPE](
            header=header,
            format=compressed_format_string(encoding),
            data=np.frombuffer(payload, dtype=np.uint8),
        )
        return COMPRESSED_TYPE, msg
    data, step = encode_raw(rgb, encoding)
    h, w, _ = rgb.shape
    msg = types[IMAGE_TYPE](
        header=header,
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )
    return IMAGE_TYPE, msg


def _camera_messages(config: SynthConfig, camera: int, store: Typestore) -> Iterator[SynthMessage]:
    renderer = FrameRenderer(config.width, config.height, camera=camera, seed=config.seed)
    topic = config.topic(camera)
    frame_id = config.frame_id(camera)
    for ft in config.schedule(camera):
        msgtype, msg = make_image_message(
            renderer.rgb(ft.index),
            config.encoding,
            ft.stamp_ns,
            frame_id,
            store=store,
            jpeg_quality=config.jpeg_quality,
        )
        data = bytes(store.serialize_cdr(msg, msgtype))
        yield SynthMessage(topic, msgtype, ft.stamp_ns, camera, ft.index, data)


def generate(config: SynthConfig, store: Typestore | None = None) -> Iterator[SynthMessage]:
    """All messages of all cameras, in log-time order (ties: by camera). Lazy: one frame at a time."""
    if store is None:
        from .typestore import get_typestore

        store = get_typestore()
    streams = [_camera_messages(config, i, store) for i in range(config.cameras)]
    yield from heapq.merge(*streams, key=lambda m: (m.timestamp_ns, m.camera))
