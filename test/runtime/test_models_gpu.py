"""Staged models on CUDA equal the same models on the CPU (skipped without a CUDA device)."""

from __future__ import annotations

import pytest
import torch

from daris_ros.runtime.models import build_staged_model, stage_tensors

torch.set_num_threads(1)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize(("name", "side"), [("resnet18", 224), ("resnet50", 224), ("unet", 224),
                                            ("inception_v3", 299)])
def test_staged_on_cuda_equals_cpu(name: str, side: int) -> None:
    torch.manual_seed(0)
    model = build_staged_model(name, input_size=(side, side))
    x = torch.randn(2, 3, side, side)
    with torch.inference_mode():
        cpu = model(x)
        model.to("cuda")
        y = x.to("cuda")
        for i in range(model.num_stages):
            y = model.run_stage(i, y)
            assert all(t.device.type == "cuda" for t in stage_tensors(y))
        unstaged = model.unstaged_model(x.to("cuda"))
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, unstaged, rtol=0, atol=0)  # same device, same kernels
    # cuDNN/TF32 kernels differ from the CPU ones: compare with a tolerance relative to the output scale.
    scale = cpu.abs().max().item()
    torch.testing.assert_close(y.cpu(), cpu, rtol=1e-2, atol=1e-2 * max(scale, 1.0))
