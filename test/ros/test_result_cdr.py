"""serialize_result writes what rclpy's serialize_message gives for result_msg, for every kind of result
(classification with and without class names, segmentation, detection, failed jobs, many stages, non-ASCII frame
ids): the same length, the same message read back."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from daris_ros.msg import InferenceResult
from daris_ros.ros.cdr_frames import StampHeader
from daris_ros.ros.messages import result_msg
from daris_ros.ros.result_cdr import serialize_result
from daris_ros.runtime.results import Detections, JobResult, StageTrace

OFFSET_NS = 1_765_000_000_123_456_789 - 5_000_000_000


def _stages(n: int) -> list[StageTrace]:
    return [StageTrace(stage=j, context=j % 3, stream=(j + 1) % 2, level=j % 4, start=100.001 + j * 0.003,
                       finish=100.004 + j * 0.003, exec_time=0.0029 + j * 1e-5, virtual_deadline=100.01 + j * 0.007,
                       batch=1 + j) for j in range(n)]


def _result(**changes) -> JobResult:
    base = dict(task="front_left", job_id=123456789012, priority="HP", model="resnet50", class_ids=[3, 1, 4, 1, 5],
                scores=[0.5, 0.25, 0.125, 0.0625, 1e-7], segmentation=None, receive_time=99.9991,
                release_time=100.0, start_time=100.001, finish_time=100.0301, deadline=100.0333,
                response_time=0.0301, exec_time=0.0288, met=True, context=2, stream=1, mret=0.031, stages=_stages(4),
                source_size=(720, 1280))
    base.update(changes)
    return JobResult(**base)


CASES = {
    "classification": (_result(), ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "ray")),
    "no_names": (_result(priority="LP", met=False), ()),
    "segmentation": (_result(kind="segmentation", model="unet", class_ids=[], scores=[],
                             segmentation=(720, 1280, [0, 7, 12], [0.5, 0.25, 0.25]), stages=_stages(7)), ()),
    "detection": (_result(kind="detection", model="ssdlite320", class_ids=[], scores=[], stages=_stages(2),
                          detections=Detections(np.zeros((3, 4), np.float32), np.ones(3, np.float32),
                                                np.arange(3))), ()),
    "failed": (_result(class_ids=[], scores=[], stages=[], met=False, source_size=None), ("a",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("frame_id", ["camera_front", "", "kamera_vorn_\u00e4"])
@pytest.mark.parametrize("payload_topic", ["", "/daris/front_left/detections"])
def test_same_bytes_as_rclpy(case: str, frame_id: str, payload_topic: str) -> None:
    r, names = CASES[case]
    header = Header(stamp=Time(sec=1_765_000_000, nanosec=999_999_999), frame_id=frame_id)

    def to_ros(t: float) -> Time:
        ns = round(t * 1e9) + OFFSET_NS
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    msg = result_msg(r, header, to_ros, payload_topic=payload_topic, class_names=names)
    expected = serialize_message(msg)
    got = serialize_result(r, StampHeader(1_765_000_000, 999_999_999, frame_id), OFFSET_NS,
                           payload_topic=payload_topic, class_names=names)
    # (Fast CDR leaves its padding bytes unset: the same length, the same message read back)
    assert len(got) == len(expected)
    assert deserialize_message(got, InferenceResult) == msg
