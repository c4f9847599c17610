"""runtime.loop_load.LoopLoad on an injected clock: the busy share of wall time, exponentially averaged."""

from __future__ import annotations

import math

import pytest

from daris_ros.runtime.loop_load import LoopLoad


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_then_idle_follows_the_exponential_average() -> None:
    clock = _Clock()
    load = LoopLoad(window=1.0, clock=clock)
    assert load.fraction() == 0.0
    clock.now += 2.0  # busy since the start
    assert load.fraction() == pytest.approx(1.0 - math.exp(-2.0))
    load.idle()
    clock.now += 1.0
    assert load.fraction() == pytest.approx((1.0 - math.exp(-2.0)) * math.exp(-1.0))
    load.idle()  # (no change of state: nothing folded twice)
    assert load.fraction() == pytest.approx((1.0 - math.exp(-2.0)) * math.exp(-1.0))


def test_a_steady_duty_cycle_converges_to_its_share() -> None:
    clock = _Clock()
    load = LoopLoad(window=1.0, clock=clock)
    for _ in range(2000):  # 3 ms busy, 1 ms idle: 75%
        load.busy()
        clock.now += 0.003
        load.idle()
        clock.now += 0.001
    assert load.fraction() == pytest.approx(0.75, abs=0.01)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        LoopLoad(window=0.0)
