"""Task sets of the bench: one rate for every task, or the paper's per-model rates (Table II)."""

from __future__ import annotations

import argparse

import pytest

from daris_ros.bench.cli import _task_rate_arg
from daris_ros.bench.workload import PAPER_TASK_RATE, describe_rate, make_taskset, parse_task_rate
from daris_ros.core import Priority


def test_one_rate_spreads_the_offered_load_over_tasks_of_that_period() -> None:
    tasks = make_taskset(("unet",), 5958.0, 30.0)
    assert len(tasks) == round(5958.0 / 30.0)
    assert {round(1 / t.period, 9) for t in tasks} == {30.0}
    n_hp = sum(t.priority is Priority.HP for t in tasks)
    assert n_hp == round(len(tasks) / 3)  # 2:1 LP:HP
    assert all(0.0 <= t.phase < t.period for t in tasks)


def test_paper_rates_give_unet_24_hz_tasks_and_keep_the_offered_load() -> None:
    rate = parse_task_rate("paper")
    assert rate == PAPER_TASK_RATE
    tasks = make_taskset(("unet",), 5958.0, rate)
    assert {round(1 / t.period, 9) for t in tasks} == {24.0}
    assert len(tasks) == round(5958.0 / 24.0)
    offered = sum(1.0 / t.period for t in tasks)
    assert offered == pytest.approx(5958.0, rel=0.01)
    resnet = make_taskset(("resnet18",), 3000.0, rate)
    assert {round(1 / t.period, 9) for t in resnet} == {30.0}


def test_a_mixed_set_gives_each_model_its_own_rate() -> None:
    models = ("resnet18", "unet", "inception_v3")
    tasks = make_taskset(models, 7800.0, PAPER_TASK_RATE)
    by_model = {m: {round(1 / t.period, 9) for t in tasks if t.model == m} for m in models}
    assert by_model == {"resnet18": {30.0}, "unet": {24.0}, "inception_v3": {24.0}}
    assert sum(1.0 / t.period for t in tasks) == pytest.approx(7800.0, rel=0.02)
    assert describe_rate(PAPER_TASK_RATE, models) == (
        "paper (Table II) rates: resnet18 30 Hz, unet 24 Hz, inception_v3 24 Hz")
    assert describe_rate(30.0, models) == "30 Hz"


@pytest.mark.parametrize("text", ["fast", "0", "-5", ""])
def test_a_bad_task_rate_is_refused_with_the_option_named(text: str) -> None:
    with pytest.raises(ValueError, match="--task-rate"):
        parse_task_rate(text)
    with pytest.raises(argparse.ArgumentTypeError, match="rate"):
        _task_rate_arg(text)


def test_a_model_without_a_rate_is_named() -> None:
    with pytest.raises(ValueError, match="'yolo'"):
        make_taskset(("yolo",), 100.0, PAPER_TASK_RATE)
