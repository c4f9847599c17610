"""The engine's inbox: every frame accounted (frames == taken + superseded + dropped at arrival + pending,
taken == released + dropped at release), intake lag and frame age, and the new-frame notification."""

from __future__ import annotations

from daris_ros.runtime.inbox import FrameInbox, FrameItem


def test_every_frame_is_accounted_and_the_age_at_release_is_measured() -> None:
    fresh: list[str] = []
    inbox = FrameInbox(on_new=fresh.append)
    inbox.add_task("cam")
    inbox.offer("cam", FrameItem("f0", receive_time=10.010, stamp=10.000))
    inbox.offer("cam", FrameItem("f1", receive_time=10.045, stamp=10.033))  # f0 superseded
    item = inbox.take("cam")
    assert item is not None and item.payload == "f1"
    inbox.released("cam", 10.050, item.stamp, period=0.033)
    assert inbox.take("cam") is None  # nothing new: a stale period
    inbox.drop("cam", "bad_step")  # malformed at arrival
    inbox.offer("cam", FrameItem("f2", receive_time=10.08, stamp=10.066))
    inbox.drop("cam", "corrupt_compressed", at_release=inbox.take("cam") is not None)
    inbox.offer("cam", FrameItem("f3", receive_time=10.12, stamp=10.05))  # waits (pending)
    inbox.released("cam", 10.13, 10.05, period=0.033)
    c, pending = inbox.snapshot()["cam"]
    assert (c.frames, c.taken, c.superseded, c.stale, pending) == (5, 2, 1, 1, 1)
    assert c.dropped == {"bad_step": 1, "corrupt_compressed": 1} and c.dropped_at_release == 1
    released = c.taken - c.dropped_at_release
    assert c.frames == released + c.superseded + c.dropped_total + pending
    assert c.lag_count == 4 and abs(c.lag_max - 0.07) < 1e-9
    assert c.age_count == 2 and abs(c.age_max - 0.08) < 1e-9 and c.age_over_period == 1
    assert fresh == ["cam"] * 4


def test_a_sticky_frame_is_taken_at_every_release_and_never_superseded() -> None:
    fresh: list[str] = []
    inbox = FrameInbox(on_new=fresh.append)
    inbox.offer("syn", FrameItem("frame", receive_time=0.0), sticky=True)
    assert [inbox.take("syn") is not None for _ in range(3)] == [True] * 3
    c, pending = inbox.snapshot()["syn"]
    assert (c.frames, c.taken, c.superseded, c.stale, pending) == (1, 3, 0, 0, 0) and fresh == []
    inbox.clear("syn")
    assert inbox.take("syn") is None
