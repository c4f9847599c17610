"""The fuzzer's frames, checked offline against the node's own checks: each malformed kind gets exactly
the reason the fuzzer expects (on receipt, or at release for ``release_only`` kinds), good frames pass."""

from __future__ import annotations

import time

import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from daris_ros.ros.conversion import (
    FrameError,
    check_stamp,
    compressed_to_rgb,
    image_to_rgb,
    validate_compressed,
    validate_image,
)
from daris_ros.tools.fuzz import FuzzConfig, expected_counts, plan
from daris_ros.tools.fuzz_frames import IMAGE, FrameFactory, FuzzLimits

LIMITS = FuzzLimits(max_pixels=100_000, stamp_future_tolerance=1.0, stamp_past_tolerance=5.0)


def _receipt_reason(f, now_ns: int) -> str | None:
    """What the node does on receipt (scheduler_node._checked_frame), with the fuzzer's stamp applied."""
    cls = Image if f.input_type == IMAGE else CompressedImage
    try:
        if f.raw is not None:
            try:
                deserialize_message(f.raw, cls)
            except Exception as exc:  # noqa: BLE001
                raise FrameError("undecodable", str(exc)) from exc
        msg = f.msg
        (validate_image if f.input_type == IMAGE else validate_compressed)(msg, LIMITS.max_pixels)
        stamp_ns = 0 if f.stamp_offset is None else max(1, now_ns + int(f.stamp_offset * 1e9))
        check_stamp(stamp_ns // 10**9, stamp_ns % 10**9, now_ns, LIMITS.stamp_future_tolerance,
                    LIMITS.stamp_past_tolerance)
    except FrameError as exc:
        return exc.reason
    return None


def _release_reason(f) -> str | None:
    try:
        (image_to_rgb if f.input_type == IMAGE else compressed_to_rgb)(f.msg, LIMITS.max_pixels)
    except FrameError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_kind_gets_its_reason(seed):
    factory = FrameFactory(seed, LIMITS)
    now_ns = time.time_ns()
    for name, make in factory.all_kinds().items():
        for _ in range(20):
            f = make()
            assert f.kind == name
            got = _receipt_reason(f, now_ns)
            if f.release_only:
                assert got is None, f"{name}: found on receipt ({got}), expected only at release"
                assert _release_reason(f) == f.reason, name
            else:
                assert got == f.reason, f"{name}: node reason {got!r}, fuzzer expects {f.reason!r}"


def test_good_frames_pass_and_convert():
    factory = FrameFactory(5, LIMITS)
    now_ns = time.time_ns()
    for t in ("image", "compressed"):
        for _ in range(30):
            f = factory.good(t)
            assert _receipt_reason(f, now_ns) is None
            assert _release_reason(f) is None


def test_plan_is_seeded_and_covers_every_kind():
    cfg = FuzzConfig(image_topic="/i", image_task="i", compressed_topic="/c", compressed_task="c", count=300)
    a, b = plan(cfg), plan(cfg)
    assert [f.kind for f in a] == [f.kind for f in b]
    assert sum(f.reason is not None for f in a) == 300
    kinds = {f.kind for f in a}
    assert set(FrameFactory(0, LIMITS).all_kinds()) <= kinds
    exp = expected_counts(a)
    assert set(exp) == {"image", "compressed"}
    assert sum(sum(e["dropped"].values()) for e in exp.values()) == 300
    assert all(e["frame_id_changes"] > 0 for e in exp.values())


def test_stamp_checks():
    now = 1_800_000_000 * 10**9
    check_stamp(now // 10**9, 0, now, 1.0, 5.0)  # on time
    with pytest.raises(FrameError, match="zero") as e:
        check_stamp(0, 0, now, 1.0, 5.0)
    assert e.value.reason == "zero_stamp"
    with pytest.raises(FrameError) as e:
        check_stamp(now // 10**9 + 2, 0, now, 1.0, 5.0)
    assert e.value.reason == "stamp_future"
    with pytest.raises(FrameError) as e:
        check_stamp(now // 10**9 - 6, 0, now, 1.0, 5.0)
    assert e.value.reason == "stamp_past"
    check_stamp(now // 10**9 + 10**6, 0, now, 0.0, 0.0)  # tolerance 0: no check
    check_stamp(12, 0, 0, 1.0, 5.0)  # sim time before the first /clock: no range check
