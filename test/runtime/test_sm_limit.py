"""A node that shares its GPU (``sm_limit``, issue 15 item 8), on the CPU: eq. 9 from the limit in the core, the
green plan on the first granules, the MPS percentages, the checks that name the parameter, the simulator, and the
engine's snapshot on the cpu backend. The GPU side (kernels on at most ``sm_limit`` SMs) is
test/gpu/test_gpu_sm_limit.py."""

from __future__ import annotations

import pytest

from daris_ros.core import Policy, Scheduler, SchedulerConfig, n_sm_max_for_limit, sm_per_context_eq9
from daris_ros.runtime.backends import BackendError, create_backend
from daris_ros.runtime.backends.base import checked_sm_limit
from daris_ros.runtime.backends.mps_pool import mps_thread_percentage
from daris_ros.runtime.backends.sm_partitions import GREEN_SM_GRANULARITY, plan_sm_partitions
from daris_ros.settings import ConfigError, SchedulerSettings, TaskSettings, settings_from_mapping
from daris_ros.sim import Simulation, scenario_from_dict
from daris_ros.sim.exec_models import ContentionModel, Geometry

H100_SMS = 132
ORIN_SMS = 16  # a Jetson AGX Orin's SM count: two granules of 8


# -- eq. 9 on the limit ---------------------------------------------------------------------------------------------
def test_no_limit_is_the_whole_device() -> None:
    assert n_sm_max_for_limit(0, H100_SMS, 8) == H100_SMS
    assert SchedulerConfig(n_sm_max=H100_SMS).usable_sms == H100_SMS


@pytest.mark.parametrize(("oversubscription", "granularity", "expected"), [
    (1.0, 8, 8), (2.0, 8, 16), (1.0, 2, 8), (2.0, 2, 16)])
def test_eq9_on_16_of_132_sms(oversubscription: float, granularity: int, expected: int) -> None:
    """N_c = 2 on 16 of an H100's 132 SMs: OS = 1 gives each context half the 16, OS = 2 all 16 (not 66 / 132)."""
    cfg = SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=oversubscription, n_sm_max=H100_SMS,
                          sm_granularity=granularity, sm_limit=ORIN_SMS)
    assert cfg.usable_sms == ORIN_SMS
    assert sm_per_context_eq9(oversubscription, cfg.usable_sms, 2, granularity) == expected
    assert Scheduler(cfg, []).sm_per_context() == expected
    # without the limit the same layout takes the whole device
    whole = Scheduler(SchedulerConfig(Policy.MPS, n_contexts=2, oversubscription=oversubscription,
                                      n_sm_max=H100_SMS, sm_granularity=granularity), [])
    assert whole.sm_per_context() == sm_per_context_eq9(oversubscription, H100_SMS, 2, granularity) > expected


def test_str_policy_takes_every_limited_sm() -> None:
    cfg = SchedulerConfig(Policy.STR, n_streams=3, n_sm_max=H100_SMS, sm_limit=ORIN_SMS)
    assert Scheduler(cfg, []).sm_per_context() == ORIN_SMS


@pytest.mark.parametrize(("limit", "words"), [
    (-8, "int >= 0"), (140, "more than the device has (132 SMs)"), (12, "not a multiple of the SM granularity 8"),
    (4, "not a multiple of the SM granularity 8"), (True, "int >= 0")])
def test_limit_checks_name_the_parameter(limit: int, words: str) -> None:
    with pytest.raises(ValueError, match="sm_limit") as exc:
        n_sm_max_for_limit(limit, H100_SMS, 8)
    assert words in str(exc.value)
    with pytest.raises(ValueError, match="sm_limit"):
        SchedulerConfig(n_sm_max=H100_SMS, sm_granularity=8, sm_limit=limit)
    with pytest.raises(BackendError, match="parameter 'sm_limit'") as berr:
        checked_sm_limit(limit, H100_SMS, 8, "green")
    assert words in str(berr.value) and "backend green" in str(berr.value)


def test_mps_granularity_accepts_even_limits() -> None:
    assert n_sm_max_for_limit(18, H100_SMS, 2) == 18
    with pytest.raises(ValueError, match="granularity 2"):
        n_sm_max_for_limit(15, H100_SMS, 2)


# -- green: the plan on the first granules -----------------------------------------------------------------------------
@pytest.mark.parametrize(("oversubscription", "contexts", "sms"), [
    (1.0, ((0,), (1,)), [8, 8]), (2.0, ((0, 1), (0, 1)), [16, 16])])
def test_green_plan_on_the_first_two_granules(oversubscription: float, contexts: tuple[tuple[int, ...], ...],
                                               sms: list[int]) -> None:
    """What GreenContexts plans under sm_limit = 16 (two granules of the driver's split, no remainder)."""
    plan = plan_sm_partitions(2, oversubscription, ORIN_SMS, GREEN_SM_GRANULARITY,
                              ORIN_SMS // GREEN_SM_GRANULARITY)
    assert plan.contexts == contexts and plan.remainder_sms == 0 and not any(plan.with_remainder)
    assert [plan.sm_count(k) for k in range(2)] == sms
    assert max(i for c in plan.contexts for i in c) < ORIN_SMS // GREEN_SM_GRANULARITY  # only the first granules


def test_green_plan_refuses_more_contexts_than_limited_granules() -> None:
    with pytest.raises(ValueError, match="3 contexts need at least 3 granules"):
        plan_sm_partitions(3, 1.0, ORIN_SMS, GREEN_SM_GRANULARITY, ORIN_SMS // GREEN_SM_GRANULARITY)


# -- mps: each client's share of the limited set, as a percentage of the device -------------------------------------
def test_mps_thread_percentages_from_the_limit() -> None:
    per_client = sm_per_context_eq9(1.0, ORIN_SMS, 2, 2)
    assert per_client == 8
    assert mps_thread_percentage(per_client, H100_SMS) == pytest.approx(100 * 8.5 / 132)  # 6.44%: 8 SMs of 132


def test_mps_backend_with_cpu_workers_sizes_clients_from_the_limit() -> None:
    from daris_ros.runtime.backends.mps import MpsBackend

    b = MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0, oversubscription=2.0, sm_limit=ORIN_SMS)
    try:
        assert b.n_sm_max == 132 and b.sm_limit == ORIN_SMS and b.usable_sms == ORIN_SMS
        assert b.sm_per_context == 16  # OS = 2: both clients may use all 16
        assert b.thread_percentage == pytest.approx(100 * 16.5 / 132)
        assert b.pool.thread_percentage == b.thread_percentage  # what the workers get in their environment
    finally:
        b.close()
    with pytest.raises(BackendError, match="parameter 'sm_limit'"):
        MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0, sm_limit=15)


# -- settings and the cpu backend --------------------------------------------------------------------------------------
def _task() -> dict[str, object]:
    return {"topic": "/cam", "priority": "HP", "rate": 10.0, "model": "resnet18"}


def test_settings_default_and_negative_limit() -> None:
    assert SchedulerSettings().sm_limit == 0
    s = settings_from_mapping({"sm_limit": 16, "task_names": ["a"], "tasks": {"a": _task()}})
    assert s.sm_limit == 16
    with pytest.raises(ConfigError, match="parameter 'sm_limit'"):
        settings_from_mapping({"sm_limit": -1, "task_names": ["a"], "tasks": {"a": _task()}})
    with pytest.raises(ConfigError, match="parameter 'sm_limit'"):
        settings_from_mapping({"sm_limit": 16.0, "task_names": ["a"], "tasks": {"a": _task()}})


def test_cpu_backend_keeps_the_limit_for_eq9_only() -> None:
    b = create_backend("cpu", n_contexts=2, n_streams=1, sm_limit=ORIN_SMS)
    try:
        assert b.sm_limit == ORIN_SMS and b.usable_sms == ORIN_SMS and b.n_sm_max == 132
    finally:
        b.close()
    with pytest.raises(BackendError, match="parameter 'sm_limit'.*more than the device has"):
        create_backend("cpu", n_contexts=2, n_streams=1, sm_limit=200)


def test_engine_snapshot_carries_the_limit_on_the_cpu_backend() -> None:
    from daris_ros.runtime.engine import Engine

    tasks = (TaskSettings("hp", "/hp", "HP", 0.1, 0.1, "resnet18", input_size=(32, 32)),)
    for limit, usable, per_context in ((ORIN_SMS, ORIN_SMS, 8), (0, 132, 66)):
        s = SchedulerSettings(policy="MPS", n_contexts=2, n_streams=1, profile_runs=1, tasks=tasks, sm_limit=limit)
        e = Engine(s, on_result=lambda _result: None)
        try:
            e.load_models()
            e.profile()
            e.start()
            snap = e.snapshot()
            assert (snap.sm_limit, snap.usable_sms, snap.sm_per_context) == (limit, usable, per_context)
            assert snap.daemon_restarts is None  # the cpu backend supervises no daemon (mps: SupervisedDaemon)
            key = e.afet_cache_key("resnet18", "isolated")
            assert (f"on {limit} SMs" in key) == bool(limit)  # AFETs measured on 16 SMs are not reused on 132
        finally:
            e.close()


# -- the simulator -----------------------------------------------------------------------------------------------------
def _scenario(sm_limit: int) -> dict[str, object]:
    return {"name": "shared", "duration": 2.0, "seed": 1,
            "scheduler": {"policy": "MPS", "n_contexts": 2, "oversubscription": 1.0, "n_sm_max": H100_SMS,
                          "sm_limit": sm_limit},
            "models": {"r18": {"stage_times": [0.002, 0.002]}},
            "exec_model": {"kind": "contention", "sm_exponent": 0.6, "interference": 0.0},
            "tasks": [{"name": "hp", "model": "r18", "priority": "HP", "count": 2, "period": 0.05},
                      {"name": "lp", "model": "r18", "priority": "LP", "count": 4, "period": 0.05}]}


def test_simulator_sizes_contexts_from_the_limit_and_runs_slower() -> None:
    limited = Simulation(scenario_from_dict(_scenario(ORIN_SMS)))
    whole = Simulation(scenario_from_dict(_scenario(0)))
    assert limited.geometry.sm_per_context == 8 and limited.geometry.node_sms == ORIN_SMS
    assert whole.geometry.sm_per_context == 66 and whole.geometry.node_sms == H100_SMS
    # a stage alone in its context: (132 / 8) ** 0.6 slower on the limited node, (132 / 66) ** 0.6 on the whole GPU
    assert limited.exec_model.full_load_estimate(1.0) == pytest.approx((132 / 8) ** 0.6)
    assert whole.exec_model.full_load_estimate(1.0) == pytest.approx((132 / 66) ** 0.6)
    r_limited, r_whole = limited.run(), whole.run()
    assert r_limited.sm_per_context == 8 and r_whole.sm_per_context == 66
    assert r_limited.hp().p99 > r_whole.hp().p99


def test_contention_caps_a_stage_at_its_share_of_the_limited_sms() -> None:
    """OS = N_c (every context spans the node's SMs): C stages running share the 16 SMs, not the 132."""
    g = Geometry(n_sm_max=H100_SMS, sm_per_context=16, n_contexts=2, n_streams=1, oversubscription=2.0,
                 usable_sms=ORIN_SMS)
    m = ContentionModel(g, beta=1.0, alpha=0.0)
    assert m.slowdown(1, 1) == pytest.approx(132 / 16)  # alone: all 16 SMs
    assert m.slowdown(1, 2) == pytest.approx(132 / 8)  # two running: 8 each


# -- the report reads it back from a bag's SchedulerStats --------------------------------------------------------------
def test_report_extractor_reads_the_limit() -> None:
    import dataclasses

    from daris_ros.bags.typestore import get_typestore
    from daris_ros.report.extract import stats_snapshot
    from daris_ros.report.metrics import config_of

    types = get_typestore().types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="")
    msg = types["daris_ros/msg/SchedulerStats"](
        header=header, node="/daris_scheduler", policy="MPS", backend="green", device="cuda:0", n_contexts=2,
        n_streams=1, oversubscription=1.0, sm_per_context=8, uptime=1.0, tasks=[], priorities=[], contexts=[],
        memory_source="", memory_shared=True, models=[], model_bytes=[], sm_limit=16, usable_sms=16,
        loop_busy_share=0.5, host_us_per_release=40.0)
    snap = stats_snapshot(msg)
    assert (snap.sm_limit, snap.usable_sms, snap.sm_per_context) == (16, 16, 8)
    assert config_of(snap)["sm_limit"] == 16
    older = dataclasses.make_dataclass("OlderStats", [(f, object) for f in (
        "header", "node", "policy", "backend", "device", "n_contexts", "n_streams", "oversubscription",
        "sm_per_context", "uptime", "tasks")])(header, "/n", "MPS", "cpu", "cpu", 1, 1, 1.0, 132, 1.0, [])
    assert stats_snapshot(older).sm_limit is None  # a bag recorded before the field
