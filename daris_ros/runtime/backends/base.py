"""The one small interface between the engine and an execution backend (cpu, str, mps, green).

A backend owns N_c contexts of N_s streams each. Each stream runs one stage at a time, in submission
order; ``submit`` never blocks. When a stage finishes the backend calls ``done(output, exec_time,
error)`` from its own thread, with the measured execution time of that stage in seconds (CUDA events
on a GPU, a monotonic clock on the CPU). Nothing here knows about ROS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

StageDone = Callable[[Any, float, BaseException | None], None]


class BackendError(RuntimeError):
    """A backend cannot start or run (no device, MPS unavailable, unsupported feature...)."""


class Backend(Protocol):
    name: str
    device: str
    n_contexts: int
    n_streams: int

    def start(self, models: Mapping[str, Any]) -> None:
        """Make every model resident in every context (so that migration costs no load time)."""

    def submit(self, context: int, stream: int, model: str, stage: int, x: Any, done: StageDone) -> None:
        """Run stage ``stage`` of ``model`` on input ``x`` in (context, stream); call ``done`` when finished."""

    def run_now(self, model: str, stage: int, x: Any) -> tuple[Any, float]:
        """Run one stage synchronously on context 0 (profiling); returns (output, exec_time)."""

    def close(self) -> None:
        """Stop workers and release the device; idempotent."""


# Optional, detected with getattr: ``memory_by_context() -> daris_ros.runtime.memory.ContextMemory`` (memory
# per context for the stats), ``worker_scope`` ("stream" or "context": what one dead worker takes down),
# and the worker-fault hooks of daris_ros.runtime.watchdog.
# Cross-task batching (``batching: true``; runtime/engine_batching.py), on cpu, str and green:
# ``submit_batch(context, stream, model, stage, size, rows, done)`` runs one batched stage for the jobs' rows
# (``(source, row)`` each, see backends/cuda_graphs.Rows; ``done`` gets the batch output, row i for job i),
# ``run_batch_now(model, stage, size, rows) -> (output, exec_time)`` the same synchronously (profiling), and on
# GPU backends ``capture_batches(sizes, models)`` the CUDA graphs per batch size.
