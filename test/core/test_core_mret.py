"""Eqs. 1, 2 and 10: MRET per stage over a window, per task, AFET before any history."""

from __future__ import annotations

import pytest

from daris_ros.core import MretTracker, mret_stage_eq1, mret_task_eq2


def test_eq1_mret_is_max_of_last_ws_measurements() -> None:
    history = [4.0, 9.0, 3.0, 5.0, 2.0, 6.0, 1.0]
    # last 5: 3, 5, 2, 6, 1 -> 6 ; the 9 fell out of the window
    assert mret_stage_eq1(history, ws=5) == 6.0
    assert mret_stage_eq1(history, ws=6) == 9.0
    assert mret_stage_eq1(history, ws=1) == 1.0


def test_eq1_uses_afet_before_any_history_eq10() -> None:
    assert mret_stage_eq1([], ws=5, afet=7.5) == 7.5
    with pytest.raises(ValueError):
        mret_stage_eq1([], ws=5)
    with pytest.raises(ValueError):
        mret_stage_eq1([1.0], ws=0)


def test_eq2_task_mret_sums_stage_mrets() -> None:
    assert mret_task_eq2([1.0, 2.5, 0.5]) == 4.0
    assert mret_task_eq2([3.0]) == 3.0


def test_tracker_hand_computed_sequence() -> None:
    t = MretTracker([2.0, 4.0], ws=3)
    assert t.stages() == (2.0, 4.0) and t.total == 6.0  # AFET (eq. 10)
    assert t.record(0, 1.0) is True  # first measurement replaces the AFET, even when smaller
    assert t.stages() == (1.0, 4.0) and t.total == 5.0
    t.record(0, 3.0)
    t.record(0, 2.0)
    assert t.stage(0) == 3.0
    assert t.record(0, 1.0) is False  # window 3, 2, 1 -> still 3
    assert t.record(0, 1.0) is True  # window 2, 1, 1 -> 2
    assert t.stage(0) == 2.0
    assert t.history(0) == (2.0, 1.0, 1.0)
    assert t.has_history(0) and not t.has_history(1)
    assert t.total == 6.0  # 2 + AFET of stage 1


def test_tracker_set_window_keeps_most_recent() -> None:
    t = MretTracker([1.0], ws=5)
    for et in (9.0, 1.0, 2.0, 3.0, 4.0):
        t.record(0, et)
    assert t.stage(0) == 9.0
    assert t.set_window(2) is True
    assert t.stage(0) == 4.0 and t.history(0) == (3.0, 4.0)
    assert t.set_window(2) is False
    with pytest.raises(ValueError):
        t.set_window(0)
    with pytest.raises(ValueError):
        t.record(0, -1.0)


def test_tracker_matches_eq1_reference_on_a_long_run() -> None:
    t = MretTracker([0.5, 0.5], ws=5)
    seen: list[float] = []
    for i in range(50):
        et = ((i * 37) % 11) / 10.0
        t.record(1, et)
        seen.append(et)
        assert t.stage(1) == mret_stage_eq1(seen, 5)
        assert t.total == mret_task_eq2([0.5, mret_stage_eq1(seen, 5)])
