"""preprocess(): against a hand-computed reference, shapes, input checks, CUDA == CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daris_ros.runtime.preprocess import preprocess

torch.set_num_threads(1)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def test_normalisation_without_resize_matches_numpy() -> None:
    img = _image(4, 5)
    out = preprocess(img, (4, 5))
    expected = ((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
    assert out.dtype == torch.float32 and out.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_resize_shape_and_bilinear() -> None:
    img = _image(10, 16, seed=1)
    out = preprocess(img, (6, 7))
    assert out.shape == (1, 3, 6, 7) and out.is_contiguous()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(6, 7), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.from_numpy(MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x - mean) / std)


def test_upscale_of_constant_image_stays_constant() -> None:
    img = np.full((2, 2, 3), 128, dtype=np.uint8)
    out = preprocess(img, (9, 11))
    expected = (128 / 255.0 - MEAN) / STD
    reference = np.broadcast_to(expected[:, None, None], (3, 9, 11))
    np.testing.assert_allclose(out[0].numpy(), reference, rtol=1e-6, atol=1e-6)


def test_grey_image_is_repeated_and_torch_input_accepted() -> None:
    grey = _image(3, 3, c=1, seed=2)
    out = preprocess(torch.from_numpy(grey), (3, 3), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    expected = (grey[..., 0].astype(np.float32) / 255.0 - 0.5) / 0.5
    for c in range(3):
        np.testing.assert_allclose(out[0, c].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert preprocess(grey[..., 0], (3, 3)).shape == (1, 3, 3, 3)  # plain HxW too


def test_read_only_numpy_and_channels_last() -> None:
    img = _image(8, 8, seed=3)
    frozen = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(8, 8, 3)
    assert not frozen.flags.writeable
    out = preprocess(frozen, (4, 4), channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, preprocess(img, (4, 4)))


def test_input_checks() -> None:
    with pytest.raises(TypeError):
        preprocess(np.zeros((4, 4, 3), dtype=np.float32), (4, 4))
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 4, 4), dtype=np.uint8), (4, 4))
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 4, 3), dtype=np.uint8), (0, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu() -> None:
    img = _image(480, 640, seed=4)
    cpu = preprocess(img, (224, 224))
    gpu = preprocess(img, (224, 224), device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
