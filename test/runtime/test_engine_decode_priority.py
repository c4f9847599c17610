"""The decode pool on the engine's path (cpu backend, real models): HP frames of a burst are decoded before the LP
frames waiting in the pool, and frames still waiting at their skip time (``skip_late``) are released undecoded,
their jobs skipped by the core and counted, so nothing is lost uncounted.

The engine runs on an injected clock the test moves; the decoder (one thread) blocks its first call until the test
lets it go, so the pool's backlog is made by the test, not by the machine's speed. What is asserted is what the
engine decided: the order of decoding, which frames were decoded, and the core's accounting."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from clock_helpers import WAIT_S, ManualClock, wait_for

from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

PERIOD = 0.1
ORIGIN = 100.0



class BlockingDecoder:
    """Payloads are (name, frame) pairs; one thread; the first call blocks until ``release``; records each call's
    names in order."""

    threads = 1

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.blocked = threading.Event()
        self.release = threading.Event()

    def decode(self, tasks: Sequence[TaskSettings], payloads: Sequence[Any]) -> list[Any]:
        self.calls.append([name for name, _ in payloads])
        if len(self.calls) == 1:
            self.blocked.set()
            assert self.release.wait(WAIT_S)
        return [frame for _, frame in payloads]



def test_hp_frames_first_and_frames_past_their_skip_time_released_undecoded() -> None:
    tasks = (TaskSettings("hp", "/hp", "HP", PERIOD, PERIOD, "resnet18", input_size=(32, 32)),
             *(TaskSettings(f"lp{i}", f"/lp{i}", "LP", PERIOD, PERIOD, "resnet18", input_size=(32, 32))
               for i in range(3)))
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 worker_stage_timeout=0.0, skip_late=2.0, release_trigger="clock")
    clock = ManualClock(ORIGIN)
    decoder = BlockingDecoder()
    results: list[JobResult] = []
    e = Engine(settings, on_result=results.append, clock=clock, decoder=decoder)
    frame = np.zeros((32, 32, 3), np.uint8)
    names = [t.name for t in tasks]

    def offer_all(burst: int) -> None:
        for name in names:
            e.offer(name, (f"{name}#{burst}", frame), stamp=clock.now)

    def taken(burst: int) -> bool:
        snapshot = e.inbox.snapshot()
        return all(snapshot[name][0].taken == burst and not snapshot[name][1] for name in names)

    try:
        e.load_models()
        e.profile()
        offer_all(1)  # (before the start: the first release, at the origin, takes them)
        e.start(origin=ORIGIN)
        wait_for("burst 1 taken", lambda: taken(1))  # at 100.0: skip time 100.2
        assert decoder.blocked.wait(WAIT_S)
        clock.now = ORIGIN + PERIOD
        offer_all(2)
        wait_for("burst 2 taken", lambda: taken(2))  # at 100.1: skip time 100.3, queued behind burst 1's LP part
        clock.now = ORIGIN + 2.5 * PERIOD  # past burst 1's skip time, not burst 2's
        decoder.release.set()
        wait_for("every job ended", lambda: e.call(lambda core: all(
            s.completed + s.skipped + s.rejected == s.released == 2 for s in core.task_stats().values())))
        stats = e.call(lambda core: core.task_stats())
        undecoded = e.counters.frames_undecoded
    finally:
        e.close()

    # one thread: burst 1's HP part (it came first), then burst 2's HP part before burst 1's LP part, which was past
    # its skip time when the thread took it (left undecoded), then burst 2's LP part
    assert decoder.calls == [["hp#1"], ["hp#2"], ["lp0#2", "lp1#2", "lp2#2"]]
    assert undecoded == 3
    # the core counted every release: burst 1's jobs were skipped unstarted (HP: decoded, but the dispatch after it
    # came at 100.25, past its skip time; LP: undecoded), burst 2's ran
    assert stats["hp"].skipped == 1 and stats["hp"].completed == 1
    for name in ("lp0", "lp1", "lp2"):
        s = stats[name]
        assert s.released == 2 and s.skipped == s.admitted - s.completed
        assert s.completed <= 1  # burst 1's frame never ran
    ran = sorted((r.task, r.job_id) for r in results)
    assert ("hp", 1) in ran and ("hp", 0) not in ran
    assert not [r for r in results if r.error]
    frames = e.inbox.snapshot()
    for name in names:
        counters = frames[name][0]
        assert counters.taken == 2 and counters.dropped_at_release == 0  # undecoded is not dropped: the core decides
