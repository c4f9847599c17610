"""Initial AFET (paper IV-A1) in the Engine: full-load profiling through the backend protocol (launch/poll)
(the target's stages on context 0 / stream 0 while random stages keep every other stream busy), the
isolated mode, and the AFET cache file (cpu backend, real models and worker threads)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from daris_ros.runtime.engine import Engine
from daris_ros.settings import ConfigError, SchedulerSettings, TaskSettings, validate_settings


def _settings(**kw: Any) -> SchedulerSettings:
    tasks = (TaskSettings("a", "/a", "HP", 10.0, 0.1, "resnet18", input_size=(32, 32)),
             TaskSettings("b", "/b", "LP", 10.0, 0.1, "unet", input_size=(32, 32)))
    base: dict[str, Any] = {"policy": "MPS+STR", "n_contexts": 1, "n_streams": 3, "profile_runs": 2, "tasks": tasks}
    base.update(kw)
    return SchedulerSettings(**base)


class _Recorder:
    """Wraps a real backend's launch/poll to record which (context, stream) ran what, and overlaps."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.inner_launch, self.inner_poll = backend.launch, backend.poll
        self.lock = threading.Lock()
        self.running: dict[int, tuple[int, int]] = {}  # ticket -> (context, stream)
        self.target_overlaps = 0  # target stages that found another stream busy when they were launched
        self.busy_at_target: list[set[tuple[int, int]]] = []  # per target stage: the other streams then busy
        self.targets = 0
        self.background = 0
        backend.launch, backend.poll = self.launch, self.poll

    def launch(self, c: int, s: int, model: str, stage: int, size: int, rows: Any) -> int:
        with self.lock:
            if (c, s) == (0, 0):
                self.targets += 1
                self.target_overlaps += bool(self.running)
                self.busy_at_target.append(set(self.running.values()))
            else:
                self.background += 1
            ticket = self.inner_launch(c, s, model, stage, size, rows)
            self.running[ticket] = (c, s)
        return ticket

    def poll(self) -> Any:
        finished = self.inner_poll()
        with self.lock:
            for f in finished:
                self.running.pop(f.ticket, None)
        return finished


def _profile(settings: SchedulerSettings, backend: Any = None) -> tuple[dict[str, tuple[float, ...]], _Recorder]:
    """Load, then profile with every submit recorded; the engine is closed after."""
    e = Engine(settings, on_result=lambda r: None, backend=backend)
    try:
        e.load_models()
        rec = _Recorder(e.backend)
        return e.profile(), rec
    finally:
        e.close()


def test_full_load_profiling_keeps_the_other_streams_busy_and_fills_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "afet.json"
    afet, rec = _profile(_settings(afet_profile="full_load", afet_cache=str(cache)))
    assert set(afet) == {"resnet18@32x32:", "unet@32x32:"}
    assert all(len(v) == 4 and min(v) > 0 for v in afet.values())
    # (1 warm-up + 2 runs) x 4 stages x 2 models target stages, each submitted while background work ran
    assert rec.targets == 24
    # the two other streams are fed before each target stage: both busy whenever a target stage starts (their
    # stages may span several target stages on a loaded machine, so no count of background stages is asserted)
    assert rec.busy_at_target == [{(0, 1), (0, 2)}] * rec.targets
    assert rec.target_overlaps == rec.targets and rec.background >= 2
    data = json.loads(cache.read_text())
    assert len(data) == 2 and all("|cpu|1x3|" in k and "|full_load|" in k for k in data)
    assert {tuple(v) for v in data.values()} == {tuple(v) for v in afet.values()}


def test_a_second_start_reads_the_cache_and_runs_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "afet.json"
    first = Engine(_settings(afet_profile="full_load", afet_cache=str(cache)), on_result=lambda r: None)
    try:
        first.load_models()
        afet = first.profile()
    finally:
        first.close()
    second = Engine(_settings(afet_profile="full_load", afet_cache=str(cache)), on_result=lambda r: None)
    try:
        second.load_models()
        rec = _Recorder(second.backend)
        calls = []
        inner_run_now = second.backend.run_now
        second.backend.run_now = lambda *a: calls.append(a) or inner_run_now(*a)
        assert second.profile() == afet
        assert rec.targets == rec.background == 0 and calls == []
    finally:
        second.close()
    # another mode is another key: isolated profiling does not take the full-load values
    _, rec = _profile(_settings(afet_profile="isolated", afet_cache=str(cache)))
    assert rec.targets == 0 and rec.background == 0  # isolated: run_now only, no concurrent stages
    assert len(json.loads(cache.read_text())) == 4


def test_auto_is_isolated_on_the_cpu_and_unknown_modes_are_named() -> None:
    e = Engine(_settings(), on_result=lambda r: None)
    try:
        assert e.afet_mode() == "isolated"
    finally:
        e.close()
    with pytest.raises(ConfigError) as info:
        validate_settings({"afet_profile": "fast"}, [])
    assert "afet_profile" in str(info.value) and "full_load" in str(info.value)


def test_full_load_profiling_with_worker_processes() -> None:
    """The mps backend's worker processes (CPU workers here): a worker's stage outputs live in that worker, so
    each background stream runs whole jobs (stage 0 from a frame, then its own outputs); measured on the
    H200 first as "stage input ... is not in the current worker of context 1" before that rule."""
    from daris_ros.runtime.backends.mps import MpsBackend

    afet, rec = _profile(_settings(policy="MPS", backend="mps", n_contexts=2, n_streams=1, afet_profile="full_load"),
                         MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0))
    assert all(len(v) == 4 and min(v) > 0 for v in afet.values())
    # (the mps backend's run_now, the warm-up pass, does not go through submit)
    assert rec.targets == 24 and rec.background > 0
    assert rec.busy_at_target == [{(1, 0)}] * rec.targets  # every target stage beside the other context's stage
