"""The one protocol between the engine and an execution backend (cpu, str, green, mps).

A backend owns N_c contexts of N_s streams each. Each stream runs what is launched on it in launch order.
The engine's loop (one thread) drives it with two calls:

* :meth:`Backend.launch` enqueues ONE dispatch: stage ``stage`` of ``model`` for 1..n jobs, whose inputs are
  ``rows`` (``(source, row)`` each: row ``row`` of ``source``, a batch-major tensor or tuple of tensors, see
  :data:`Rows`), on (context, stream). It never blocks and returns a ticket. Batch-1 is ``len(rows) == 1``.
* :meth:`Backend.poll` returns what finished since the last call, as :class:`Finished` records (ticket, the
  batch output with row i for ``rows[i]``, the measured execution time of that dispatch in seconds: CUDA events
  on a GPU, a monotonic clock around the stage on the CPU, and the error if it failed).

Backends whose completions arrive on threads of their own (``cpu``, ``mps``) call the ``notify`` callback given
to :meth:`Backend.set_notify` after each completion, so an idle engine loop wakes at once; in-process GPU
backends (``str``, ``green``) are polled by the loop while launches are in flight (``polled = True``).

Optional capabilities are declared by type (subclass the mixin), never probed with ``getattr``:
:class:`WorkerFaults` (worker liveness, replacement and fault injection: the watchdog), :class:`MemoryStats`
(memory per context), :class:`RuntimeModels` (a model added while running), :class:`BatchGraphs` (CUDA graphs
captured per batch size), :class:`SmCounts` (SMs per context), :class:`HostFrames` (raw frames preprocessed by
the worker). Nothing here knows about ROS.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Rows = Sequence[tuple[Any, int]]
"""A dispatch's inputs: ``(source, row)`` per job, row ``row`` of ``source`` (batch-major tensor or tuple)."""


class BackendError(RuntimeError):
    """A backend cannot start or run (no device, MPS unavailable, unsupported feature...)."""


@dataclass(slots=True)
class Finished:
    """One launched dispatch that finished (or failed)."""

    ticket: int
    output: Any  # batch-major: row i is the output for rows[i] of the launch (None on error)
    exec_time: float  # seconds the dispatch ran (0.0 on error)
    error: BaseException | None = None


class Backend(abc.ABC):
    """N_c x N_s streams; ``launch`` a dispatch, ``poll`` what finished."""

    name: str = ""
    device: str = "cpu"
    n_contexts: int = 1
    n_streams: int = 1
    #: True: completions are found by calling :meth:`poll` (the loop polls while launches are in flight);
    #: False: the backend calls ``notify`` from its own thread after each completion.
    polled: bool = False
    #: The device's SM count and the rounding of eq. 9 (8 for green contexts on Hopper).
    n_sm_max: int = 132
    sm_granularity: int = 2
    #: The ``sm_limit`` parameter: the SMs this node may use (0: all ``n_sm_max``); eq. 9's N_SM,max.
    sm_limit: int = 0

    @property
    def usable_sms(self) -> int:
        """The SMs the contexts are carved from (eq. 9's N_SM,max): ``sm_limit``, or the whole device."""
        return self.sm_limit or self.n_sm_max

    @abc.abstractmethod
    def start(self, models: Mapping[str, Any]) -> None:
        """Make every model resident in every context (so that migration costs no load time)."""

    @abc.abstractmethod
    def launch(self, context: int, stream: int, model: str, stage: int, size: int, rows: Rows) -> int:
        """Enqueue stage ``stage`` of ``model`` for ``rows`` on (context, stream); returns a ticket at once.

        ``size`` is the captured batch size to run at (rows past ``len(rows)`` are padding; a backend without
        graphs runs ``len(rows)``). A failure to launch is reported by :meth:`poll` like a failed stage."""

    @abc.abstractmethod
    def poll(self) -> list[Finished]:
        """The dispatches that finished since the last call (per stream in launch order); never blocks."""

    def set_notify(self, notify: Callable[[], None] | None) -> None:  # noqa: B027 - optional hook
        """``notify()`` is called after each completion from the backend's own thread (if it has one)."""

    @abc.abstractmethod
    def run_now(self, model: str, stage: int, size: int, rows: Rows) -> tuple[Any, float]:
        """Run one dispatch synchronously on context 0, stream 0 (profiling); returns (output, exec_time)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop workers and release the device; idempotent. Launches in flight are discarded."""


def checked_sm_limit(sm_limit: int, device_sms: int, granularity: int, backend: str) -> int:
    """``sm_limit`` if a node on ``backend`` can be confined to that many of the device's ``device_sms`` SMs (0, or
    a multiple of ``granularity`` up to ``device_sms``); else a :class:`BackendError` naming the parameter."""
    from daris_ros.core import n_sm_max_for_limit

    try:
        n_sm_max_for_limit(sm_limit, device_sms, granularity)
    except ValueError as exc:
        raise BackendError(f"parameter 'sm_limit': {exc} (backend {backend})") from exc
    return sm_limit


# ---------------------------------------------------------------------------------------------------------
# Optional capabilities: a backend that has one subclasses its mixin; the engine tests ``isinstance``.


class WorkerFaults(abc.ABC):
    """Workers that can die or hang and be replaced (daris_ros.runtime.watchdog)."""

    #: What one dead worker takes down: ``"stream"`` (one per (context, stream)) or ``"context"``.
    worker_scope: str = "stream"

    @abc.abstractmethod
    def worker_alive(self, context: int, stream: int) -> bool:
        """Whether the worker serving (context, stream) runs."""

    @abc.abstractmethod
    def restart_worker(self, context: int, stream: int) -> None:
        """Replace the worker of (context, stream); its launches in flight are lost (never reported)."""

    def worker_died_at(self, context: int, stream: int) -> float | None:
        """When the worker of (context, stream) died (``time.monotonic``), if the backend saw it: the detection
        latency is measured from it."""
        return None

    @abc.abstractmethod
    def inject_fault(self, kind: str, context: int, stream: int, seconds: float = 0.0, wait_busy: float = 1.0,
                     times: int = 1) -> bool:
        """Test hook: ``kill`` or ``hang`` the worker; returns whether a stage was in flight."""


class SupervisedDaemon(abc.ABC):
    """A backend that depends on a daemon it supervises (mps: the MPS control daemon)."""

    @property
    @abc.abstractmethod
    def daemon_restarts(self) -> int:
        """Times the daemon was found dead and started again."""


class MemoryStats(abc.ABC):
    @abc.abstractmethod
    def memory_by_context(self) -> Any:
        """A :class:`daris_ros.runtime.memory.ContextMemory` (bytes per context and where they come from)."""


class RuntimeModels(abc.ABC):
    @abc.abstractmethod
    def add_model(self, name: str, model: Any) -> None:
        """Make one more model resident in every context while running (a task added at run time)."""


class BatchGraphs(abc.ABC):
    @abc.abstractmethod
    def capture_batches(self, sizes: tuple[int, ...], models: list[str] | None = None) -> float:
        """Capture a CUDA graph per (model, stage, batch size, context, stream); returns the seconds it took."""


class SmCounts(abc.ABC):
    @abc.abstractmethod
    def sm_counts(self) -> list[int]:
        """SMs per context (as the hardware partition gives them)."""


class HostFrames(abc.ABC):
    """Workers that preprocess raw HxWx3 uint8 frames themselves (the frame travels instead of a tensor)."""

    @abc.abstractmethod
    def accepts_frame(self, height: int, width: int) -> bool:
        """Whether a raw frame of this size can be handed over as is."""
