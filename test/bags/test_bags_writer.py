"""Bags written by the tool: read back with rosbags, metadata.yaml valid for rosbag2, type hashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores
from rosbags.typesys import get_typestore as rosbags_typestore
from sensor_msgs.msg import Image

from daris_ros.bags.qos import RELIABLE_QOS, make_qos, write_qos_overrides
from daris_ros.bags.synth import SynthConfig, SynthMessage, decode_counter, decode_raw
from daris_ros.bags.typestore import (
    DARIS_TYPES,
    KILTED_STORE,
    find_msg_dir,
    get_typestore,
    make_typestore,
    type_hash,
)
from daris_ros.bags.writer import BagWriter, write_bag, write_synthetic_bag

REPO = Path(__file__).resolve().parents[2]
CFG = SynthConfig(
    cameras=3, width=32, height=24, rate=25.0, duration=1.2, jitter_ms=4.0, drop_prob=0.15, seed=11
)

#: what rosbag2's YAML decoder (rosbag2_storage/yaml.hpp, metadata v9) reads unconditionally
REQUIRED_TOP = {
    "version",
    "storage_identifier",
    "duration",
    "starting_time",
    "message_count",
    "topics_with_message_count",
    "relative_file_paths",
    "compression_format",
    "compression_mode",
    "files",
    "custom_data",
    "ros_distro",
}
REQUIRED_TOPIC = {"name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash"}
REQUIRED_QOS = {
    "history",
    "depth",
    "reliability",
    "durability",
    "deadline",
    "lifespan",
    "liveliness",
    "liveliness_lease_duration",
    "avoid_ros_namespace_conventions",
}


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp(f"w_{request.param}") / "cams"
    write_synthetic_bag(path, CFG, storage=request.param)
    return path, request.param


def test_reads_back_with_counts_types_and_order(bag):
    path, storage = bag
    expected = CFG.expected_counts()
    assert sum(expected.values()) < 3 * 30  # drops happened
    store = get_typestore()
    with Reader(path) as reader:
        assert reader.message_count == sum(expected.values())
        assert {c.topic: c.msgcount for c in reader.connections} == expected
        assert {c.msgtype for c in reader.connections} == {"sensor_msgs/msg/Image"}
        stamps = []
        counts: dict[str, int] = {}
        for conn, ts, raw in reader.messages():
            stamps.append(ts)
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            msg = store.deserialize_cdr(raw, conn.msgtype)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == ts
        assert counts == expected
        assert stamps == sorted(stamps)
        assert reader.start_time == CFG.start_ns
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert (path / f"{path.name}{suffix}").is_file()


def test_metadata_yaml_is_valid_rosbag2_v9(bag):
    path, storage = bag
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert REQUIRED_TOP <= set(meta)
    assert meta["version"] == 9
    assert meta["storage_identifier"] == storage
    assert meta["relative_file_paths"] == [f.name for f in path.iterdir() if f.name != "metadata.yaml"]
    assert meta["compression_format"] == "" and meta["compression_mode"] == ""
    expected = CFG.expected_counts()
    assert meta["message_count"] == sum(expected.values())
    assert meta["starting_time"]["nanoseconds_since_epoch"] == CFG.start_ns
    assert 1.0e9 < meta["duration"]["nanoseconds"] < 1.2e9
    assert meta["files"][0]["path"] == meta["relative_file_paths"][0]
    assert meta["files"][0]["message_count"] == meta["message_count"]
    kilted = rosbags_typestore(Stores.ROS2_KILTED)
    topics = {}
    for entry in meta["topics_with_message_count"]:
        tm = entry["topic_metadata"]
        assert REQUIRED_TOPIC <= set(tm)
        topics[tm["name"]] = entry["message_count"]
        assert tm["type"] == "sensor_msgs/msg/Image"
        assert tm["serialization_format"] == "cdr"
        assert tm["type_description_hash"] == kilted.hash_rihs01("sensor_msgs/msg/Image")
        (qos,) = tm["offered_qos_profiles"]  # v9: a YAML list, policies as strings
        assert set(qos) == REQUIRED_QOS
        assert (qos["history"], qos["depth"], qos["reliability"], qos["durability"]) == (
            "keep_last",
            1,
            "best_effort",
            "volatile",
        )
        assert qos["liveliness"] == "automatic"
        for key in ("deadline", "lifespan", "liveliness_lease_duration"):
            assert set(qos[key]) == {"sec", "nsec"} and all(isinstance(v, int) for v in qos[key].values())
    assert topics == expected
    synth = json.loads(meta["custom_data"]["daris_ros.synth"])
    assert SynthConfig(**{**synth, "names": tuple(synth["names"])}) == replace(CFG, names=CFG.camera_names())


def test_mcap_channels_carry_qos_and_type_hash(tmp_path):
    """rosbag2's mcap plugin reads a topic's QoS and type hash from the channel metadata."""
    cfg = SynthConfig(cameras=3, width=16, height=16, rate=10.0, duration=0.3)
    write_synthetic_bag(tmp_path / "m", cfg)
    raw = (tmp_path / "m" / "m.mcap").read_bytes()
    digest = type_hash("sensor_msgs/msg/Image").encode()
    entry = len(b"topic_type_hash").to_bytes(4, "little") + b"topic_type_hash"
    entry += len(digest).to_bytes(4, "little") + digest
    assert raw.count(entry) == 2 * cfg.cameras  # each channel in the data and in the summary section
    qos_key = len(b"offered_qos_profiles").to_bytes(4, "little") + b"offered_qos_profiles"
    assert raw.count(qos_key) == 2 * cfg.cameras
    assert raw.count(b"serialized_metadata") == 1  # the rosbag2 metadata record
    with Reader(tmp_path / "m") as reader:  # and rosbags still reads it
        assert reader.message_count == 9


def test_rclpy_deserialises_bag_messages(bag):
    path, _ = bag
    with Reader(path) as reader:
        conn, ts, raw = next(iter(reader.messages()))
    msg = deserialize_message(bytes(raw), Image)
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == ts
    assert (msg.width, msg.height, msg.encoding, msg.step, msg.is_bigendian) == (32, 24, "rgb8", 96, 0)
    arr = decode_raw(bytes(msg.data), msg.width, msg.height, msg.encoding, msg.step)
    assert decode_counter(arr) == 0
    assert msg.header.frame_id.endswith("_optical_frame")


@pytest.mark.ros
def test_type_hash_matches_rosidl_and_rclpy(ros):
    """The hash in the metadata equals rosidl's (the installed .json) and rmw's (rclpy endpoint info)."""
    ours = type_hash("sensor_msgs/msg/Image")
    description = Path(sys.prefix) / "share" / "sensor_msgs" / "msg" / "Image.json"
    if description.is_file():
        hashes = json.loads(description.read_text())["type_hashes"]
        rosidl = next(h["hash_string"] for h in hashes if h["type_name"] == "sensor_msgs/msg/Image")
        assert ours == rosidl
    node = ros.node("hash", spin=False)
    pub = node.create_publisher(Image, "/bag_test/hash_probe", 1)
    (info,) = node.get_publishers_info_by_topic("/bag_test/hash_probe")
    assert str(info.topic_type_hash) == ours
    node.destroy_publisher(pub)


def test_jpeg_bag_and_sensor_qos_and_reliable_option(tmp_path):
    cfg = SynthConfig(cameras=1, width=48, height=32, rate=10.0, duration=0.5, encoding="jpeg")
    summary = write_synthetic_bag(tmp_path / "j", cfg, qos=[make_qos(reliability="reliable")])
    assert summary.counts == {"/cameras/cam0/image_raw/compressed": 5}
    with Reader(tmp_path / "j") as reader:
        (conn,) = reader.connections
        assert conn.msgtype == "sensor_msgs/msg/CompressedImage"
        assert conn.ext.offered_qos_profiles[0].reliability.name == "RELIABLE"
        raws = [raw for _, _, raw in reader.messages()]
    msg = get_typestore().deserialize_cdr(raws[3], "sensor_msgs/msg/CompressedImage")
    import io

    from PIL import Image as PILImage

    out = np.asarray(PILImage.open(io.BytesIO(msg.data.tobytes())).convert("RGB"))
    assert out.shape == (32, 48, 3)


def test_write_bag_generic_messages_and_empty_topic(tmp_path):
    store = get_typestore()
    T = store.types
    arr = T["diagnostic_msgs/msg/DiagnosticArray"](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id=""
        ),
        status=[
            T["diagnostic_msgs/msg/DiagnosticStatus"](
                level=b"\x00"[0], name="cam0", message="ok", hardware_id="", values=[]
            )
        ],
    )
    data = bytes(store.serialize_cdr(arr, "diagnostic_msgs/msg/DiagnosticArray"))
    msgs = [
        SynthMessage("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", 10 + i, 0, i, data)
        for i in range(3)
    ]
    summary = write_bag(
        tmp_path / "d",
        reversed(msgs),
        storage="sqlite3",
        topics={"/never": "std_msgs/msg/String"},
    )
    assert summary.counts == {"/never": 0, "/diagnostics": 3}
    meta = yaml.safe_load((tmp_path / "d" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    by_name = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert by_name["/never"]["message_count"] == 0
    diag_qos = by_name["/diagnostics"]["topic_metadata"]["offered_qos_profiles"][0]
    assert diag_qos["reliability"] == "reliable"
    with Reader(tmp_path / "d") as reader:
        got = [(c.topic, t) for c, t, _ in reader.messages()]
    assert got == [("/diagnostics", 10), ("/diagnostics", 11), ("/diagnostics", 12)]


def test_writer_rejects_unknown_type_and_type_change(tmp_path):
    with BagWriter(tmp_path / "x") as writer:
        with pytest.raises(KeyError):
            writer.add_topic("/a", "nope_msgs/msg/Nope")
        writer.add_topic("/a", "std_msgs/msg/String", [RELIABLE_QOS])
        with pytest.raises(ValueError):
            writer.add_topic("/a", "std_msgs/msg/Int32")


def test_qos_overrides_file(tmp_path):
    out = write_qos_overrides(tmp_path / "qos.yaml", {"/cameras/cam0/image_raw": make_qos()})
    data = yaml.safe_load(out.read_text())
    assert data == {
        "/cameras/cam0/image_raw": {
            "history": "keep_last",
            "depth": 1,
            "reliability": "best_effort",
            "durability": "volatile",
        }
    }


# -- daris_ros's own message types ----------------------------------------------------------------
def test_typestore_has_daris_types_from_source_msg_dir(monkeypatch):
    monkeypatch.delenv("DARIS_ROS_MSG_DIR", raising=False)
    msg_dir = find_msg_dir()
    assert msg_dir is not None and (msg_dir / "InferenceResult.msg").is_file()
    store = get_typestore()
    for name in DARIS_TYPES:
        assert name in store.fielddefs
        assert type_hash(name).startswith("RIHS01_")
    fields = dict(store.fielddefs["daris_ros/msg/SchedulerStats"][1])
    assert fields["tasks"][1][0][1] == "daris_ros/msg/TaskStats"
    assert "daris_ros/msg/InferenceResult" not in make_typestore(include_package=False).fielddefs
    assert KILTED_STORE == Stores.ROS2_KILTED


def test_typestore_msg_dir_override(monkeypatch, tmp_path):
    (tmp_path / "Ping.msg").write_text("uint32 seq\nstd_msgs/Header header\n")
    monkeypatch.setenv("DARIS_ROS_MSG_DIR", str(tmp_path))
    store = make_typestore()
    assert "daris_ros/msg/Ping" in store.fielddefs
    with pytest.raises(FileNotFoundError):
        make_typestore(tmp_path / "missing")


def _daris_result(store):
    T = store.types
    t = T["builtin_interfaces/msg/Time"]
    return T["daris_ros/msg/InferenceResult"](
        header=T["std_msgs/msg/Header"](stamp=t(sec=3, nanosec=4), frame_id="cam0_optical_frame"),
        task="cam0",
        job_id=2**63 + 5,
        priority=1,
        model="resnet18",
        class_ids=np.array([3, 1], np.int32),
        scores=np.array([0.5, 0.25], np.float32),
        seg_height=0,
        seg_width=0,
        seg_class_ids=np.array([], np.int32),
        seg_class_fractions=np.array([], np.float32),
        receive_time=t(sec=3, nanosec=5),
        release_time=t(sec=3, nanosec=6),
        start_time=t(sec=3, nanosec=7),
        finish_time=t(sec=3, nanosec=8),
        deadline=t(sec=4, nanosec=0),
        response_time=0.01,
        exec_time=0.005,
        met=True,
        mret=0.006,
        context=1,
        stream=0,
        stages=[T["daris_ros/msg/StageRecord"](stage=0, context=1, stream=0, level=3, start=0.0, finish=0.01,
                                               exec_time=0.005, virtual_deadline=0.5)],
        kind=0,
        payload_topic="/daris/results",
        source_height=480,
        source_width=640,
        class_names=["cat", "dog"],
        num_detections=0,
    )


def test_daris_result_bag_round_trip(tmp_path):
    store = get_typestore()
    data = bytes(store.serialize_cdr(_daris_result(store), "daris_ros/msg/InferenceResult"))
    msgs = [
        SynthMessage("/daris/results", "daris_ros/msg/InferenceResult", 100 + i, 0, i, data) for i in range(4)
    ]
    write_bag(tmp_path / "r", msgs)
    meta = yaml.safe_load((tmp_path / "r" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    (entry,) = meta["topics_with_message_count"]
    assert entry["message_count"] == 4
    assert entry["topic_metadata"]["type"] == "daris_ros/msg/InferenceResult"
    assert entry["topic_metadata"]["type_description_hash"] == type_hash("daris_ros/msg/InferenceResult")
    with Reader(tmp_path / "r") as reader:
        (conn,) = reader.connections
        assert "PRIORITY_HIGH" in conn.msgdef.data
        raws = [raw for _, _, raw in reader.messages()]
    msg = store.deserialize_cdr(raws[0], "daris_ros/msg/InferenceResult")
    assert msg.job_id == 2**63 + 5 and list(msg.class_ids) == [3, 1] and msg.met


_PROBE = r"""
import json, sys
import rclpy
from rclpy.serialization import serialize_message
import daris_ros.msg as m
rclpy.init()
node = rclpy.create_node("daris_hash_probe")
out = {}
for name in ("InferenceResult", "TaskStats", "PriorityStats", "SchedulerStats"):
    pub = node.create_publisher(getattr(m, name), "/probe/" + name, 1)
    out[name] = str(node.get_publishers_info_by_topic("/probe/" + name)[0].topic_type_hash)
r = m.InferenceResult(task="cam0", job_id=2**63 + 5, model="resnet18", met=True, context=1)
r.class_ids = [3, 1]
r.scores = [0.5, 0.25]
r.header.stamp.sec = 3
out["result_cdr"] = serialize_message(r).hex()
node.destroy_node()
rclpy.shutdown()
print(json.dumps(out))
"""


def test_daris_types_match_generated_classes(tmp_path):
    """Hashes and CDR of daris_ros/msg/* agree with the rosidl-generated classes of the colcon build
    (in-process when importable, else from <repo>/install; skipped when there is no build)."""
    env = dict(os.environ)
    site = REPO / "install" / "daris_ros" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    try:
        import daris_ros.msg  # noqa: F401

        cwd = str(tmp_path)  # keep the source tree's daris_ros (no msg/) off the probe's sys.path
    except ImportError:
        if not (site / "daris_ros" / "msg" / "__init__.py").is_file():
            pytest.skip("daris_ros messages are not built (no colcon install space)")
        env["PYTHONPATH"] = str(site)
        lib = REPO / "install" / "daris_ros" / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
        cwd = str(tmp_path)  # keep the source tree's daris_ros off sys.path
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        pytest.skip(f"generated daris_ros messages not usable here: {proc.stderr.strip()[-300:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("InferenceResult", "TaskStats", "PriorityStats", "SchedulerStats"):
        assert out[name] == type_hash(f"daris_ros/msg/{name}"), name
    msg = get_typestore().deserialize_cdr(bytes.fromhex(out["result_cdr"]), "daris_ros/msg/InferenceResult")
    assert (msg.task, msg.job_id, msg.model, msg.met, msg.context) == ("cam0", 2**63 + 5, "resnet18", True, 1)
    assert list(msg.class_ids) == [3, 1] and msg.header.stamp.sec == 3
