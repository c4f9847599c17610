"""daris_ros.report.pictures: sampled jobs drawn on their camera frames, from real rosbag2 bags written with the
project's writer and type store (camera frames, InferenceResults, Detection2DArray, mono8 masks, LabelInfo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import STORE, T, header_msg, time_msg
from PIL import Image as PILImage
from report_records import result

from daris_ros.bags.synth import make_image_message
from daris_ros.bags.writer import CUSTOM_PREFIX, BagWriter
from daris_ros.report.extract import read_run
from daris_ros.report.pictures import (
    MET_RGB,
    MISSED_RGB,
    Picture,
    class_color,
    decode_frame,
    display_scale,
    make_pictures,
    select_jobs,
)
from daris_ros.report.render import write_report
from daris_ros.tools.report import main as report_main

T0 = 1_700_000_000 * 10**9
SRC_W, SRC_H = 64, 48
GRAY = 128
#: the detection of front job 1, in source pixels: x1, y1, x2, y2
BOX = (8.0, 7.0, 32.0, 23.0)
CAR, ROAD = 3, 2


def _frame() -> np.ndarray:
    return np.full((SRC_H, SRC_W, 3), GRAY, np.uint8)


def _stamp(task: str, job: int) -> int:
    return T0 + job * 100_000_000 + (0 if task == "front" else 1_000_000)


def _result_msg(task: str, job: int, *, kind: int, priority: int, met: bool, payload_topic: str,
                num_detections: int = 0) -> Any:
    stamp = _stamp(task, job)
    release = stamp + 2_000_000
    finish = release + (80_000_000 if not met else 30_000_000)
    return T["daris_ros/msg/InferenceResult"](
        header=header_msg(stamp, f"{task}_frame"), task=task, job_id=job, priority=priority, model="m",
        receive_time=time_msg(stamp + 1_000_000), release_time=time_msg(release), start_time=time_msg(release),
        finish_time=time_msg(finish), deadline=time_msg(release + 50_000_000), response_time=(finish - release) * 1e-9,
        exec_time=0.02, met=met, kind=kind, payload_topic=payload_topic, source_height=SRC_H, source_width=SRC_W,
        num_detections=num_detections)


def _detections(stamp: int, boxes: list[tuple[float, float, float, float]]) -> Any:
    header = header_msg(stamp, "front_frame")
    dets = [T["daris_ros/msg/Detection2D"](
        header=header, bbox=T["daris_ros/msg/BoundingBox2D"](center_x=(x1 + x2) / 2, center_y=(y1 + y2) / 2,
                                                            size_x=x2 - x1, size_y=y2 - y1),
        results=[T["daris_ros/msg/ObjectHypothesis"](class_id=str(CAR), class_name="car", score=0.9)])
        for x1, y1, x2, y2 in boxes]
    return T["daris_ros/msg/Detection2DArray"](header=header, detections=dets)


def _mask(stamp: int) -> Any:
    """A mask at a model resolution of 16 x 12 (the source is 64 x 48): left half background, right half road."""
    ids = np.zeros((12, 16), np.uint8)
    ids[:, 8:] = ROAD
    return T["sensor_msgs/msg/Image"](header=header_msg(stamp, "side_frame"), height=12, width=16, encoding="mono8",
                                      is_bigendian=0, step=16, data=ids.reshape(-1))


def _labels() -> Any:
    names = ["__background__", "person", "road"]
    return T["daris_ros/msg/LabelInfo"](header=header_msg(T0, ""), class_map=[
        T["daris_ros/msg/VisionClass"](class_id=i, class_name=n) for i, n in enumerate(names)])


def camera_messages() -> list[tuple[str, str, int, Any]]:
    """front: bgr8 Image; side: PNG CompressedImage (lossless, so pixels can be compared)."""
    out = []
    for job in (0, 1):
        for task, encoding in (("front", "bgr8"), ("side", "png")):
            msgtype, msg = make_image_message(_frame(), encoding, _stamp(task, job), f"{task}_frame", store=STORE)
            out.append((f"/cam/{task}", msgtype, _stamp(task, job), msg))
    return out


def output_messages() -> list[tuple[str, str, int, Any]]:
    """Two detection jobs of the HP task front (job 1 missed, one box) and two segmentation jobs of LP side."""
    out: list[tuple[str, str, int, Any]] = [("/daris/side/labels", "daris_ros/msg/LabelInfo", T0, _labels())]
    for job in (0, 1):
        stamp = _stamp("front", job)
        boxes = [BOX] if job == 1 else []
        out.append(("/daris/front/detections", "daris_ros/msg/Detection2DArray", stamp + 3, _detections(stamp, boxes)))
        out.append(("/daris/front/result", "daris_ros/msg/InferenceResult", stamp + 4, _result_msg(
            "front", job, kind=2, priority=0, met=job == 0, payload_topic="/daris/front/detections",
            num_detections=len(boxes))))
        stamp = _stamp("side", job)
        out.append(("/daris/side/mask", "sensor_msgs/msg/Image", stamp + 3, _mask(stamp)))
        out.append(("/daris/side/result", "daris_ros/msg/InferenceResult", stamp + 4, _result_msg(
            "side", job, kind=1, priority=1, met=True, payload_topic="/daris/side/mask")))
    return out


def write_bag(path: Path, messages: list[tuple[str, str, int, Any]], replay: dict[str, Any] | None = None) -> Path:
    custom = {f"{CUSTOM_PREFIX}replay": json.dumps(replay)} if replay is not None else None
    with BagWriter(path, default_qos=(), custom_data=custom) as w:
        for topic, msgtype, log_ns, msg in messages:
            w.write(topic, log_ns, STORE.serialize_cdr(msg, msgtype), msgtype)
    return path


@pytest.fixture
def out_bag(tmp_path: Path) -> Path:
    return write_bag(tmp_path / "output", camera_messages() + output_messages())


def _by_job(pictures: list[Picture]) -> dict[tuple[str, int], Picture]:
    return {(p.task, p.job_id): p for p in pictures}


def _rgb(path: Path, x: int, y: int) -> tuple[int, int, int]:
    with PILImage.open(path) as im:
        return im.convert("RGB").getpixel((x, y))  # type: ignore[return-value]


def test_the_masks_are_payloads_not_cameras(out_bag: Path) -> None:
    run = read_run(out_bag)
    assert sorted(run.inputs) == ["/cam/front", "/cam/side"]
    assert sorted(run.payloads) == ["/daris/front/detections", "/daris/side/mask"]
    assert run.labels["/daris/side/labels"] == {0: "__background__", 1: "person", 2: "road"}
    r = run.results["front"][1]
    assert (r.kind, r.payload_topic, r.source_width, r.num_detections) == ("detection", "/daris/front/detections",
                                                                          SRC_W, 1)


def test_boxes_drawn_where_the_detections_are(out_bag: Path, tmp_path: Path) -> None:
    run = read_run(out_bag)
    pics = _by_job(make_pictures(run, tmp_path / "pics", 6, t0_ns=T0).pictures)
    assert set(pics) == {("front", 0), ("front", 1), ("side", 0), ("side", 1)}
    missed = pics[("front", 1)]
    x0, y0, w, h = missed.frame_rect
    scale = display_scale(SRC_W)
    assert (w, h) == (round(SRC_W * scale), round(SRC_H * scale))
    with PILImage.open(missed.path) as im:
        assert im.size == missed.size and missed.size[0] == w + 2 * (x0)
    assert len(missed.boxes) == 1
    box = missed.boxes[0]
    x1, y1, x2, y2 = BOX
    assert box.rect == (x0 + round(x1 * scale), y0 + round(y1 * scale), x0 + round(x2 * scale), y0 + round(y2 * scale))
    assert box.color == class_color(CAR) and box.label == "car 0.90"
    mid_y = (box.rect[1] + box.rect[3]) // 2
    assert _rgb(missed.path, box.rect[0], mid_y) == class_color(CAR)  # the left edge
    assert _rgb(missed.path, box.rect[2], mid_y) == class_color(CAR)  # the right edge
    assert _rgb(missed.path, box.rect[0] - 3, mid_y) == (GRAY, GRAY, GRAY)  # the frame outside the box
    assert _rgb(missed.path, (box.rect[0] + box.rect[2]) // 2, mid_y) == (GRAY, GRAY, GRAY)  # and inside
    assert pics[("front", 0)].boxes == () and "0 detection(s)" in pics[("front", 0)].lines


def test_missed_jobs_are_labelled_missed(out_bag: Path, tmp_path: Path) -> None:
    pics = _by_job(make_pictures(read_run(out_bag), tmp_path, 6).pictures)
    missed, met = pics[("front", 1)], pics[("front", 0)]
    assert missed.status == "MISSED" and "MISSED (+30.0 ms)" in missed.lines[1]
    assert "response 80.0 ms / deadline 50.0 ms" in missed.lines[1] and "job 1  HP" in missed.lines[0]
    assert _rgb(missed.path, 0, 0) == MISSED_RGB  # the red border
    assert met.status == "MET" and met.lines[1].endswith("MET") and _rgb(met.path, 0, 0) == (255, 255, 255)
    assert MET_RGB != MISSED_RGB


def test_mask_blended_with_the_label_legend(out_bag: Path, tmp_path: Path) -> None:
    pic = _by_job(make_pictures(read_run(out_bag), tmp_path, 6).pictures)[("side", 0)]
    assert pic.mask_classes == ((ROAD, "road", class_color(ROAD)),)  # the background is neither coloured nor listed
    x0, y0, w, h = pic.frame_rect
    road = np.array(_rgb(pic.path, x0 + 3 * w // 4, y0 + h // 2))
    expected = 0.55 * GRAY + 0.45 * np.array(class_color(ROAD))
    assert np.abs(road - expected).max() <= 1
    assert _rgb(pic.path, x0 + w // 4, y0 + h // 2) == (GRAY, GRAY, GRAY)


def test_report_shows_the_pictures(out_bag: Path, tmp_path: Path) -> None:
    _, files = write_report(read_run(out_bag), tmp_path / "rep", pictures=3)
    assert len(files.pictures) == 3 and all(p.is_file() and p.parent == tmp_path / "rep" for p in files.pictures)
    assert tmp_path / "rep" / "frame_front_1.png" in files.pictures  # the HP miss is always among them
    html = files.html.read_text()
    assert "<h2>Frames</h2>" in html
    for p in files.pictures:
        assert f'<img src="{p.name}"' in html
    assert "(frame_front_1.png)" in files.markdown.read_text()
    data = json.loads(files.json.read_text())
    missed = next(p for p in data["pictures"] if p["file"] == "frame_front_1.png")
    assert (missed["met"], missed["priority"], [b["label"] for b in missed["boxes"]]) == (False, "HP", ["car 0.90"])
    pic = _by_job(make_pictures(read_run(out_bag), tmp_path / "again", 3).pictures)[("front", 1)]
    assert missed["boxes"][0]["rect"] == list(pic.boxes[0].rect) and missed["frame_rect"] == list(pic.frame_rect)


def test_no_frames_gives_a_note(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "output", output_messages(), replay={"input_bag": str(tmp_path / "gone")})
    _, files = write_report(read_run(bag), tmp_path / "rep")
    assert files.pictures == [] and not list((tmp_path / "rep").glob("frame_*.png"))
    md = files.markdown.read_text()
    assert "## Frames" in md and "No pictures: the output bag holds no camera frames" in md
    assert "is not there" in md and "--frames INPUT_BAG" in md
    assert "No pictures" in json.loads(files.json.read_text())["pictures_note"]
    _, files = write_report(read_run(bag), tmp_path / "none", pictures=0)
    assert "Frames" not in files.markdown.read_text()


def test_frames_from_the_input_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``daris-report OUT --frames IN``: the cameras in another bag (here under other names, as a replay's remap
    plays them), matched by stamp and frame_id."""
    cams = [(topic.replace("/cam/", "/bag/"), msgtype, t, msg) for topic, msgtype, t, msg in camera_messages()]
    in_bag = write_bag(tmp_path / "input", cams)
    out = write_bag(tmp_path / "output", output_messages())
    rc = report_main([str(out), "--out", str(tmp_path / "rep"), "--frames", str(in_bag), "--pictures", "2"])
    assert rc == 0
    assert "2 pictures" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "rep").glob("frame_*.png"))
    assert len(names) == 2 and "frame_front_1.png" in names
    with PILImage.open(tmp_path / "rep" / "frame_front_1.png") as im:
        assert im.size[0] == round(SRC_W * display_scale(SRC_W)) + 8
    assert report_main([str(out), "--out", str(tmp_path / "x"), "--frames", str(tmp_path / "nope"), "-q"]) == 2


def test_frames_are_decoded_by_the_node_converters() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :, 0] = 200  # red
    rgb[4:8, 4:8] = (0, 0, 255)
    for encoding in ("rgb8", "bgr8", "png"):
        msgtype, msg = make_image_message(rgb, encoding, T0, "f", store=STORE)
        assert np.array_equal(decode_frame(msgtype, msg), rgb), encoding
    msgtype, msg = make_image_message(rgb, "jpeg", T0, "f", store=STORE)
    assert np.abs(decode_frame(msgtype, msg).astype(int) - rgb).mean() < 8


def test_select_jobs_hp_misses_first_then_spread() -> None:
    hp = [result("hp", i, release=0.1 * i, met=i not in (2, 7)) for i in range(10)]
    lp = [result("lp", i, priority="LP", release=0.1 * i + 0.05, met=i != 3) for i in range(10)]
    other = [result("other", i, priority="LP", release=0.3 * i) for i in range(3)]
    chosen = select_jobs({"hp": hp, "lp": lp, "other": other}, 6)
    keys = [(r.task, r.job_id) for r in chosen]
    assert ("hp", 2) in keys and ("hp", 7) in keys  # every HP miss
    assert len(keys) == 6 and len(set(keys)) == 6 and {r.task for r in chosen} == {"hp", "lp", "other"}
    assert [r.release_ns for r in chosen] == sorted(r.release_ns for r in chosen)
    many = [result("hp", i, release=0.1 * i, met=False) for i in range(10)]
    chosen = select_jobs({"hp": many, "lp": lp}, 6)
    # half the pictures (3) for the misses, the 3 left shared out in turn: hp, lp, hp
    assert [sum(1 for r in chosen if r.task == t) for t in ("hp", "lp")] == [5, 1]
    assert [r.job_id for r in chosen if r.task == "hp"][:1] == [0]  # spread from the run's start
    assert select_jobs({"hp": hp}, 4, has_frame=lambda r: r.job_id >= 8) == [hp[8], hp[9]]
    assert select_jobs({"hp": hp}, 0) == []
