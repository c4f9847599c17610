"""A burst larger than the loop takes in one turn (``RELEASE_CHUNK``) is released HP first
(``runtime/release_backlog.py``): the backlog's order, and the engine's release times on the cpu backend."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import daris_ros.runtime.engine as engine_module
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine
from daris_ros.runtime.release_backlog import ReleaseBacklog
from daris_ros.settings import SchedulerSettings, TaskSettings


def test_backlog_gives_hp_first_and_each_priority_in_arrival_order() -> None:
    backlog = ReleaseBacklog(lambda task: task.startswith("hp"))
    backlog.add([("lp0", 1.0, 0), ("hp0", 1.0, 0), ("lp1", 1.0, 0), ("hp1", 1.0, 2)])
    first: list[tuple[str, float, int]] = []
    backlog.take(3, first)
    assert first == [("hp0", 1.0, 0), ("hp1", 1.0, 2), ("lp0", 1.0, 0)]
    backlog.add([("hp0", 2.0, 0)])  # a later HP release goes before the LP one still waiting
    rest: list[tuple[str, float, int]] = []
    backlog.take(5, rest)
    assert rest == [("hp0", 2.0, 0), ("lp1", 1.0, 0)]
    assert len(backlog) == 0 and not backlog
    backlog.add([("lp0", 3.0, 0)])
    backlog.clear()
    assert len(backlog) == 0


def test_a_burst_over_the_chunk_takes_its_hp_frames_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four LP tasks declared before three HP ones, all released at the same instants, two releases a turn: the
    loop takes the HP cameras' frames in the burst's first turns (the inbox's takes, in order)."""
    monkeypatch.setattr(engine_module, "RELEASE_CHUNK", 2)
    names = [("lp0", "LP"), ("lp1", "LP"), ("lp2", "LP"), ("lp3", "LP"), ("hp0", "HP"), ("hp1", "HP"), ("hp2", "HP")]
    tasks = tuple(TaskSettings(name, f"/{name}", prio, 1.0, 10.0, "resnet18", input_size=(32, 32))
                  for name, prio in names)
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 release_trigger="clock")  # (a rig: every camera at the same instants)
    e = Engine(settings, on_result=lambda r: None)
    turns: list[list[str]] = []  # the tasks whose frames the loop took, per turn
    try:
        e.load_models()
        e.profile()
        take_many = e.inbox.take_many

        def recorded_take_many(names_due: list[str]) -> list[Any]:
            turns.append(list(names_due))
            return take_many(names_due)

        e.inbox.take_many = recorded_take_many  # type: ignore[method-assign]
        frame = np.zeros((24, 32, 3), np.uint8)
        e.start(origin=time.monotonic() + 0.3)  # the first burst once every camera has its frame
        for name, _ in names:
            e.set_frame(name, frame)
        t_end = time.monotonic() + 30.0
        while sum(len(t) for t in list(turns)) < len(names):
            assert time.monotonic() < t_end, turns
            time.sleep(0.01)
        for name, _ in names:
            e.inbox.clear(name)
        drain(e, 30.0)
    finally:
        e.close()
    burst = [task for turn in turns for task in turn][:len(names)]
    assert [len(turn) for turn in turns[:4]] == [2, 2, 2, 1], turns
    assert burst[:3] == ["hp0", "hp1", "hp2"] and burst[3:] == ["lp0", "lp1", "lp2", "lp3"], turns
