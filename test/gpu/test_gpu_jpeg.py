"""JPEG decoded on the GPU (gpu_decode: nvJPEG through torchvision) against Pillow: the same check as the
CPU test in test/ros/test_conversion.py, on a CUDA device. Needs no ROS: the message is a plain object."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from daris_ros.ros.conversion import FrameError, compressed_to_rgb, decode_jpeg_on

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _jpeg(img: np.ndarray, subsampling: int) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="JPEG", quality=90, subsampling=subsampling)
    return buf.getvalue()


def test_nvjpeg_matches_pillow_and_stays_on_the_device() -> None:
    """JPEG leaves decoders some freedom (IDCT precision, chroma upsampling), so "the same tensor" is up to
    a few levels. 4:4:4 (no chroma subsampling): only the IDCT differs, so the bound is tight. 4:2:0 (what most
    cameras send): nvJPEG upsamples chroma differently from libjpeg's "fancy" upsampling; on this noisy test
    image that moved single pixels at colour edges by up to 29 levels (mean 1.26, H200, 2026-11-21), so only
    the mean is bounded there."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img = np.clip(np.cumsum(img, axis=1) // 8, 0, 255).astype(np.uint8)  # smooth-ish content
    for subsampling, max_bound, mean_bound in ((0, 3, 0.5), (2, 255, 2.0)):
        data = _jpeg(img, subsampling)
        ref = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")).astype(int)
        out = decode_jpeg_on(data, "cuda")
        assert out.device.type == "cuda" and out.dtype == torch.uint8 and tuple(out.shape) == ref.shape
        diff = np.abs(out.cpu().numpy().astype(int) - ref)
        print(f"\nnvJPEG vs Pillow, subsampling {subsampling}: max {diff.max()} levels, mean {diff.mean():.3f}")
        assert diff.max() <= max_bound and diff.mean() < mean_bound
    msg = SimpleNamespace(format="jpeg", data=data)
    frame = compressed_to_rgb(msg, device="cuda:0")
    assert frame.device.type == "cuda"
    png = io.BytesIO()
    PILImage.fromarray(img).save(png, format="PNG")
    assert isinstance(compressed_to_rgb(SimpleNamespace(format="png", data=png.getvalue()), device="cuda:0"),
                      np.ndarray)  # PNG: Pillow on the host
    with pytest.raises(FrameError) as info:
        decode_jpeg_on(data[:20] + bytes(200) + data[-2:], "cuda")
    assert info.value.reason == "corrupt_compressed"
