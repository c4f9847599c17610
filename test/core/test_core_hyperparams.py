"""Eq. 9 and the STR / MPS / MPS+STR layouts."""

from __future__ import annotations

import pytest

from daris_ros.core import (
    Layout,
    Policy,
    SchedulerConfig,
    ceil_to_multiple,
    effective_layout,
    sm_per_context_eq9,
)


def test_eq9_ceil_even_rtx2080ti_values() -> None:
    # RTX 2080 Ti: 68 SMs, N_c = 6 (the paper's 6x1 configurations)
    assert sm_per_context_eq9(1.0, 68, 6) == 12  # 11.33 -> 12
    assert sm_per_context_eq9(1.5, 68, 6) == 18  # 17 (exactly) -> 18 (next even)
    assert sm_per_context_eq9(2.0, 68, 6) == 24  # 22.67 -> 24
    assert sm_per_context_eq9(6.0, 68, 6) == 68  # OS = N_c: every context spans the GPU
    assert sm_per_context_eq9(1.0, 68, 4) == 18  # 17 -> 18
    assert sm_per_context_eq9(2.0, 68, 4) == 34  # 34 already even


def test_eq9_granularity_8_for_hopper_green_contexts() -> None:
    assert sm_per_context_eq9(1.0, 132, 4, granularity=8) == 40  # 33 -> 40
    assert sm_per_context_eq9(2.0, 132, 4, granularity=8) == 72  # 66 -> 72
    assert sm_per_context_eq9(1.0, 132, 8, granularity=8) == 24  # 16.5 -> 24
    # OS = N_c would round 132 up to 136 > 132: capped to the largest multiple of 8 that fits
    assert sm_per_context_eq9(4.0, 132, 4, granularity=8) == 128
    assert sm_per_context_eq9(1.0, 132, 132, granularity=8) == 8  # at least one granule


def test_eq9_rejects_os_outside_1_to_nc() -> None:
    with pytest.raises(ValueError):
        sm_per_context_eq9(0.5, 68, 6)
    with pytest.raises(ValueError):
        sm_per_context_eq9(7.0, 68, 6)


def test_ceil_to_multiple() -> None:
    assert ceil_to_multiple(11.0, 2) == 12
    assert ceil_to_multiple(12.0, 2) == 12
    assert ceil_to_multiple(1.5 * 68 / 6, 2) == 18  # 17.000000000000004 is 17, not 17 + epsilon
    assert ceil_to_multiple(0.1, 8) == 8


def test_policy_layouts() -> None:
    assert effective_layout(
        SchedulerConfig(Policy.STR, n_contexts=4, n_streams=3, oversubscription=2)
    ) == Layout(1, 3, 1.0)
    assert effective_layout(
        SchedulerConfig(Policy.MPS, n_contexts=6, n_streams=3, oversubscription=6)
    ) == Layout(6, 1, 6.0)
    mps_str = effective_layout(
        SchedulerConfig(Policy.MPS_STR, n_contexts=3, n_streams=2, oversubscription=1.5)
    )
    assert mps_str == Layout(3, 2, 1.5) and mps_str.n_parallel == 6
    with pytest.raises(ValueError):
        effective_layout(SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=3))


def test_config_validation_and_policy_parsing() -> None:
    assert SchedulerConfig(policy="MPS+STR").policy is Policy.MPS_STR  # type: ignore[arg-type]
    assert Policy.parse("mps_str") is Policy.MPS_STR and Policy("STR") is Policy.STR
    for bad in ({"n_contexts": 0}, {"n_streams": 0}, {"mret_window": 0}, {"oversubscription": 0.5}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Policy.parse("GREEN")
