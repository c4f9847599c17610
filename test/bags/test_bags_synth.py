"""Synthetic camera streams: determinism, moving content, encodings, compression, timing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from daris_ros.bags.synth import (
    COMPRESSED_FORMATS,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    RAW_ENCODINGS,
    FrameRenderer,
    SynthConfig,
    camera_schedule,
    decode_counter,
    decode_raw,
    encode_compressed,
    encode_raw,
    generate,
)
from daris_ros.bags.typestore import get_typestore

W, H = 64, 48
LUMA = np.array([299, 587, 114], dtype=np.uint32)


def test_renderer_is_deterministic_and_seeded():
    a = FrameRenderer(W, H, camera=1, seed=5)
    b = FrameRenderer(W, H, camera=1, seed=5)
    for k in (0, 1, 17):
        np.testing.assert_array_equal(a.rgb(k), b.rgb(k))
    other_seed = FrameRenderer(W, H, camera=1, seed=6).rgb(3)
    other_camera = FrameRenderer(W, H, camera=2, seed=5).rgb(3)
    assert not np.array_equal(a.rgb(3), other_seed)
    assert not np.array_equal(a.rgb(3), other_camera)


def test_consecutive_frames_differ_and_counter_reads_back():
    r = FrameRenderer(W, H, camera=0, seed=0)
    frames = [r.rgb(k) for k in range(20)]
    for k, (f0, f1) in enumerate(zip(frames, frames[1:], strict=False)):
        changed = np.mean(np.any(f0 != f1, axis=2))
        assert changed > 0.5, f"frames {k} and {k + 1} barely differ ({changed:.2f} of pixels changed)"
    for k in (0, 1, 2, 255, 256, 4097, 65535):
        assert decode_counter(r.rgb(k)) == k
    assert decode_counter(r.rgb(65536)) == 0  # wraps at COUNTER_BITS
    assert frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8


def test_too_small_picture_rejected():
    with pytest.raises(ValueError):
        FrameRenderer(8, 8)


@pytest.mark.parametrize("encoding", sorted(RAW_ENCODINGS))
def test_raw_encoding_layout(encoding):
    rgb = FrameRenderer(W, H, seed=1).rgb(7)
    data, step = encode_raw(rgb, encoding)
    channels, depth = RAW_ENCODINGS[encoding]
    assert data.dtype == np.uint8 and data.ndim == 1
    assert step == W * channels * depth
    assert data.size == step * H
    arr = decode_raw(data, W, H, encoding, step)
    luma = ((rgb.astype(np.uint32) @ LUMA + 500) // 1000).astype(np.uint8)
    expected = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 255, np.uint8)], axis=2),
        "mono8": luma[..., None],
        "mono16": luma.astype(np.uint16)[..., None] * 257,
    }[encoding]
    np.testing.assert_array_equal(arr, expected)
    assert decode_counter(arr) == 7


def test_mono16_is_little_endian():
    rgb = np.full((H, W, 3), 200, np.uint8)
    data, _ = encode_raw(rgb, "mono16")
    assert data[0] == (200 * 257) & 0xFF and data[1] == (200 * 257) >> 8


@pytest.mark.parametrize("fmt", COMPRESSED_FORMATS)
def test_compressed_decodes_to_source(fmt):
    rgb = FrameRenderer(128, 96, seed=2).rgb(123)
    payload = encode_compressed(rgb, fmt)
    pil = PILImage.open(io.BytesIO(payload))
    assert pil.format == ("JPEG" if fmt == "jpeg" else "PNG")
    out = np.asarray(pil.convert("RGB"))
    assert out.shape == rgb.shape
    err = np.abs(out.astype(np.int32) - rgb.astype(np.int32)).mean()
    if fmt == "png":
        assert err == 0
    else:
        assert err < 8.0, f"jpeg mean abs error {err:.2f}"
    assert decode_counter(out) == 123


def test_schedule_count_jitter_and_drops():
    rate, duration = 30.0, 2.0
    base = camera_schedule(rate, duration, start_ns=0)
    assert [f.index for f in base] == list(range(60))
    assert [f.stamp_ns for f in base[:3]] == [0, 33333333, 66666667]

    jittered = camera_schedule(rate, duration, start_ns=0, jitter_ms=2.0, seed=4)
    assert len(jittered) == 60
    offsets = [j.stamp_ns - b.stamp_ns for j, b in zip(jittered, base, strict=True)]
    assert max(abs(o) for o in offsets) <= 2_000_000
    assert any(o != 0 for o in offsets)
    assert all(a.stamp_ns < b.stamp_ns for a, b in zip(jittered, jittered[1:], strict=False))
    assert camera_schedule(rate, duration, start_ns=0, jitter_ms=2.0, seed=4) == jittered

    dropped = camera_schedule(rate, duration, start_ns=0, jitter_ms=2.0, drop_prob=0.3, seed=4)
    assert 20 <= len(dropped) <= 55
    # drops do not change the jitter of the frames that remain
    by_index = {f.index: f.stamp_ns for f in jittered}
    assert all(by_index[f.index] == f.stamp_ns for f in dropped)
    # huge jitter is clamped below half a period: order is kept
    wild = camera_schedule(rate, duration, start_ns=0, jitter_ms=100.0, seed=1)
    assert all(a.stamp_ns < b.stamp_ns for a, b in zip(wild, wild[1:], strict=False))


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        camera_schedule(0.0, 1.0)
    with pytest.raises(ValueError):
        camera_schedule(10.0, 1.0, drop_prob=1.5)
    with pytest.raises(ValueError):
        SynthConfig(encoding="yuv422")
    with pytest.raises(ValueError):
        SynthConfig(cameras=2, names=("a",))


def test_generate_is_deterministic_ordered_and_counts_match():
    cfg = SynthConfig(
        cameras=3, width=32, height=24, rate=15.0, duration=1.0, jitter_ms=5.0, drop_prob=0.2, seed=9
    )
    first = list(generate(cfg))
    second = list(generate(cfg))
    assert [m.data for m in first] == [m.data for m in second]
    stamps = [m.timestamp_ns for m in first]
    assert stamps == sorted(stamps)
    counts: dict[str, int] = {}
    for m in first:
        counts[m.topic] = counts.get(m.topic, 0) + 1
    assert counts == cfg.expected_counts()
    assert sum(counts.values()) < 45  # some frames were dropped
    assert set(counts) == {f"/cameras/cam{i}/image_raw" for i in range(3)}


def test_generated_messages_decode_with_header_and_counter():
    store = get_typestore()
    cfg = SynthConfig(cameras=2, width=32, height=24, rate=10.0, duration=0.5, encoding="bgr8", seed=1)
    for m in generate(cfg, store):
        msg = store.deserialize_cdr(m.data, IMAGE_TYPE)
        assert m.msgtype == IMAGE_TYPE
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == m.timestamp_ns
        assert msg.header.frame_id == f"cam{m.camera}_optical_frame"
        assert (msg.width, msg.height, msg.encoding, msg.step) == (32, 24, "bgr8", 96)
        arr = decode_raw(msg.data, msg.width, msg.height, msg.encoding, msg.step)
        assert decode_counter(arr) == m.index


def test_compressed_config_topics_and_type():
    store = get_typestore()
    cfg = SynthConfig(cameras=1, width=32, height=24, rate=10.0, duration=0.2, encoding="jpeg", prefix="cams")
    assert cfg.topics() == ("/cams/cam0/image_raw/compressed",)
    msgs = list(generate(cfg, store))
    assert len(msgs) == 2 and msgs[0].msgtype == COMPRESSED_TYPE
    msg = store.deserialize_cdr(msgs[1].data, COMPRESSED_TYPE)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert PILImage.open(io.BytesIO(msg.data.tobytes())).size == (32, 24)
