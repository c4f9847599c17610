"""Image / CompressedImage conversion against a reference, and malformed frames named by reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from daris_ros.bags.synth import encode_raw
from daris_ros.ros.conversion import FrameError, compressed_to_rgb, decode_jpeg_on, image_to_rgb

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
