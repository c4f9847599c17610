"""Eq. 8: virtual deadlines, and their accumulation along a job."""

from __future__ import annotations

import pytest

from daris_ros.core import absolute_stage_deadlines, virtual_deadline_eq8


def test_eq8_virtual_deadline_is_mret_share_of_deadline() -> None:
    # stage MRETs 1, 3, 4 (mret_i = 8), D_i = 16
    assert virtual_deadline_eq8(1.0, 8.0, 16.0) == 2.0
    assert virtual_deadline_eq8(3.0, 8.0, 16.0) == 6.0
    assert virtual_deadline_eq8(4.0, 8.0, 16.0) == 8.0


def test_eq8_zero_mret_splits_evenly() -> None:
    assert virtual_deadline_eq8(0.0, 0.0, 9.0, n_stages=3) == 3.0


def test_absolute_stage_deadlines_accumulate_and_end_at_release_plus_d() -> None:
    assert absolute_stage_deadlines(100.0, [1.0, 3.0, 4.0], 16.0) == (102.0, 108.0, 116.0)
    assert absolute_stage_deadlines(0.0, [5.0], 7.0) == (7.0,)
    assert absolute_stage_deadlines(0.0, [0.0, 0.0], 4.0) == (2.0, 4.0)
    dl = absolute_stage_deadlines(0.1, [0.1, 0.2, 0.3], 0.1)
    assert dl[-1] == 0.1 + 0.1  # exact, not a rounded cumulative sum
    assert list(dl) == sorted(dl)
    with pytest.raises(ValueError):
        absolute_stage_deadlines(0.0, [], 1.0)
