"""Perception outputs over real DDS (issue 16 item 3): the scheduler node (install space, cpu backend) runs a
detection camera (a tiny deterministic TorchScript detector: fixed boxes in its 64x64 input's pixels) and a
segmentation camera (the built-in UNet at 32x32). A subscriber reads back the boxes in the 200x100 source
frames' pixels (daris_ros/Detection2DArray) and mono8 masks at the 96x64 source size, each with its frame's stamp
and frame_id; every finished job's InferenceResult names the topic its payload went to, and each payload
message matches one InferenceResult (the accounting). The latched labels reach a subscriber that comes late."""

from __future__ import annotations

import array
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import torch
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import Spinner, start_scheduler, stop_scheduler, wait_until_running
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from torch import nn

from daris_ros.ros.vision import vision_msgs_available

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

DET_SOURCE = (100, 200)  # H, W of the detection camera's frames
SEG_SOURCE = (64, 96)
DET_INPUT = 64  # the detector's input_size: 64 x 64
SEG_NAMES = tuple(f"voc{i}" for i in range(21))
RELIABLE = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class FixedDetector(nn.Module):
    """Issue 16's detection contract with fixed output: box (8, 16, 32, 48) score 0.9 class 2, box (0, 0, 64, 64)
    score 0.3 class 1 (under the task's 0.5 threshold), two padding slots (K = 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = "detection"
        self.num_classes = 3
        self.max_detections = 4
        self.class_names = ["background", "car", "person"]
        self.probe = nn.Conv2d(3, 1, 1)
        self.register_buffer("boxes", torch.tensor([[8.0, 16.0, 32.0, 48.0], [0.0, 0.0, 64.0, 64.0],
                                                    [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        self.register_buffer("scores", torch.tensor([0.9, 0.3, 0.0, 0.0]))
        self.register_buffer("labels", torch.tensor([2, 1, 0, 0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        zero = self.probe(x).sum() * 0.0
        return (self.boxes.repeat(n, 1, 1) + zero, self.scores.repeat(n, 1) + zero, self.labels.repeat(n, 1),
                torch.full((n,), 2, dtype=torch.int64))


def _params(detector: Path, labels: Path) -> str:
    return f"""
daris_scheduler:
  ros__parameters:
    policy: STR
    backend: cpu
    n_contexts: 1
    n_streams: 1
    stats_period: 0.5
    profile_runs: 1
    feasibility: warn
    perception_msgs: daris_ros
    task_names: [det, seg]
    tasks:
      det: {{topic: /po/det/image_raw, priority: HP, rate: 5.0, deadline: 2.0, model: {detector},
             input_size: [{DET_INPUT}, {DET_INPUT}], score_threshold: 0.5, qos_reliability: reliable}}
      seg: {{topic: /po/seg/image_raw, priority: HP, rate: 5.0, deadline: 2.0, model: unet, input_size: [32, 32],
             labels_file: {labels}, qos_reliability: reliable}}
"""


class _Harness(Node):
    def __init__(self) -> None:
        super().__init__("perception_outputs_harness")
        from daris_ros.msg import Detection2DArray, InferenceResult, SchedulerStats

        self.results: dict[str, list] = {"det": [], "seg": []}
        self.detections: list = []
        self.masks: list[Image] = []
        self.stats: list = []
        self.published: dict[str, set[tuple[int, int]]] = {"det": set(), "seg": set()}
        for task in self.results:
            self.create_subscription(InferenceResult, f"/daris/{task}/result", self.results[task].append, RELIABLE)
        self.create_subscription(Detection2DArray, "/daris/det/detections", self.detections.append, RELIABLE)
        self.create_subscription(Image, "/daris/seg/mask", self.masks.append, RELIABLE)
        self.create_subscription(SchedulerStats, "/daris/stats", self.stats.append, 50)
        self._cameras: list = []

    def start_cameras(self, period: float) -> None:
        cams = []
        for task, (h, w) in (("det", DET_SOURCE), ("seg", SEG_SOURCE)):
            pixels = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
            m = Image(height=h, width=w, encoding="rgb8", step=3 * w, data=array.array("B", pixels.tobytes()))
            m.header.frame_id = f"cam_{task}"
            pub = self.create_publisher(Image, f"/po/{task}/image_raw", RELIABLE)
            cams.append((task, pub, m))

        def tick() -> None:
            stamp = self.get_clock().now().to_msg()
            for task, pub, m in cams:
                m.header.stamp = stamp
                pub.publish(m)
                self.published[task].add((stamp.sec, stamp.nanosec))

        self._cameras.append(self.create_timer(period, tick))

    def stop_cameras(self) -> None:
        for timer in self._cameras:
            self.destroy_timer(timer)
        self._cameras.clear()

    def completed(self, task: str) -> int:
        for ts in self.stats[-1].tasks:
            if ts.task == task:
                return int(ts.completed)
        return -1


def _stamp(header: Header) -> tuple[int, int]:
    return (header.stamp.sec, header.stamp.nanosec)


def _masked(results: list[Any]) -> list[Any]:
    """The segmentation results whose mask was published (masks are made only while the mask topic has a
    subscriber, checked every 0.5 s: jobs that finished before the node saw this harness's subscription have none)."""
    return [r for r in results if r.payload_topic]


@pytest.fixture(scope="module")
def run(install_prefix, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perception_outputs")
    detector = tmp / "fixed_detector.pt"
    torch.jit.save(torch.jit.script(FixedDetector()), str(detector))
    labels = tmp / "voc.txt"
    labels.write_text("\n".join(SEG_NAMES) + "\n", encoding="utf-8")
    params = tmp / "params.yaml"
    params.write_text(_params(detector, labels))
    proc = start_scheduler(install_prefix, params)
    rclpy.init()
    node = _Harness()
    spinner = Spinner(node)
    out = ""
    try:
        wait_until_running(proc, lambda: bool(node.stats))
        node.start_cameras(0.2)
        time.sleep(4.0)
        node.stop_cameras()
        # settle: every job released so far finished and its messages arrived (counts only, no latency bound)
        t0 = time.monotonic()
        while True:
            time.sleep(1.0)
            counts = [(node.completed(t), len(node.results[t])) for t in ("det", "seg")]
            if all(c == n > 0 for c, n in counts) and len(node.detections) == counts[0][1] \
                    and len(node.masks) == len(_masked(node.results["seg"])):
                break
            assert time.monotonic() - t0 < 60, (counts, len(node.detections), len(node.masks))
        yield node, proc
    finally:
        out = stop_scheduler(proc)
        Path(tmp_path_factory.getbasetemp() / "scheduler_perception_outputs.log").write_text(out)
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, f"scheduler exit code {proc.returncode} on SIGINT:\n{out}"


def test_detections_are_in_source_pixels_with_the_source_header(run) -> None:
    node, _ = run
    assert len(node.detections) >= 3
    for m in node.detections:
        assert m.header.frame_id == "cam_det" and _stamp(m.header) in node.published["det"]
        assert len(m.detections) == 1  # the 0.3 box is under score_threshold 0.5
        d = m.detections[0]
        # (8, 16, 32, 48) in 64x64 model pixels -> x * 200/64, y * 100/64 -> (25, 25, 100, 75) in the source
        assert (d.bbox.center_x, d.bbox.center_y, d.bbox.size_x, d.bbox.size_y) == (62.5, 50.0, 75.0, 50.0)
        assert d.header == m.header
        (h,) = d.results
        assert (h.class_id, h.class_name) == ("2", "person") and h.score == pytest.approx(0.9, abs=1e-6)


def test_masks_are_mono8_at_the_source_size_with_the_source_header(run) -> None:
    node, _ = run
    assert len(node.masks) >= 3
    for m in node.masks:
        assert m.header.frame_id == "cam_seg" and _stamp(m.header) in node.published["seg"]
        assert (m.height, m.width, m.encoding, m.step, m.is_bigendian) == (*SEG_SOURCE, "mono8", SEG_SOURCE[1], 0)
        mask = np.frombuffer(bytes(m.data), np.uint8)
        assert mask.size == SEG_SOURCE[0] * SEG_SOURCE[1] and int(mask.max()) < len(SEG_NAMES)


def test_every_result_names_its_payload_and_every_payload_has_a_result(run) -> None:
    from daris_ros.msg import InferenceResult

    node, _ = run
    det, seg = node.results["det"], node.results["seg"]
    assert all(r.kind == InferenceResult.KIND_DETECTION and r.payload_topic == "/daris/det/detections"
               and (r.source_height, r.source_width) == DET_SOURCE and r.num_detections == 1 for r in det)
    assert all(r.kind == InferenceResult.KIND_SEGMENTATION and r.payload_topic in ("/daris/seg/mask", "")
               and (r.source_height, r.source_width) == SEG_SOURCE and (r.seg_height, r.seg_width) == (32, 32)
               for r in seg)
    # masks are lazy: only results before the node saw the subscriber (a prefix, in stamp order) have no mask
    in_order = sorted(seg, key=lambda r: _stamp(r.header))
    first = next(i for i, r in enumerate(in_order) if r.payload_topic)
    assert all(r.payload_topic for r in in_order[first:]), [r.payload_topic for r in in_order]
    assert all(r.response_time > 0 and r.deadline.sec + r.deadline.nanosec > 0 for r in det + seg)
    # the accounting: as many payloads as finished jobs (TaskStats.completed), matched one to one by stamp
    assert len(node.detections) == len(det) == node.completed("det")
    assert len(seg) == node.completed("seg") and len(node.masks) == len(_masked(seg)) >= 3
    assert sorted(_stamp(m.header) for m in node.detections) == sorted(_stamp(r.header) for r in det)
    assert sorted(_stamp(m.header) for m in node.masks) == sorted(_stamp(r.header) for r in _masked(seg))


def test_a_late_subscriber_gets_the_latched_labels(run) -> None:
    from daris_ros.msg import LabelInfo

    node, _ = run
    got: dict[str, LabelInfo] = {}
    subs = [node.create_subscription(LabelInfo, f"/daris/{t}/labels", lambda m, t=t: got.__setitem__(t, m), LATCHED)
            for t in ("det", "seg")]
    try:
        t0 = time.monotonic()
        while len(got) < 2:
            assert time.monotonic() - t0 < 20, f"latched labels not received: {sorted(got)}"
            time.sleep(0.1)
    finally:
        for sub in subs:
            node.destroy_subscription(sub)
    assert [(c.class_id, c.class_name) for c in got["det"].class_map] == [(0, "background"), (1, "car"),
                                                                          (2, "person")]
    assert got["det"].threshold == pytest.approx(0.5)
    assert tuple(c.class_name for c in got["seg"].class_map) == SEG_NAMES
    assert [c.class_id for c in got["seg"].class_map] == list(range(len(SEG_NAMES)))


@pytest.mark.skipif(not vision_msgs_available(), reason="vision_msgs not installed")
def test_vision_msgs_detection_array_has_the_same_fields() -> None:
    from daris_ros.ros.vision import vision_detection_array, vision_label_info
    from daris_ros.runtime.results import Detections

    header = Header(frame_id="cam")
    header.stamp.sec = 5
    dets = Detections(boxes=np.array([[25, 25, 100, 75]], np.float32), scores=np.array([0.9], np.float32),
                      class_ids=np.array([2], np.int64))
    m = vision_detection_array(header, dets)
    (d,) = m.detections
    assert m.header == header and d.header == header
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta) == (62.5, 50.0, 0.0)
    assert (d.bbox.size_x, d.bbox.size_y) == (75.0, 50.0)
    assert d.results[0].hypothesis.class_id == "2" and d.results[0].hypothesis.score == pytest.approx(0.9)
    labels = vision_label_info(header, ("background", "car"), 0.5)
    assert [(c.class_id, c.class_name) for c in labels.class_map] == [(0, "background"), (1, "car")]


@pytest.mark.skipif(vision_msgs_available(), reason="vision_msgs installed: perception_msgs vision_msgs is valid")
def test_asking_for_vision_msgs_without_it_is_a_named_error() -> None:
    from daris_ros.ros.scheduler_node import _use_vision_msgs
    from daris_ros.settings import ConfigError

    with pytest.raises(ConfigError, match="vision_msgs is not installed") as err:
        _use_vision_msgs("vision_msgs")
    assert err.value.parameter == "perception_msgs"
    assert _use_vision_msgs("auto") is False and _use_vision_msgs("daris_ros") is False
