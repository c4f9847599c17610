"""The engine's release clock (daris_ros/runtime/release_clock.py) on an injected time line: clock releases of a
rig, a stalled loop's skipped instants, and frame-triggered releases (jitter, a faster camera, a silent one)."""

from __future__ import annotations

import pytest

from daris_ros.runtime.release_clock import ReleaseClock


def _due(rc: ReleaseClock, now: float) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    rc.due(now, out)
    return out


def test_clock_releases_every_task_of_a_period_together_and_reports_a_stall_as_skipped() -> None:
    rc = ReleaseClock(10.0)
    rc.add("a", 0.1)
    rc.add("b", 0.2)
    assert _due(rc, 9.99) == []
    assert sorted(_due(rc, 10.0)) == [("a", 10.0, 0), ("b", 10.0, 0)]
    assert _due(rc, 10.1) == [("a", pytest.approx(10.1), 0)]
    assert sorted(_due(rc, 10.2)) == [("a", pytest.approx(10.2), 0), ("b", pytest.approx(10.2), 0)]
    # the loop stalls for 0.35 s: a is released once, at its latest due instant, and its 3 passed instants counted
    (a,) = [d for d in _due(rc, 10.65) if d[0] == "a"]
    assert a[1] == pytest.approx(10.6) and a[2] == 3
    assert rc.next_time() == pytest.approx(10.7)


def test_frame_trigger_releases_jittered_frames_on_arrival_and_never_faster_than_the_period() -> None:
    rc = ReleaseClock(0.0)
    rc.add("cam", 1.0, 0.0, on_frame=True, slack=0.25)
    released = []
    for arrival in (0.0, 1.02, 1.98, 3.1, 3.9, 5.0):  # a 1 Hz camera with +-0.1 s of jitter
        assert rc.may_release("cam", arrival), arrival
        rc.released("cam", arrival)
        released.append(arrival)
    assert released == [0.0, 1.02, 1.98, 3.1, 3.9, 5.0]  # every frame released when it came
    fast = ReleaseClock(0.0)
    fast.add("cam", 1.0, 0.0, on_frame=True, slack=0.25)
    taken = []
    for k in range(40):  # a 4 Hz camera: the 1 Hz task takes one frame a period (the first gap uses the slack)
        t = k * 0.25
        if fast.may_release("cam", t):
            fast.released("cam", t)
            taken.append(t)
    assert taken == [0.0] + [k - 0.25 for k in range(1, 11)]  # 11 releases in 10 s: W / T + 1


def test_frame_trigger_checks_release_an_early_frame_at_its_allowed_time_and_count_silent_periods() -> None:
    rc = ReleaseClock(0.0)
    rc.add("cam", 1.0, 0.0, on_frame=True, slack=0.25)
    assert _due(rc, 0.0) == [("cam", 0.0, -1)]  # a check: the caller releases it if a frame is there
    rc.released("cam", 0.0)
    assert not rc.may_release("cam", 0.5)  # a frame 0.5 s after the release waits...
    assert _due(rc, 0.75) == [("cam", 0.75, -1)]  # ...for the check at its allowed time
    assert not rc.stale_check("cam", 0.75)  # no frame at the allowed time: not yet a stale period
    assert _due(rc, 1.75) == [("cam", 1.75, -1)] and rc.stale_check("cam", 1.75)  # a whole period without a frame
    assert _due(rc, 2.75) == [("cam", 2.75, -1)] and rc.stale_check("cam", 2.75)
    rc.released("cam", 3.0)  # the camera is back
    assert _due(rc, 3.74) == [] and rc.next_time() == pytest.approx(3.75)


def test_rebase_after_a_clock_jump() -> None:
    rc = ReleaseClock(0.0)
    rc.add("a", 0.2)
    rc.add("f", 0.2, on_frame=True)
    rc.rebase(1000.0)  # /clock started
    assert sorted(_due(rc, 1000.0)) == [("a", 1000.0, 0), ("f", 1000.0, -1)]


def test_release_window_puts_frame_releases_and_checks_on_one_grid() -> None:
    rc = ReleaseClock(0.0, window=0.02)
    rc.add("cam", 0.1, 0.0, on_frame=True, slack=0.25)
    assert rc.window == 0.02
    assert rc.on_grid(0.001) == pytest.approx(0.02)  # a frame that arrives between grid points waits for the next
    assert rc.on_grid(0.04) == pytest.approx(0.04)  # one that arrives on a grid point does not wait
    assert rc.on_grid(0.0401) == pytest.approx(0.06)
    assert _due(rc, 0.0) == [("cam", 0.0, -1)]
    rc.released("cam", 0.02)  # allowed again at 0.12 - 0.025 = 0.095: its check is at the grid point after, 0.1
    assert rc.next_time() == pytest.approx(0.1)
    assert not rc.may_release("cam", 0.08)
    assert _due(rc, 0.1) == [("cam", pytest.approx(0.1), -1)] and rc.may_release("cam", 0.1)
    # no frame at the check: the next check a period on, moved to the grid (0.2 is on it)
    assert rc.next_time() == pytest.approx(0.2)
    assert ReleaseClock(0.0).on_grid(0.0123) == 0.0123  # no window: on arrival
    with pytest.raises(ValueError, match="window"):
        ReleaseClock(0.0, window=-0.01)


def _grid_release_delays(count_from_arrival: bool) -> list[float]:
    """A 30 Hz camera on a 16 ms release grid, released the way the engine does it: at the grid point after the
    frame's arrival when allowed then, else at its check (on the grid too). Returns each frame's release delay."""
    period, window = 1 / 30, 0.016
    rc = ReleaseClock(0.0, window=window)
    rc.add("cam", period, 0.0, on_frame=True, slack=0.25)
    delays = []
    for k in range(300):
        arrival = 0.005 + k * period
        looked_at = rc.on_grid(arrival)
        release = looked_at if rc.may_release("cam", looked_at) else max(looked_at, rc.next_time())
        rc.released("cam", release, arrival if count_from_arrival else None)
        delays.append(release - arrival)
    return delays


def test_release_window_delays_do_not_add_up_from_frame_to_frame() -> None:
    delays = _grid_release_delays(count_from_arrival=True)
    assert max(delays) < 0.016 + 1e-9  # at most the window: each frame released before the next one comes
    # counted from the release instead (what the engine did before): the grid's delays add up until frames wait
    # longer than a period, i.e. are superseded unreleased
    assert max(_grid_release_delays(count_from_arrival=False)) > 1 / 30
