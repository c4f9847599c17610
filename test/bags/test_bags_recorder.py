"""BagRecorder: publish N messages over DDS, record them, read N back with the right types."""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from daris_ros.bags import recorder as recorder_module
from daris_ros.bags.ament_types import learn_type
from daris_ros.bags.info import daris_info, topic_counts
from daris_ros.bags.player import BagPlayer, PlayOptions
from daris_ros.bags.recorder import BagRecorder
from daris_ros.bags.typestore import get_typestore, type_hash

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _image(i: int) -> Image:
    msg = Image(height=2, width=3, encoding="mono8", is_bigendian=0, step=3)
    msg.header.stamp.sec = 100 + i
    msg.header.frame_id = "cam"
    msg.data = bytes([i % 256] * 6)
    return msg


def _diag(i: int) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp.sec = 200 + i
    msg.status = [
        DiagnosticStatus(
            level=DiagnosticStatus.WARN,
            name="daris",
            message=f"tick {i}",
            values=[KeyValue(key="i", value=str(i))],
        )
    ]
    return msg


def _wait_matched(pubs, wait_until, count=1):
    assert wait_until(lambda: all(p.get_subscription_count() >= count for p in pubs), timeout=5.0)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_round_trip(ros, tmp_path, wait_until, storage):
    n = 25
    pub_node = ros.node("pub", spin=False)
    img_pub = pub_node.create_publisher(Image, "/rec/image", RELIABLE)
    diag_pub = pub_node.create_publisher(DiagnosticArray, "/rec/diagnostics", RELIABLE)
    rec_node = ros.node("rec")
    recorder = BagRecorder(
        rec_node,
        tmp_path / "out",
        {"/rec/image": "sensor_msgs/msg/Image", "/rec/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"},
        storage=storage,
    ).start()
    _wait_matched([img_pub, diag_pub], wait_until)
    for i in range(n):
        img_pub.publish(_image(i))
        diag_pub.publish(_diag(i))
    assert wait_until(lambda: sum(recorder.counts.values()) >= 2 * n, timeout=5.0)
    stats = recorder.stop()
    assert stats.counts == {"/rec/image": n, "/rec/diagnostics": n} and stats.missing == []
    assert recorder.stop().counts == stats.counts  # idempotent

    store = get_typestore()
    with Reader(tmp_path / "out") as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            "/rec/image": "sensor_msgs/msg/Image",
            "/rec/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
        }
        for conn in reader.connections:
            assert conn.digest == type_hash(conn.msgtype)
            # the publishers' offered QoS (as discovered) is kept, like rosbag2 does
            assert (
                conn.ext.offered_qos_profiles
                and conn.ext.offered_qos_profiles[0].reliability.name == "RELIABLE"
            )
        images, diags, stamps = [], [], []
        for conn, ts, raw in reader.messages():
            stamps.append(ts)
            if conn.topic == "/rec/image":
                images.append(deserialize_message(bytes(raw), Image))
            else:
                diags.append(store.deserialize_cdr(raw, conn.msgtype))
    assert [m.header.stamp.sec for m in images] == [100 + i for i in range(n)]
    assert bytes(images[7].data) == bytes([7] * 6)
    assert [d.status[0].message for d in diags] == [f"tick {i}" for i in range(n)]
    assert stamps == sorted(stamps)
    info = daris_info(tmp_path / "out", "recorder")
    assert topic_counts(tmp_path / "out") == {"/rec/image": n, "/rec/diagnostics": n}
    assert (
        info["topics"] == ["/rec/diagnostics", "/rec/image"]
        and info["start_ns"] <= stamps[0] <= info["stop_ns"]
    )
    ros.destroy(rec_node)
    ros.destroy(pub_node)


def test_record_discovers_type_and_best_effort(ros, tmp_path, wait_until):
    """A topic given without a type is subscribed once a publisher shows up; a best-effort publisher
    gets a best-effort subscription (adapted to the offer, like rosbag2)."""
    rec_node = ros.node("rec")
    recorder = BagRecorder(rec_node, tmp_path / "out", ["/rec/late"], timestamp="receive").start()
    assert recorder.subscribed == []
    pub_node = ros.node("pub", spin=False)
    pub = pub_node.create_publisher(
        String, "/rec/late", QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    )
    assert wait_until(lambda: recorder.subscribed == ["/rec/late"], timeout=5.0)
    _wait_matched([pub], wait_until)
    t0 = time.time_ns()
    for i in range(10):
        pub.publish(String(data=f"m{i}"))
        time.sleep(0.005)
    wait_until(lambda: recorder.counts.get("/rec/late", 0) >= 10, timeout=3.0)
    stats = recorder.stop()
    assert stats.types == {"/rec/late": "std_msgs/msg/String"}
    assert stats.counts["/rec/late"] >= 8  # best effort on loopback: allow a rare loss
    with Reader(tmp_path / "out") as reader:
        (conn,) = reader.connections
        assert conn.ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"
        stamps = [ts for _, ts, _ in reader.messages()]
    assert all(t0 <= ts <= time.time_ns() for ts in stamps)  # receive timestamps are wall clock
    ros.destroy(rec_node)
    ros.destroy(pub_node)


def test_record_missing_topic_reported(ros, tmp_path):
    rec_node = ros.node("rec")
    recorder = BagRecorder(rec_node, tmp_path / "out", ["/rec/nobody"]).start()
    stats = recorder.stop()
    assert stats.missing == ["/rec/nobody"] and stats.message_count == 0
    with Reader(tmp_path / "out") as reader:
        assert reader.message_count == 0
    ros.destroy(rec_node)


def test_replay_then_record_in_sim_time(ros, small_bag, tmp_path, wait_until):
    """Player (fast, /clock) -> recorder with use_sim_time: the output bag holds every input message
    with log times on the bag's timeline, i.e. reproducible from run to run."""
    with Reader(small_bag) as reader:
        bag = [(c.topic, ts) for c, ts, _ in reader.messages()]
    rec_node = ros.node("rec_sim", parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
    clocks: list[int] = []
    rec_node.create_subscription(Clock, "/clock", lambda m: clocks.append(m.clock.sec), RELIABLE)
    topics = sorted({t for t, _ in bag})
    recorder = BagRecorder(
        rec_node, tmp_path / "out", {t: "sensor_msgs/msg/Image" for t in topics}, qos=QoSProfile(depth=1000)
    ).start()
    play_node = ros.node("player", spin=False)
    with BagPlayer(
        play_node,
        small_bag,
        PlayOptions(fast=True, clock=True, wait_for_subscribers=1, wait_for_clock_subscribers=1),
    ) as player:
        stats = player.play()
    assert wait_until(lambda: sum(recorder.counts.values()) >= len(bag), timeout=5.0)
    out = recorder.stop()
    assert stats.message_count == len(bag) and out.message_count == len(bag)
    with Reader(tmp_path / "out") as reader:
        logged = [ts for _, ts, _ in reader.messages()]
    start, end = bag[0][1], bag[-1][1]
    # sim time: every log time lies on the bag's timeline (not wall clock)
    assert all(start <= ts <= end for ts in logged)
    ros.destroy(play_node)
    ros.destroy(rec_node)


def test_accept_filter_keeps_one_publisher(ros, tmp_path, wait_until):
    """``accept``: messages it refuses (here: another publisher's, told apart by the publisher GID of the
    message info) are not written, only counted in ``ignored``."""
    n = 10
    mine = ros.node("mine", spin=False).create_publisher(String, "/rec/filtered", RELIABLE)
    other = ros.node("other", spin=False).create_publisher(String, "/rec/filtered", RELIABLE)
    seen: list[bytes] = []

    def accept(data: bytes, info) -> bool:
        gid = bytes(info["publisher_gid"]["data"])
        seen.append(gid)
        return deserialize_message(data, String).data.startswith("mine")

    recorder = BagRecorder(ros.node("rec_filter"), tmp_path / "out", {"/rec/filtered": "std_msgs/msg/String"},
                           accept={"/rec/filtered": accept}).start()
    _wait_matched([mine, other], wait_until)
    for i in range(n):
        mine.publish(String(data=f"mine {i}"))
        other.publish(String(data=f"other {i}"))
    assert wait_until(lambda: recorder.counts.get("/rec/filtered", 0) >= n
                      and recorder.ignored.get("/rec/filtered", 0) >= n, timeout=5.0)
    stats = recorder.stop()
    assert stats.counts == {"/rec/filtered": n} and recorder.ignored == {"/rec/filtered": n}
    assert len(set(seen)) == 2  # the message info names the publisher
    with Reader(tmp_path / "out") as reader:
        texts = [deserialize_message(raw, String).data for _c, _t, raw in reader.messages()]
    assert texts == [f"mine {i}" for i in range(n)]


def test_a_type_the_store_lacks_is_learnt_from_the_installed_msg_files(ros, tmp_path, wait_until, monkeypatch):
    """A recorder whose store knows only the standard types records daris_ros/msg/InferenceResult (as it would
    vision_msgs on a vehicle) from the package's installed .msg files; with nothing installed the topic is
    listed as untypable with the reason, not silently left out."""
    from daris_ros.bags.typestore import make_typestore
    from daris_ros.msg import InferenceResult

    pub_node = ros.node("pub", spin=False)
    pub = pub_node.create_publisher(InferenceResult, "/rec/results", RELIABLE)
    rec_node = ros.node("rec")
    bare = make_typestore(include_package=False)
    assert "daris_ros/msg/InferenceResult" not in bare.fielddefs
    recorder = BagRecorder(rec_node, tmp_path / "out", ["/rec/results"], store=bare).start()
    assert wait_until(lambda: recorder.subscribed == ["/rec/results"], timeout=5.0), recorder.untypable
    _wait_matched([pub], wait_until)
    for i in range(5):
        pub.publish(InferenceResult(task="cam", job_id=i, priority=InferenceResult.PRIORITY_HIGH, met=True))
    assert wait_until(lambda: recorder.counts.get("/rec/results", 0) >= 5, timeout=5.0)
    assert recorder.stop().counts == {"/rec/results": 5} and recorder.untypable == {}

    full = get_typestore()
    with Reader(tmp_path / "out") as reader:
        (conn,) = reader.connections
        assert conn.msgtype == "daris_ros/msg/InferenceResult" and conn.digest == type_hash(conn.msgtype)
        jobs = [full.deserialize_cdr(raw, conn.msgtype).job_id for _, _, raw in reader.messages()]
    assert jobs == list(range(5))

    explicit = BagRecorder(rec_node, tmp_path / "out3", {"/rec/stages": "daris_ros/msg/StageRecord"},
                           store=make_typestore(include_package=False))  # (a type named up front: learnt too)
    assert "daris_ros/msg/StageRecord" in explicit.store.fielddefs
    with pytest.raises(KeyError, match=r"no definition of message type nopkg/msg/Thing: looked for "
                                       r"nopkg/msg/Thing\.msg in"):
        BagRecorder(rec_node, tmp_path / "out4", {"/rec/thing": "nopkg/msg/Thing"})

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "nothing_installed"))
    lookups: list[str] = []

    def counted_learn_type(store, msgtype, prefixes=None):
        lookups.append(msgtype)
        return learn_type(store, msgtype, prefixes)

    monkeypatch.setattr(recorder_module, "learn_type", counted_learn_type)
    lost = BagRecorder(rec_node, tmp_path / "out2", ["/rec/results"],
                       store=make_typestore(include_package=False)).start()
    assert wait_until(lambda: "/rec/results" in lost.untypable, timeout=5.0)
    assert "daris_ros/msg/InferenceResult" in lost.untypable["/rec/results"] and lost.subscribed == []
    time.sleep(0.6)  # three more discovery ticks (0.2 s): the topic stays untypable, its files are not read again
    assert lookups == ["daris_ros/msg/InferenceResult"] and "/rec/results" in lost.untypable
    lost.stop()
    ros.destroy(rec_node)
    ros.destroy(pub_node)
