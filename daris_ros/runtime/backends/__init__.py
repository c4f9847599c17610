"""Execution backends behind :class:`~daris_ros.runtime.backends.base.Backend`."""

from __future__ import annotations

from daris_ros.runtime.backends.base import Backend, BackendError, StageDone


def create_backend(name: str, *, n_contexts: int, n_streams: int, device: str = "cpu") -> Backend:
    """Create the backend named in the ``backend`` parameter."""
    if name == "cpu":
        from daris_ros.runtime.backends.cpu import CpuBackend

        return CpuBackend(n_contexts=n_contexts, n_streams=n_streams, device=device)
    raise BackendError(f"backend {name!r} is not available in this build (available: cpu)")


__all__ = ["Backend", "BackendError", "StageDone", "create_backend"]
