"""Image / CompressedImage conversion against a reference, and malformed frames named by reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from daris_ros.bags.synth import encode_raw
from daris_ros.ros.conversion import (
    SUPPORTED_ENCODINGS,
    FrameError,
    compressed_to_rgb,
    decode_jpeg_on,
    decode_jpegs_on,
    image_to_rgb,
    jpeg_end,
    jpeg_payload,
    validate_compressed,
    validate_image,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
LUMA = ((RGB.astype(np.uint32) @ np.array([299, 587, 114], np.uint32) + 500) // 1000).astype(np.uint8)


def _image(encoding: str, rgb: np.ndarray = RGB, pad: int = 0) -> Image:
    data, step = encode_raw(rgb, encoding)
    h = rgb.shape[0]
    rows = data.reshape(h, step)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    m = Image(height=h, width=rgb.shape[1], encoding=encoding, is_bigendian=0, step=step + pad)
    m.data = rows.tobytes()
    return m


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_match_reference(encoding, pad):
    out = image_to_rgb(_image(encoding, pad=pad))
    assert out.dtype == np.uint8 and out.shape == RGB.shape
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_mono_encodings_match_reference(encoding):
    out = image_to_rgb(_image(encoding))
    np.testing.assert_array_equal(out, np.repeat(LUMA[:, :, None], 3, axis=2))


def test_mono16_big_endian():
    m = Image(height=1, width=2, encoding="mono16", is_bigendian=1, step=4)
    m.data = bytes([0x12, 0x34, 0xFF, 0x00])  # 0x1234, 0xFF00 big-endian
    np.testing.assert_array_equal(image_to_rgb(m)[0, :, 0], [0x12, 0xFF])


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_matches_reference(fmt):
    buf = io.BytesIO()
    PILImage.fromarray(RGB).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=100)
    m = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    m.data = buf.getvalue()
    out = compressed_to_rgb(m)
    ref = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(out, ref)
    if fmt == "png":
        np.testing.assert_array_equal(out, RGB)  # lossless


def test_jpeg_decoded_by_torchvision_on_the_device_matches_pillow(device="cpu"):
    """The GPU decode path (gpu_decode: torchvision's decode_jpeg) run on the CPU (libjpeg-turbo) against
    Pillow: a tensor on that device, within 2 levels per pixel (IDCT and upsampling may round differently).
    On a CUDA device (nvJPEG): test/gpu/test_gpu_jpeg.py, which calls this with device="cuda"."""
    rng = np.random.default_rng(3)
    img = np.clip(RGB.astype(int) + rng.integers(-20, 20, RGB.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="JPEG", quality=90)
    ref = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(int)
    out = decode_jpeg_on(buf.getvalue(), device)
    assert isinstance(out, torch.Tensor) and out.device.type == device and out.dtype == torch.uint8
    assert tuple(out.shape) == ref.shape
    diff = np.abs(out.cpu().numpy().astype(int) - ref)
    assert diff.max() <= 2 and diff.mean() < 0.5, (diff.max(), diff.mean())
    # a release burst in one call: from bytes (copied) and from a writable buffer (an intake pipe's: shared)
    writable = memoryview(np.frombuffer(bytearray(buf.getvalue()), np.uint8))
    burst = decode_jpegs_on([buf.getvalue(), writable], device)
    assert all(torch.equal(frame.cpu(), out.cpu()) for frame in burst)
    m = CompressedImage(format="jpeg")
    m.data = buf.getvalue()
    if device == "cuda":
        assert compressed_to_rgb(m, device="cuda:0").device.type == "cuda"
    with pytest.raises(FrameError) as info:
        decode_jpeg_on(buf.getvalue()[:20] + bytes(200) + buf.getvalue()[-2:], device)
    assert info.value.reason == "corrupt_compressed"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: setattr(m, "encoding", "yuv422_weird"), "unknown_encoding"),
        (lambda m: setattr(m, "width", 0), "zero_size"),
        (lambda m: setattr(m, "step", 5), "bad_step"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "short_data"),
        (lambda m: setattr(m, "data", bytes(m.data) + b"\0"), "long_data"),
        (lambda m: (setattr(m, "height", 5000), setattr(m, "width", 5000)), "too_large"),
    ],
)
def test_malformed_image_reason(mutate, reason):
    m = _image("rgb8")
    mutate(m)
    with pytest.raises(FrameError) as err:
        image_to_rgb(m)
    assert err.value.reason == reason


def test_corrupt_jpeg_reason():
    m = CompressedImage(format="jpeg")
    m.data = b"\xff\xd8\xff\xe0" + b"garbage" * 10
    with pytest.raises(FrameError) as err:
        compressed_to_rgb(m)
    assert err.value.reason == "corrupt_compressed"


def test_unknown_encoding_error_lists_every_accepted_encoding():
    m = _image("rgb8")
    m.encoding = "yuv422"
    with pytest.raises(FrameError) as err:
        image_to_rgb(m)
    listed = str(err.value).split("use one of ")[1].rstrip(")").split(", ")
    assert set(listed) == set(SUPPORTED_ENCODINGS)
    assert {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1"} <= set(listed)
    for enc in listed:  # every encoding the message offers is accepted
        bytes_per_px = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono16": 2, "16UC1": 2}.get(enc, 1)
        ok = Image(height=2, width=3, encoding=enc, step=3 * bytes_per_px)
        ok.data = bytes(2 * 3 * bytes_per_px)
        validate_image(ok)
        assert image_to_rgb(ok).shape == (2, 3, 3)


def _jpeg(img: np.ndarray = RGB, **save) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def _textured(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _with_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with an APP1 (Exif) segment holding a small JPEG thumbnail, whose own EOI comes early."""
    thumb = _jpeg(RGB[:4, :4])
    payload = b"Exif\x00\x00" + thumb
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


PADDINGS = {
    "zeros": bytes(64),
    "ff_fill": b"\xff" * 64,
    "random": np.random.default_rng(5).integers(0, 256, size=300, dtype=np.uint8).tobytes(),
    # bytes that look like markers: a second EOI, a new SOI, a whole second picture (a reused buffer)
    "fake_markers": b"\x00\xff\xd9\x12\xff\xd8\xff\xe0\x00\x10" + bytes(20) + b"\xff\xd9",
    "old_frame_tail": _jpeg(_textured()[::-1])[500:],
}


@pytest.mark.parametrize("padding", sorted(PADDINGS))
@pytest.mark.parametrize("kind", ["baseline", "progressive", "thumbnail"])
def test_jpeg_with_bytes_after_eoi_is_accepted(padding, kind):
    """Cameras that pad their JPEG frames (a fixed buffer size, 0xFF fill, the rest of an older frame):
    the frame decodes to the picture without the padding; earlier every such frame was dropped as
    truncated_compressed."""
    img = _textured()
    clean = _jpeg(img, progressive=kind == "progressive")
    if kind == "thumbnail":
        clean = _with_thumbnail(clean)
    data = clean + PADDINGS[padding]
    assert jpeg_end(clean) == len(clean) and jpeg_end(data) == len(clean)
    assert jpeg_payload(data) == clean
    m = CompressedImage(format="jpeg")
    m.data = data
    validate_compressed(m)
    ref = np.asarray(PILImage.open(io.BytesIO(clean)).convert("RGB"))
    np.testing.assert_array_equal(compressed_to_rgb(m), ref)
    # the GPU path's decoder (torchvision, here on the CPU) gets the payload without the padding
    np.testing.assert_array_equal(decode_jpeg_on(jpeg_payload(data), "cpu").numpy(),
                                  decode_jpeg_on(clean, "cpu").numpy())


@pytest.mark.parametrize("kind", ["baseline", "progressive", "thumbnail"])
def test_truncated_jpeg_is_still_truncated(kind):
    """Cut anywhere from the first scan to just before EOI: no EOI of the main picture, so truncated, also
    when an Exif thumbnail's EOI or a complete earlier scan (progressive) comes before the cut."""
    clean = _jpeg(_textured(), progressive=kind == "progressive")
    if kind == "thumbnail":
        clean = _with_thumbnail(clean)
    sos = clean.index(b"\xff\xda", clean.index(b"\xff\xd9") if kind == "thumbnail" else 0)  # the main picture's
    scan = sos + 2 + int.from_bytes(clean[sos + 2:sos + 4], "big")  # the first entropy-coded byte
    for cut in np.linspace(scan + 1, len(clean) - 1, 25).astype(int):
        data = clean[:cut]
        assert jpeg_end(data) is None, cut
        m = CompressedImage(format="jpeg")
        m.data = data
        with pytest.raises(FrameError) as err:
            validate_compressed(m)
        assert err.value.reason == "truncated_compressed", cut
