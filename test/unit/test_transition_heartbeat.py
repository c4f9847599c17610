"""TransitionHeartbeat: the node's status while a lifecycle transition holds the executor (no ROS: a list
collects what would be published; an injected clock gives the elapsed seconds)."""

from __future__ import annotations

import threading
import time

import pytest

from daris_ros.ros.transition_heartbeat import TransitionHeartbeat


class Collected:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, str, float]] = []

    def __call__(self, state: str, phase: str, elapsed: float) -> None:
        with self.lock:
            self.items.append((state, phase, elapsed))

    def snapshot(self) -> list[tuple[str, str, float]]:
        with self.lock:
            return list(self.items)


def _wait(predicate, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def _changes(items: list[tuple[str, str, float]]) -> list[str]:
    phases: list[str] = []
    for _state, phase, _elapsed in items:
        if not phases or phases[-1] != phase:
            phases.append(phase)
    return phases


def test_begin_and_each_phase_are_published_at_once_with_the_elapsed_time() -> None:
    now = [100.0]
    out = Collected()
    beat = TransitionHeartbeat(out, period=3600.0, clock=lambda: now[0])  # (no periodic status in this test)
    beat.phase("loading")  # no transition running: nothing
    assert out.snapshot() == [] and beat.running is None
    beat.begin("configure", "started")
    assert beat.running == "configuring"
    now[0] = 102.5
    beat.phase("loading")
    beat.phase("loading")  # the same phase again: not repeated
    now[0] = 110.0
    beat.phase("profiling")
    beat.end()
    beat.phase("inactive")  # after the end: nothing
    assert out.snapshot() == [("configuring", "started", 0.0), ("configuring", "loading", 2.5),
                              ("configuring", "profiling", 10.0)]
    assert beat.running is None


def test_the_thread_repeats_the_status_every_period_until_the_end() -> None:
    out = Collected()
    beat = TransitionHeartbeat(out, period=0.01)
    beat.begin("cleanup", "started")
    assert _wait(lambda: len(out.snapshot()) >= 4), out.snapshot()
    beat.end()
    after_end = len(out.snapshot())
    time.sleep(0.1)  # ten periods: the thread has stopped
    assert len(out.snapshot()) == after_end
    assert {(state, phase) for state, phase, _ in out.snapshot()} == {("cleaningup", "started")}
    elapsed = [e for _, _, e in out.snapshot()]
    assert elapsed == sorted(elapsed)


def test_statuses_follow_the_phases_in_order_while_the_thread_publishes() -> None:
    """The periodic status never repeats a phase after the next one went out (one emit at a time)."""
    out = Collected()

    def slow_publish(state: str, phase: str, elapsed: float) -> None:
        time.sleep(0.0002)  # (as a DDS write may take: a periodic status and a phase's would overlap)
        out(state, phase, elapsed)

    beat = TransitionHeartbeat(slow_publish, period=0.0005)
    phases = [f"step{i}" for i in range(200)]
    beat.begin("configure", phases[0])
    for name in phases[1:]:
        beat.phase(name)
    beat.end()
    assert _changes(out.snapshot()) == phases


def test_one_transition_at_a_time_and_a_failing_publish_does_not_fail_the_transition() -> None:
    calls: list[str] = []

    def publish(state: str, phase: str, elapsed: float) -> None:
        calls.append(phase)
        raise RuntimeError("context is not valid")

    beat = TransitionHeartbeat(publish, period=3600.0)
    beat.begin("shutdown", "started")  # publishes, and the error is kept rather than raised
    with pytest.raises(RuntimeError, match="shuttingdown began while shuttingdown runs"):
        beat.begin("shutdown", "again")
    beat.phase("releasing")
    beat.end()
    assert calls == ["started", "releasing"]
    assert beat.failed == ["RuntimeError: context is not valid"] * 2
    beat.begin("configure", "started")  # after the end, the next transition may begin
    beat.end()
    with pytest.raises(ValueError, match="period must be > 0"):
        TransitionHeartbeat(publish, period=0.0)

