"""The stall probe (runtime/stall_probe.py): it samples the loop thread's stack only while an iteration runs longer
than its threshold, counts each such iteration once, and writes its report where DARIS_STALL_PROBE says."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from daris_ros.runtime.stall_probe import LoopMark, StallProbe, stack_key


def _held_iteration(mark: LoopMark, release: threading.Event) -> None:
    mark.busy_since = time.perf_counter() - 1.0  # an iteration that started a second ago ...
    release.wait(10.0)  # ... and is still running here
    mark.busy_since = 0.0


def _busy_elsewhere(release: threading.Event) -> None:
    while not release.is_set():
        sum(range(1000))


def test_a_long_iteration_is_sampled_with_its_stack_and_counted_once(tmp_path: Path) -> None:
    mark = LoopMark()
    release = threading.Event()
    loop = threading.Thread(target=_held_iteration, args=(mark, release))
    busy = threading.Thread(target=_busy_elsewhere, args=(release,), name="busy-one")
    idle = threading.Thread(target=release.wait, name="idle-one")
    busy.start()
    idle.start()
    loop.start()
    while not mark.busy_since:
        time.sleep(0.001)
    probe = StallProbe(mark, loop, threshold=0.010, report_path=tmp_path / "stalls.json")
    now = time.perf_counter()
    assert probe.sample(now) and probe.sample(now + 0.001)
    release.set()
    loop.join()
    busy.join()
    idle.join()
    assert not probe.sample(time.perf_counter())  # asleep: nothing sampled
    others = " | ".join(probe.others)
    assert "busy-one: " in others and "idle-one" not in others  # the busy thread is named, the waiting one not
    assert "loop" not in others and "_held_iteration" not in others  # (the loop itself is not an "other")
    assert probe.stalls == 1  # two samples of one iteration
    assert probe.longest >= 1.0
    [(stack, n)] = probe.samples.items()
    assert n == 2 and "_held_iteration" in stack and "test_stall_probe.py" in stack
    probe.stop()  # (never started: writes the report)
    report = json.loads((tmp_path / "stalls.json").read_text())
    assert report["stalls"] == 1 and report["samples"] == 2 and report["stacks"][0]["samples"] == 2
    assert any(o["thread"].startswith("busy-one: ") for o in report["other_threads"])


def test_a_short_iteration_is_not_sampled() -> None:
    mark = LoopMark(busy_since=100.0)
    probe = StallProbe(mark, threading.current_thread(), threshold=0.010)
    assert not probe.sample(100.005)
    assert probe.sample(100.02)
    assert "test_a_short_iteration_is_not_sampled" in next(iter(probe.samples))


def test_environment_switches_it_on_and_names_a_bad_threshold(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    mark = LoopMark()
    monkeypatch.delenv("DARIS_STALL_PROBE", raising=False)
    assert StallProbe.from_environment(mark, threading.current_thread()) is None
    monkeypatch.setenv("DARIS_STALL_PROBE", str(tmp_path / "p.json"))
    monkeypatch.setenv("DARIS_STALL_PROBE_MS", "25")
    probe = StallProbe.from_environment(mark, threading.current_thread())
    assert probe is not None and probe.threshold == pytest.approx(0.025)
    monkeypatch.setenv("DARIS_STALL_PROBE_MS", "fast")
    with pytest.raises(ValueError, match="DARIS_STALL_PROBE_MS='fast'"):
        StallProbe.from_environment(mark, threading.current_thread())


def test_stack_key_lists_the_innermost_frame_first() -> None:
    import sys

    key = stack_key(sys._getframe(), depth=2)
    assert key.startswith("test_stall_probe.py:") and "test_stack_key_lists_the_innermost_frame_first" in key
    assert key.count(" < ") == 1


def test_the_engine_runs_the_probe_on_its_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DARIS_STALL_PROBE set: the engine's loop is probed; a command that holds the loop (the probe's samples are
    waited for, not a wall-clock sleep) is found in the report with its stack."""
    from daris_ros.runtime.engine import Engine
    from daris_ros.settings import SchedulerSettings, TaskSettings

    report_path = tmp_path / "stalls.json"
    monkeypatch.setenv("DARIS_STALL_PROBE", str(report_path))
    monkeypatch.setenv("DARIS_STALL_PROBE_MS", "5")
    tasks = (TaskSettings("cam", "/cam", "HP", 0.05, 0.05, "resnet18", input_size=(32, 32)),)
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 worker_stage_timeout=0.0, skip_late=0.0)
    engine = Engine(settings, on_result=lambda _r: None)
    try:
        engine.load_models()
        engine.profile()
        engine.start()
        probe = engine._stall_probe
        assert probe is not None and probe.threshold == pytest.approx(0.005)

        def holding_the_loop(_core: object) -> int:
            deadline = time.monotonic() + 30.0
            while probe.samples.total() < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            return probe.samples.total()

        assert engine.call(holding_the_loop, timeout=60.0) >= 2
    finally:
        engine.close()
    report = json.loads(report_path.read_text())
    assert report["stalls"] >= 1 and report["threshold_ms"] == 5.0
    assert any("holding_the_loop" in s["stack"] for s in report["stacks"])
