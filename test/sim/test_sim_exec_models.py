"""Execution-time models: constant, random distributions, contention."""

from __future__ import annotations

import random

import pytest

from daris_ros.sim import (
    ConstantModel,
    ContentionModel,
    Distribution,
    Geometry,
    RandomModel,
    build_exec_model,
)

GEOM_FULL = Geometry(n_sm_max=68, sm_per_context=68, n_contexts=6, n_streams=1, oversubscription=6.0)
GEOM_ISOLATED = Geometry(n_sm_max=68, sm_per_context=12, n_contexts=6, n_streams=1, oversubscription=1.0)


def test_constant_model() -> None:
    m = ConstantModel()
    assert m.exec_time(0.002, 3, 6, random.Random(0)) == 0.002
    assert m.full_load_estimate(0.002) == 0.002


@pytest.mark.parametrize(
    ("spec", "lo", "hi", "mean"),
    [
        ({"dist": "uniform", "low": 0.9, "high": 1.1}, 0.9, 1.1, 1.0),
        ({"dist": "normal", "mean": 1.0, "sd": 0.1}, 0.05, 10.0, 1.0),
        ({"dist": "lognormal", "sigma": 0.2}, 0.0, 10.0, 1.0),
        ({"dist": "constant", "value": 1.5}, 1.5, 1.5, 1.5),
    ],
)
def test_distributions_are_seeded_and_in_range(spec: dict, lo: float, hi: float, mean: float) -> None:
    d = Distribution.from_dict(spec)
    a = [d.sample(random.Random(42)) for _ in range(3)]
    b = [d.sample(random.Random(42)) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    xs = [d.sample(rng) for _ in range(4000)]
    assert all(lo <= x <= hi for x in xs)
    assert sum(xs) / len(xs) == pytest.approx(mean, rel=0.03)
    assert d.expected() == mean


def test_distribution_validation() -> None:
    for bad in (
        {"dist": "cauchy"},
        {"dist": "uniform", "low": 2, "high": 1},
        {"dist": "uniform", "bogus": 1},
    ):
        with pytest.raises(ValueError):
            Distribution.from_dict(bad)


def test_random_model_scales_base() -> None:
    m = RandomModel(Distribution("uniform", low=2.0, high=2.0))
    assert m.exec_time(0.5, 1, 1, random.Random(0)) == 1.0 and m.full_load_estimate(0.5) == 1.0


def test_contention_hand_computed_factors() -> None:
    m = ContentionModel(GEOM_FULL, beta=0.5, alpha=0.1)
    # alone on a context spanning the whole GPU: s = 68 -> factor 1
    assert m.slowdown(1, 1) == pytest.approx(1.0)
    # 4 running, full overlap: s = 68 / 4 -> (4) ** 0.5 * (1 + 0.1 * 3) = 2 * 1.3
    assert m.slowdown(1, 4) == pytest.approx(2.6)
    iso = ContentionModel(GEOM_ISOLATED, beta=0.5, alpha=0.1)
    # OS = 1: a lone stage only has its own 12 SMs: (68 / 12) ** 0.5
    assert iso.slowdown(1, 1) == pytest.approx((68 / 12) ** 0.5)
    # more concurrency never makes a stage faster
    for geom in (GEOM_FULL, GEOM_ISOLATED):
        cm = ContentionModel(geom)
        assert cm.slowdown(1, 1) <= cm.slowdown(1, 3) <= cm.slowdown(1, 6)
    assert m.full_load_estimate(1.0) == pytest.approx(m.slowdown(1, 6))


def test_oversubscription_helps_a_lightly_loaded_gpu() -> None:
    assert ContentionModel(GEOM_FULL).slowdown(1, 1) < ContentionModel(GEOM_ISOLATED).slowdown(1, 1)


def test_build_exec_model() -> None:
    assert isinstance(build_exec_model(None, GEOM_FULL), ConstantModel)
    assert isinstance(
        build_exec_model({"kind": "random", "jitter": {"dist": "uniform"}}, GEOM_FULL), RandomModel
    )
    m = build_exec_model({"kind": "contention", "sm_exponent": 0.3, "interference": 0.0}, GEOM_FULL)
    assert isinstance(m, ContentionModel) and m.beta == 0.3 and m.alpha == 0.0
    with pytest.raises(ValueError):
        build_exec_model({"kind": "quantum"}, GEOM_FULL)
    with pytest.raises(ValueError):
        build_exec_model({"kind": "constant", "alpha": 1}, GEOM_FULL)
    with pytest.raises(ValueError):
        ContentionModel(GEOM_FULL, beta=1.5)
