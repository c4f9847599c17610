"""/diagnostics while a lifecycle transition holds the executor.

A transition runs in one callback (the executor's thread, or the main thread for ``autostart``), and configure
takes minutes on a GPU (models, CUDA graphs, AFET profiling): no timer fires meanwhile, so a supervisor watching
/diagnostics would see the node go silent. :class:`TransitionHeartbeat` publishes the node's status from its own
thread while the transition runs: at once when the transition or one of its phases starts, then every ``period``
seconds. The status says the transition state (lifecycle_msgs' labels: ``configuring``, ``activating``, ...), the
phase (``loading``, ``profiling``, ...) and the seconds since the transition began.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: The transition states of lifecycle_msgs/msg/State, by the name of the transition that passes through them.
TRANSITION_STATES = {"configure": "configuring", "activate": "activating", "deactivate": "deactivating",
                     "cleanup": "cleaningup", "shutdown": "shuttingdown", "error processing": "errorprocessing"}


class TransitionHeartbeat:
    """Calls ``publish(transition_state, phase, elapsed_s)`` while a transition runs: from :meth:`begin` (at once)
    to :meth:`end`, every ``period`` seconds from its own thread, and at once from the caller's thread on each
    :meth:`phase` change. Not reentrant: one transition at a time, as the lifecycle state machine allows."""

    def __init__(self, publish: Callable[[str, str, float], None], period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if period <= 0:
            raise ValueError(f"period must be > 0 (got {period!r})")
        self._publish = publish
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()  # the state below, read by the thread
        self._emit_lock = threading.Lock()
        self._state: str | None = None  # the transition state while one runs
        self._phase = ""
        self._began = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: list[str] = []  # publishes that raised (the context going down at shutdown): best effort

    @property
    def running(self) -> str | None:
        """The transition state while a transition runs, else None."""
        with self._lock:
            return self._state

    def begin(self, transition: str, phase: str) -> None:
        """A transition starts (``transition``: its name, e.g. ``configure``): publish now, then every period."""
        state = TRANSITION_STATES.get(transition, transition)
        with self._lock:
            if self._state is not None:
                raise RuntimeError(f"{state} began while {self._state} runs")
            self._state, self._phase, self._began = state, phase, self._clock()
        self._stop.clear()
        self._emit()
        self._thread = threading.Thread(target=self._run, name="daris-transition-heartbeat", daemon=True)
        self._thread.start()

    def phase(self, name: str) -> None:
        """A phase of the running transition starts: published at once (nothing happens between transitions)."""
        with self._lock:
            if self._state is None or name == self._phase:
                return
            self._phase = name
        self._emit()

    def end(self) -> None:
        """The transition is over: the thread stops (the node's own status takes over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._state = None

    def _emit(self) -> None:
        # one emit at a time, the state read inside: statuses go out in the order of the phases (the thread's
        # periodic one can never repeat a phase after the next one was published)
        with self._emit_lock:
            with self._lock:
                if self._state is None:
                    return
                state, phase, elapsed = self._state, self._phase, self._clock() - self._began
            try:
                self._publish(state, phase, elapsed)
            except Exception as exc:  # noqa: BLE001 - a status not sent must not fail the transition it reports
                self.failed.append(f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._emit()
