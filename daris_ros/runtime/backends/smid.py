"""Which SMs a stream's kernels run on: a tiny kernel that records ``%smid`` per block (CuPy/NVRTC).

Used by the GPU tests and the bench to prove green-context placement. CuPy is imported lazily; the
kernel launches on any stream handle (a torch stream, a green-context stream) and can be captured in
a torch CUDA graph.
"""

from __future__ import annotations

from typing import Any

import torch

_SRC = r"""
extern "C" __global__ void record_smid(int* out, long long spin) {
    unsigned int sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    long long t0 = clock64();
    while (clock64() - t0 < spin) { }
    if (threadIdx.x == 0) out[blockIdx.x] = (int)sm;
}
"""

_kernel: Any = None


def _get_kernel() -> Any:
    global _kernel
    if _kernel is None:
        import cupy

        _kernel = cupy.RawKernel(_SRC, "record_smid")
    return _kernel


class SmidProbe:
    """A preallocated probe: ``launch(stream)`` enqueues the kernel, ``sms()`` reads the SM ids seen."""

    def __init__(self, n_blocks: int = 2048, spin_cycles: int = 20_000, device: int = 0) -> None:
        self.n_blocks = n_blocks
        self.spin = spin_cycles
        self.out = torch.full((n_blocks,), -1, dtype=torch.int32, device=f"cuda:{device}")
        torch.cuda.synchronize()
        import cupy

        self._view = cupy.asarray(self.out)  # made once, outside any graph capture
        _get_kernel()

    def launch(self, stream: torch.cuda.Stream) -> None:
        import cupy

        k = _get_kernel()
        with cupy.cuda.ExternalStream(stream.cuda_stream):
            k((self.n_blocks,), (32,), (self._view, cupy.int64(self.spin)))

    def sms(self) -> set[int]:
        torch.cuda.synchronize()
        vals = self.out.cpu().tolist()
        if any(v < 0 for v in vals):
            raise RuntimeError("the smid kernel did not write every block")
        return set(vals)


def sms_of_stream(stream: torch.cuda.Stream, n_blocks: int = 2048, spin_cycles: int = 20_000) -> set[int]:
    """The SM ids that ``n_blocks`` spinning blocks launched on ``stream`` ran on."""
    probe = SmidProbe(n_blocks, spin_cycles, stream.device.index or 0)
    probe.launch(stream)
    return probe.sms()
