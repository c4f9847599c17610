"""The report reads perception payloads of a type its store lacks (vision_msgs/Detection2DArray, recorded where
vision_msgs was installed) from the definitions stored in the bag, and draws their boxes like its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daris_ros.bags.ament_types import learn_type, with_bag_types
from daris_ros.bags.synth import SynthMessage
from daris_ros.bags.typestore import get_typestore, make_typestore
from daris_ros.bags.writer import write_bag
from daris_ros.report.pictures import detections_of, read_messages

# The field layout of vision_msgs 4.x (its documented message fields; only what a detection carries).
VISION_LAYOUT = {
    "Point2D.msg": "float64 x\nfloat64 y\n",
    "Pose2D.msg": "vision_msgs/Point2D position\nfloat64 theta\n",
    "BoundingBox2D.msg": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "ObjectHypothesis.msg": "string class_id\nfloat64 score\n",
    "ObjectHypothesisWithPose.msg": "vision_msgs/ObjectHypothesis hypothesis\n"
                                    "geometry_msgs/PoseWithCovariance pose\n",
    "Detection2D.msg": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                       "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "Detection2DArray.msg": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}
TYPE = "vision_msgs/msg/Detection2DArray"
TOPIC = "/daris/front/detections"


def _vision_bag(tmp_path: Path) -> Path:
    msg_dir = tmp_path / "prefix" / "share" / "vision_msgs" / "msg"
    msg_dir.mkdir(parents=True)
    for name, text in VISION_LAYOUT.items():
        (msg_dir / name).write_text(text, encoding="utf-8")
    writer_store = make_typestore()
    learn_type(writer_store, TYPE, [tmp_path / "prefix"])
    T = writer_store.types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=5, nanosec=250), frame_id="front")
    pose = T["geometry_msgs/msg/PoseWithCovariance"](
        pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                         orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36))
    box = T["vision_msgs/msg/BoundingBox2D"](
        center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=640.0, y=360.0), theta=0.0),
        size_x=100.0, size_y=50.0)
    hypothesis = T["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id="3", score=0.875), pose=pose)
    msg = T[TYPE](header=header, detections=[T["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis],
                                                                               bbox=box, id="")])
    data = bytes(writer_store.serialize_cdr(msg, TYPE))
    write_bag(tmp_path / "out", [SynthMessage(TOPIC, TYPE, 5_000_000_250, 0, 0, data)], store=writer_store)
    return tmp_path / "out"


def test_vision_msgs_detections_are_read_from_the_bags_own_definitions(tmp_path: Path) -> None:
    bag = _vision_bag(tmp_path)
    assert TYPE not in get_typestore().fielddefs  # (the report's store does not know vision_msgs)
    key = (TOPIC, 5_000_000_250, "front")
    payloads = read_messages(bag, {TOPIC}, {key})
    msgtype, msg = payloads[key]
    assert msgtype == TYPE
    (det,) = detections_of(msg, {3: "car"})
    assert (det.x1, det.y1, det.x2, det.y2) == (590.0, 335.0, 690.0, 385.0)
    assert (det.class_id, det.class_name, det.score) == (3, "car", pytest.approx(0.875))
    assert TYPE not in get_typestore().fielddefs  # (the shared store was not changed)


def test_with_bag_types_returns_the_store_itself_when_it_knows_every_type(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    store = get_typestore()
    bag = _vision_bag(tmp_path)
    with Reader(bag) as reader:
        learnt = with_bag_types(store, reader.connections)
        assert learnt is not store and TYPE in learnt.fielddefs
        assert learnt.hash_rihs01("sensor_msgs/msg/Image") == store.hash_rihs01("sensor_msgs/msg/Image")
        assert with_bag_types(learnt, reader.connections) is learnt
