"""A replay of a detection task and a segmentation task over real DDS: ``daris-replay`` records the node's
detections, masks and labels next to the results and camera frames, and the report draws sampled jobs with their
boxes (where the detector put them, scaled to the source frame and the picture) and masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage
from rosbags.rosbag2 import Reader
from torch import nn

from daris_ros.bags.synth import SynthConfig
from daris_ros.bags.writer import write_synthetic_bag
from daris_ros.report.pictures import class_color, display_scale

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

SRC_W, SRC_H = 64, 48  # the cameras' frames
DET_INPUT = 32  # the detector's input_size: 32 x 32
#: the detector's one box above the threshold, in its 32 x 32 input's pixels: x1, y1, x2, y2, and its class
DET_BOX, DET_CLASS = (4.0, 8.0, 16.0, 24.0), 1
SYNTH = SynthConfig(cameras=2, width=SRC_W, height=SRC_H, encoding="rgb8", rate=10.0, duration=2.0, seed=5)


class OneBoxDetector(nn.Module):
    """Issue 16's detection contract, fixed output: DET_BOX scored 0.8 (class 1) and a box under the threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = "detection"
        self.num_classes = 2
        self.max_detections = 2
        self.class_names = ["background", "cone"]
        self.probe = nn.Conv2d(3, 1, 1)
        self.register_buffer("boxes", torch.tensor([list(DET_BOX), [0.0, 0.0, 32.0, 32.0]]))
        self.register_buffer("scores", torch.tensor([0.8, 0.1]))
        self.register_buffer("labels", torch.tensor([DET_CLASS, 0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        zero = self.probe(x).sum() * 0.0
        return (self.boxes.repeat(n, 1, 1) + zero, self.scores.repeat(n, 1) + zero, self.labels.repeat(n, 1),
                torch.full((n,), 2, dtype=torch.int64))


PARAMS = """
daris_scheduler:
  ros__parameters:
    policy: STR
    backend: cpu
    stats_period: 0.25
    profile_runs: 1
    feasibility: warn
    perception_msgs: daris_ros
    task_names: [det, seg]
    tasks:
      det: {{topic: /cameras/cam0/image_raw, priority: HP, rate: 5.0, deadline: 2.0, model: {detector},
             input_size: [32, 32], score_threshold: 0.5, qos_reliability: reliable, qos_depth: 100}}
      seg: {{topic: /cameras/cam1/image_raw, priority: HP, rate: 2.0, deadline: 2.0, model: unet, input_size: [32, 32],
             mask_resolution: model, qos_reliability: reliable, qos_depth: 100}}
"""


@pytest.fixture(scope="module")
def replay_run(install_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daris_ros.tools import replay

    base = tmp_path_factory.mktemp("replay_pictures")
    detector = base / "one_box.pt"
    torch.jit.save(torch.jit.script(OneBoxDetector()), str(detector))
    config = base / "params.yaml"
    config.write_text(PARAMS.format(detector=detector))
    write_synthetic_bag(base / "cams", SYNTH)
    out = base / "run"
    rc = replay.main([str(base / "cams"), "--config", str(config), "--out", str(out), "-q"])
    assert rc == 0, (out / "scheduler.log").read_text() if (out / "scheduler.log").exists() else "no log"
    return out


def test_replay_records_detections_masks_and_labels(replay_run: Path) -> None:
    with Reader(replay_run / "output") as r:
        counts = {c.topic: c.msgcount for c in r.connections}
        types = {c.topic: c.msgtype for c in r.connections}
    assert counts["/daris/det/detections"] == counts["/daris/det/result"] >= 3
    assert counts["/daris/seg/mask"] == counts["/daris/seg/result"] >= 3
    assert types["/daris/det/detections"] == "daris_ros/msg/Detection2DArray"
    assert types["/daris/seg/mask"] == "sensor_msgs/msg/Image"
    assert counts["/daris/det/labels"] == counts["/daris/seg/labels"] == 1
    info = json.loads((replay_run / "replay.json").read_text())
    assert info["labels_topics"] == {"det": "/daris/det/labels", "seg": "/daris/seg/labels"}


def test_report_draws_the_boxes_and_masks(replay_run: Path) -> None:
    report = json.loads((replay_run / "report.json").read_text())
    assert report["ok"] is True  # the masks are not taken for camera frames by the checks
    pictures = {p["task"]: p for p in report["pictures"]}
    assert set(pictures) == {"det", "seg"} and len(report["pictures"]) == 6, report["pictures_note"]
    det = pictures["det"]
    x0, y0, w, h = det["frame_rect"]
    scale = display_scale(SRC_W)
    assert (w, h) == (round(SRC_W * scale), round(SRC_H * scale))
    # model input 32 x 32 -> source 64 x 48 (the node) -> picture (x scale, y scale)
    sx, sy = SRC_W / DET_INPUT * w / SRC_W, SRC_H / DET_INPUT * h / SRC_H
    x1, y1, x2, y2 = DET_BOX
    assert [b["label"] for b in det["boxes"]] == ["cone 0.80"]
    assert det["boxes"][0]["rect"] == [x0 + round(x1 * sx), y0 + round(y1 * sy), x0 + round(x2 * sx),
                                       y0 + round(y2 * sy)]
    rect = det["boxes"][0]["rect"]
    with PILImage.open(replay_run / det["file"]) as im:
        assert im.convert("RGB").getpixel((rect[0], (rect[1] + rect[3]) // 2)) == class_color(DET_CLASS)
    seg = pictures["seg"]
    assert seg["kind"] == "segmentation" and seg["boxes"] == [] and seg["mask_classes"] and not seg["notes"]
