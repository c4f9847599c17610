"""daris_ros.runtime.memory: model bytes, out-of-memory recognition, traceback summaries (no GPU needed)."""

from __future__ import annotations

import torch

from daris_ros.runtime.backends import BackendError
from daris_ros.runtime.memory import is_cuda_oom, model_bytes, traceback_summary
from daris_ros.runtime.models import build_staged_model


def test_model_bytes_counts_parameters_and_buffers_once() -> None:
    lin = torch.nn.Linear(10, 4)  # 44 float32 parameters
    assert model_bytes(lin) == 44 * 4
    shared = torch.nn.Sequential(lin, lin)  # the same tensors twice: counted once
    assert model_bytes(shared) == 44 * 4
    bn = torch.nn.BatchNorm2d(8)  # 16 parameters + running mean/var (16 float32) + num_batches_tracked (int64)
    assert model_bytes(bn) == 32 * 4 + 8
    r18 = build_staged_model("resnet18", input_size=(32, 32))
    n = sum(p.numel() for p in r18.parameters())
    assert n == 11_689_512 and model_bytes(r18) > n * 4


def test_out_of_memory_recognised_in_its_three_forms() -> None:
    assert is_cuda_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_cuda_oom(RuntimeError("CUDA error: out of memory\nSearch for `cudaErrorMemoryAllocation'"))
    tb = "Traceback (most recent call last):\n  File \"w.py\", line 1\ntorch.OutOfMemoryError: CUDA out of memory.\n"
    err = BackendError(f"mps: worker c0 failed to start: {traceback_summary(tb)}\n{tb}")
    assert is_cuda_oom(err) and str(err).splitlines()[0].endswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert not is_cuda_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_cuda_oom(ValueError("out of range"))
    assert traceback_summary("") == ""
    cuda_tb = ("Traceback (most recent call last):\n  File \"w.py\", line 184, in setup\n    torch.cuda.set_device(d)\n"
               "torch.AcceleratorError: CUDA error: out of memory\nSearch for `cudaErrorMemoryAllocation' in https://"
               "docs.nvidia.com/...\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n")
    assert traceback_summary(cuda_tb) == "torch.AcceleratorError: CUDA error: out of memory"  # measured on the H200
