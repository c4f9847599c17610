"""Execution backends behind :class:`~daris_ros.runtime.backends.base.Backend`.

``cpu`` (worker threads; CI, laptops), ``str`` (one process, CUDA streams, CUDA graphs), ``green``
(one process, SM-partitioned green contexts), ``mps`` (one MPS client process per context; see
docs/gpu_runtime.md). GPU modules import torch.cuda/cuda.bindings lazily, so this package imports on any
machine.
"""

from __future__ import annotations

from daris_ros.runtime.backends.base import Backend, BackendError

AVAILABLE = ("cpu", "str", "green", "mps")


def create_backend(name: str, *, n_contexts: int, n_streams: int, device: str = "cpu",
                   oversubscription: float = 1.0, cuda_graphs: bool = True, mps_pipe_dir: str | None = None,
                   mps_log_dir: str | None = None, mps_spares: int | None = None, mps_frame_pixels: int = 0,
                   sm_limit: int = 0) -> Backend:
    """Create the backend named in the ``backend`` parameter.

    ``n_contexts`` x ``n_streams`` is the effective layout (after the policy). ``oversubscription`` sizes
    green contexts and MPS clients (eq. 9); ``cuda_graphs`` switches per-stage CUDA graphs of the GPU
    backends. For a GPU backend, ``device='cpu'`` (the settings default) means the first GPU. ``mps`` reads
    its daemon's directories from ``DARIS_MPS_PIPE_DIRECTORY``/``DARIS_MPS_LOG_DIRECTORY`` (else
    ``CUDA_MPS_*``, else NVIDIA's defaults) and the number of ready spare workers from ``DARIS_MPS_SPARES``
    unless ``mps_pipe_dir`` / ``mps_log_dir`` / ``mps_spares`` are given (the node's parameters).

    ``sm_limit`` (0: the whole device) confines the node to that many SMs: green carves its contexts from the
    first granules, str puts its streams in one green context of that size, mps sizes its clients' percentages
    from it (eq. 9); on cpu it only enters eq. 9's arithmetic. A limit the device cannot give raises a
    BackendError naming the parameter.
    """
    if name == "cpu":
        from daris_ros.runtime.backends.cpu import CpuBackend

        return CpuBackend(n_contexts=n_contexts, n_streams=n_streams, device=device, sm_limit=sm_limit)
    if name == "str":
        from daris_ros.runtime.backends.cuda_streams import CudaStreamsBackend

        return CudaStreamsBackend(n_contexts=n_contexts, n_streams=n_streams, device=device,
                                  cuda_graphs=cuda_graphs, oversubscription=oversubscription, sm_limit=sm_limit)
    if name == "green":
        from daris_ros.runtime.backends.green import GreenBackend

        return GreenBackend(n_contexts=n_contexts, n_streams=n_streams, device=device, cuda_graphs=cuda_graphs,
                            oversubscription=oversubscription, sm_limit=sm_limit)
    if name == "mps":
        from daris_ros.runtime.backends.mps import MpsBackend

        return MpsBackend(n_contexts=n_contexts, n_streams=n_streams, device=device, cuda_graphs=cuda_graphs,
                          oversubscription=oversubscription, pipe_dir=mps_pipe_dir, log_dir=mps_log_dir,
                          spares=mps_spares, frame_pixels=mps_frame_pixels, sm_limit=sm_limit)
    raise BackendError(f"backend {name!r} is not available in this build (available: {', '.join(AVAILABLE)})")


__all__ = ["AVAILABLE", "Backend", "BackendError", "create_backend"]
