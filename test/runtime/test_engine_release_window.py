"""``release_window`` on the engine's path (cpu backend, real models, an injected clock the test moves): frames of
cameras that are not synchronised, arriving between two grid points, are released together at the next grid point
(one decode call, one release time, one batch per model), not each on arrival as without a window. What is
asserted is what the engine decided (the decoder's calls and the jobs' release times), not how fast it ran."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from clock_helpers import ManualClock, wait_for

from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.settings import SchedulerSettings, TaskSettings

pytestmark = [pytest.mark.slow]

ORIGIN = 100.0
PERIOD = 1.0  # (deadlines far beyond a batch's time on any CPU: batching is decided by the releases only)
WINDOW = 0.2
CAMERAS = ("a", "b", "c", "d")  # (4: a captured batch size, no padding)



class RecordingDecoder:
    """Payloads are (name, frame) pairs, decoded in the loop; records each call's names."""

    threads = 0

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def decode(self, tasks: Sequence[TaskSettings], payloads: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.calls.append([name for name, _ in payloads])
        return [frame for _, frame in payloads]



@pytest.mark.parametrize("window", [WINDOW, 0.0])
def test_unsynchronised_frames_are_released_together_at_the_next_grid_point(window: float) -> None:
    tasks = tuple(TaskSettings(name, f"/{name}", "LP", PERIOD, PERIOD, "resnet18", input_size=(32, 32))
                  for name in CAMERAS)
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                                 worker_stage_timeout=0.0, batching=True, release_trigger="frame",
                                 release_window=window)
    clock = ManualClock(ORIGIN)
    decoder = RecordingDecoder()
    results: list[JobResult] = []
    e = Engine(settings, on_result=results.append, clock=clock, decoder=decoder)
    frame = np.zeros((32, 32, 3), np.uint8)

    def iterations_after(n: int) -> Callable[[], bool]:
        start = e._loop_stats.iterations
        return lambda: e._loop_stats.iterations >= start + n

    try:
        e.load_models()
        e.profile()
        e.start(origin=ORIGIN)
        wait_for("the loop's first turns", iterations_after(3))
        for k, name in enumerate(CAMERAS):  # arrivals 100.03 .. 100.15: one window
            clock.now = ORIGIN + 0.03 + 0.04 * k
            e.offer(name, (name, frame), stamp=clock.now)
            wait_for("the loop to look", iterations_after(3))  # (it wakes at least every 2 ms of wall time)
        calls_before_grid = [list(c) for c in decoder.calls]
        clock.now = ORIGIN + WINDOW
        wait_for("every job ended", lambda: len(results) == len(CAMERAS))
    finally:
        e.close()
    assert not [r for r in results if r.error]
    release_times = sorted(r.release_time for r in results)
    if window:
        assert calls_before_grid == []  # nothing released before the grid point
        assert decoder.calls == [list(CAMERAS)]  # one burst, decoded together
        assert release_times == [pytest.approx(ORIGIN + WINDOW)] * len(CAMERAS)
        # one model, released together: every stage ran the four jobs as one batch
        assert {trace.batch for r in results for trace in r.stages} == {len(CAMERAS)}
    else:
        assert decoder.calls == [[name] for name in CAMERAS]  # each on arrival
        assert release_times == pytest.approx([ORIGIN + 0.03 + 0.04 * k for k in range(len(CAMERAS))])
