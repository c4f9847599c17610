"""The engine's decode pool (daris_ros.runtime.decode_queue): HP parts before waiting LP parts, frames past their
skip time left undecoded (LATE) and counted, parts handed back per priority in submission order. The decode
function is a stand-in that records what it was given and blocks where the test says: the order asserted is the
pool's decision, not a timing."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from daris_ros.runtime.decode_queue import HP_FIRST, LATE, LP_AFTER, DecodePart, DecodeQueue, skip_time
from daris_ros.runtime.inbox import FrameItem

WAIT = 30.0  # generous: a loaded CI machine; nothing here depends on it except as a hang guard


class RecordingDecoder:
    """Decodes payload p into ("frame", p); the first call blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, tasks: Sequence[Any], payloads: Sequence[Any]) -> list[Any]:
        self.calls.append(list(payloads))
        self.threads.add(threading.current_thread().name)
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(WAIT)
        return [("frame", p) for p in payloads]


def part(priority: int, *payloads: str, released_at: float = 0.0, skip_times: list[float] | None = None
         ) -> DecodePart:
    taken = [(f"task_{p}", released_at, FrameItem(p, released_at)) for p in payloads]
    return DecodePart(priority, taken, [object()] * len(payloads), released_at,
                      skip_times if skip_times is not None else [math.inf] * len(payloads))


def wait_done(queue: DecodeQueue, n: int) -> list[DecodePart]:
    done: list[DecodePart] = []
    event = threading.Event()
    deadline = threading.Timer(WAIT, event.set)
    deadline.start()
    try:
        while len(done) < n and not event.is_set():
            done += queue.take_done()
            event.wait(0.005)
    finally:
        deadline.cancel()
    assert len(done) == n, f"{len(done)} of {n} parts came back"
    return done


def test_an_hp_part_is_decoded_before_lp_parts_submitted_earlier():
    decoder = RecordingDecoder()
    queue = DecodeQueue(1, decoder, clock=lambda: 0.0)
    try:
        queue.submit(part(LP_AFTER, "lp0"))
        assert decoder.started.wait(WAIT)  # the one thread is busy with lp0: the rest wait in the queue
        queue.submit(part(LP_AFTER, "lp1"))
        queue.submit(part(LP_AFTER, "lp2"))
        queue.submit(part(HP_FIRST, "hp0", "hp1"))
        assert queue.pending_frames() == 5
        decoder.release.set()
        done = wait_done(queue, 4)
    finally:
        queue.close()
    assert decoder.calls == [["lp0"], ["hp0", "hp1"], ["lp1"], ["lp2"]]
    # the LP parts handed back in the order submitted; each frame decoded
    assert [[item.payload for _, _, item in p.taken] for p in done if p.priority == LP_AFTER] == [
        ["lp0"], ["lp1"], ["lp2"]]
    by_payload = {item.payload: frame for p in done for (_, _, item), frame in zip(p.taken, p.frames, strict=True)}
    assert by_payload == {p: ("frame", p) for p in ("lp0", "lp1", "lp2", "hp0", "hp1")}
    assert queue.pending_frames() == 0 and not queue


def test_parts_of_one_priority_come_back_in_submission_order():
    decoder = RecordingDecoder()
    queue = DecodeQueue(2, decoder, clock=lambda: 0.0)
    try:
        queue.submit(part(LP_AFTER, "first"))  # blocks its thread
        assert decoder.started.wait(WAIT)
        queue.submit(part(LP_AFTER, "second"))  # the other thread decodes it while "first" blocks
        queue.submit(part(HP_FIRST, "hp"))
        event = threading.Event()
        for _ in range(int(WAIT / 0.005)):
            if len(decoder.calls) == 3:
                break
            event.wait(0.005)
        assert len(decoder.calls) == 3
        event.wait(0.05)
        early = queue.take_done()
        # "second" is done but waits for "first" (a task's releases reach the core in order); HP is not held
        assert [[item.payload for _, _, item in p.taken] for p in early] == [["hp"]]
        decoder.release.set()
        rest = wait_done(queue, 2)
    finally:
        queue.close()
    assert [[item.payload for _, _, item in p.taken] for p in rest] == [["first"], ["second"]]


def test_frames_past_their_skip_time_are_left_undecoded_and_counted():
    now = [10.0]
    decoder = RecordingDecoder()
    decoder.started.set()
    decoder.calls.append([])  # (not the first call: never blocks)
    queue = DecodeQueue(1, decoder, clock=lambda: now[0])
    try:
        queue.submit(part(LP_AFTER, "late", "on_time", "also_late", skip_times=[9.0, 10.5, 10.0]))
        queue.submit(part(HP_FIRST, "all_late", skip_times=[1.0]))
        done = wait_done(queue, 2)
    finally:
        queue.close()
    hp, lp = done
    assert hp.frames == [LATE] and hp.late == 1
    assert lp.frames == [LATE, ("frame", "on_time"), LATE] and lp.late == 2
    assert decoder.calls[1:] == [["on_time"]]  # the all-late HP part called nothing
    assert queue.frames_late == 3


def test_skip_time_is_release_plus_skip_late_deadlines_or_never():
    assert skip_time(2.0, 2.0, 0.1) == pytest.approx(2.2)
    assert skip_time(2.0, 0.0, 0.1) == math.inf


def test_run_in_each_thread_runs_once_in_every_thread_before_waiting_parts():
    names: list[str] = []
    lock = threading.Lock()

    def warm_up() -> None:
        with lock:
            names.append(threading.current_thread().name)
    queue = DecodeQueue(3, RecordingDecoder(), clock=lambda: 0.0, name="t-decode")
    try:
        queue.run_in_each_thread(warm_up, timeout=WAIT)
    finally:
        queue.close()
    assert sorted(names) == ["t-decode_0", "t-decode_1", "t-decode_2"]


def test_close_leaves_waiting_parts_undecoded():
    decoder = RecordingDecoder()
    queue = DecodeQueue(1, decoder, clock=lambda: 0.0)
    queue.submit(part(LP_AFTER, "running"))
    assert decoder.started.wait(WAIT)
    queue.submit(part(LP_AFTER, "waiting"))
    queue.close()
    decoder.release.set()
    event = threading.Event()
    event.wait(0.1)
    assert decoder.calls == [["running"]]


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        DecodeQueue(0, RecordingDecoder(), clock=lambda: 0.0)
