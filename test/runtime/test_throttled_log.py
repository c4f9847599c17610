"""Per-key throttling of repeated warnings, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from daris_ros.runtime.throttled_log import ThrottledLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_period_with_the_held_back_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = ThrottledLog(logging.getLogger("test.throttle"), period=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert log.warning(("front", "truncated"), "task %s: bad frame", "front")
        for _ in range(29):
            clock.now += 0.1
            assert not log.warning(("front", "truncated"), "task %s: bad frame", "front")
        # another task's problem is not hidden by the first one's
        assert log.warning(("rear", "truncated"), "task %s: bad frame", "rear")
        assert log.held_back(("front", "truncated")) == 29
        clock.now += 2.2  # 5.1 s after the first line
        assert log.warning(("front", "truncated"), "task %s: bad frame", "front")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["task front: bad frame", "task rear: bad frame",
                     "task front: bad frame (29 more like this in the last 5 s not logged)"]
    assert log.held_back(("front", "truncated")) == 0


def test_period_zero_logs_everything_and_negative_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logging.getLogger("test.throttle0"), period=0.0, clock=lambda: 1.0)
    with caplog.at_level(logging.ERROR, logger="test.throttle0"):
        assert all(log.error("k", "stage failed") for _ in range(3))
    assert len(caplog.records) == 3
    with pytest.raises(ValueError, match="throttle period"):
        ThrottledLog(logging.getLogger("x"), period=-1.0)


def test_admit_gates_a_logger_of_another_kind() -> None:
    clock = _Clock()
    gate = ThrottledLog(period=5.0, clock=clock)
    assert gate.admit(("cam", "bad_step")) == 0
    assert gate.admit(("cam", "bad_step")) is None and gate.admit(("cam", "bad_step")) is None
    assert gate.admit(("cam", "too_large")) == 0  # another reason of the same task is not hidden
    clock.now += 5.0
    held = gate.admit(("cam", "bad_step"))
    assert held == 2 and gate.suffix(held) == " (2 more like this in the last 5 s not logged)"
    with pytest.raises(RuntimeError, match="admit"):
        gate.warning("k", "no logger")
