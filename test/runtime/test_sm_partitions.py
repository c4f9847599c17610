"""SM layout of green contexts (pure Python): eq. 9 sizes on granules of 8, disjoint for OS = 1."""

from __future__ import annotations

import itertools

import pytest

from daris_ros.runtime.backends.sm_partitions import plan_sm_partitions


@pytest.mark.parametrize("n_granules", [16, 15])  # 15: what an H200's driver split gives (groups stay in a GPC)
@pytest.mark.parametrize("n_contexts", [1, 2, 3, 4, 5, 8, 15])
def test_os1_is_disjoint_even_and_covers_the_device(n_contexts: int, n_granules: int) -> None:
    plan = plan_sm_partitions(n_contexts, 1.0, 132, 8, n_granules)
    for a, b in itertools.combinations(range(n_contexts), 2):
        assert plan.shared_sms(a, b) == 0
    assert sum(plan.sm_count(k) for k in range(n_contexts)) == 132
    sizes = [len(c) for c in plan.contexts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("n_contexts", "os_", "sms"), [(2, 1.5, 104), (3, 2.0, 88), (4, 2.0, 72), (6, 2.0, 48),
                                                       (10, 1.5, 24)])
def test_os_above_one_uses_eq9_sizes_and_overlaps(n_contexts: int, os_: float, sms: int) -> None:
    plan = plan_sm_partitions(n_contexts, os_, 132, 8)
    assert [plan.sm_count(k) for k in range(n_contexts)] == [sms] * n_contexts
    assert all(plan.shared_sms(k, (k + 1) % n_contexts) > 0 for k in range(n_contexts))
    # every granule is used, and on average each is shared by about OS contexts
    used = [sum(g in c for c in plan.contexts) for g in range(plan.n_granules)]
    assert min(used) >= 1
    assert abs(sum(used) / len(used) - os_) <= 0.5


def test_h200_split_of_15_granules() -> None:
    plan = plan_sm_partitions(4, 2.0, 132, 8, 15)
    assert [plan.sm_count(k) for k in range(4)] == [72] * 4
    assert plan.remainder_sms == 12


def test_full_sharing_is_the_whole_device() -> None:
    plan = plan_sm_partitions(4, 4.0, 132, 8)
    assert [plan.sm_count(k) for k in range(4)] == [132] * 4
    assert plan.shared_sms(0, 3) == 132


def test_invalid_layouts_are_rejected() -> None:
    with pytest.raises(ValueError, match="OS"):
        plan_sm_partitions(2, 3.0, 132, 8)
    with pytest.raises(ValueError, match="granules"):
        plan_sm_partitions(20, 1.0, 132, 8)
