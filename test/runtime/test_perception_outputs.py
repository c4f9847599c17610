"""Perception outputs on the CPU (issue 16 item 3): detections mapped back to the source frame's pixels,
thresholded and capped (``detect_rows``); segmentation masks as uint8 class ids at the source's or the model's size
(``mask_rows``); labels files; the task parameters; and the engine's path from a 1280x720 frame to a JobResult
whose boxes are in 1280x720 coordinates (a tiny deterministic TorchScript detector) and whose mask has the
source's size (the built-in UNet at 32x32)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from daris_ros.parameter_table import ConfigError
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.labels import class_names_for, read_labels_file
from daris_ros.runtime.models import build_staged_model, is_known_model
from daris_ros.runtime.results import Detections, detect_rows, mask_rows, segment_rows
from daris_ros.settings import SchedulerSettings, TaskSettings, settings_from_mapping, validate_task

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

SOURCE = (720, 1280)  # H_src, W_src: a 1280x720 camera
MODEL = (320, 320)  # the model's input_size (H, W)


def _output(boxes: list[list[list[float]]], scores: list[list[float]], labels: list[list[int]],
            counts: list[int]) -> tuple[torch.Tensor, ...]:
    return (torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.int64), torch.tensor(counts, dtype=torch.int64))


# -- detect_rows ---------------------------------------------------------------------------------------------------
def test_a_box_in_model_pixels_maps_to_source_pixels() -> None:
    # x scales by 1280 / 320 = 4, y by 720 / 320 = 2.25
    out = _output([[[80, 160, 160, 240], [0, 0, 320, 320]]], [[0.9, 0.8]], [[3, 7]], [2])
    (det,) = detect_rows(out, [0], [SOURCE], MODEL, [0.5], [100])
    np.testing.assert_array_equal(det.boxes, np.array([[320, 360, 640, 540], [0, 0, 1280, 720]], np.float32))
    np.testing.assert_array_equal(det.scores, np.array([0.9, 0.8], np.float32))
    assert det.class_ids.tolist() == [3, 7] and det.class_ids.dtype == np.int64
    assert det.boxes.dtype == np.float32 and len(det) == 2


def test_boxes_are_clipped_to_the_source_frame_and_none_keeps_model_pixels() -> None:
    out = _output([[[-4, 300, 330, 330]]], [[0.7]], [[1]], [1])
    (src,) = detect_rows(out, [0], [SOURCE], MODEL, [0.0], [10])
    np.testing.assert_array_equal(src.boxes, np.array([[0, 675, 1280, 720]], np.float32))
    (model,) = detect_rows(out, [0], [None], MODEL, [0.0], [10])
    np.testing.assert_array_equal(model.boxes, np.array([[0, 300, 320, 320]], np.float32))


def test_threshold_cap_and_counts() -> None:
    boxes = [[[i, i, i + 10, i + 10] for i in range(6)]]
    # entry 5 lies beyond counts (padding): never published, whatever its score
    out = _output(boxes, [[0.9, 0.8, 0.6, 0.5, 0.3, 0.95]], [[1, 2, 3, 4, 5, 6]], [5])
    (at_half,) = detect_rows(out, [0], [MODEL], MODEL, [0.5], [100])
    assert at_half.class_ids.tolist() == [1, 2, 3, 4]  # 0.5 itself passes a 0.5 threshold
    (capped,) = detect_rows(out, [0], [MODEL], MODEL, [0.5], [2])
    assert capped.class_ids.tolist() == [1, 2] and capped.scores.tolist() == pytest.approx([0.9, 0.8])
    (none,) = detect_rows(out, [0], [MODEL], MODEL, [0.95], [100])
    assert len(none) == 0 and none.boxes.shape == (0, 4)


def test_batched_rows_each_with_its_own_source_threshold_and_cap() -> None:
    box = [40, 80, 120, 160]
    out = _output([[box, box], [box, box], [box, box]], [[0.9, 0.6], [0.8, 0.7], [0.95, 0.4]],
                  [[1, 2], [3, 4], [5, 6]], [2, 2, 1])
    # rows 2 and 0 of the burst's output (e.g. two tasks batched on one model), in that order
    got = detect_rows(out, [2, 0], [(480, 640), SOURCE], MODEL, [0.3, 0.7], [5, 5])
    assert [d.class_ids.tolist() for d in got] == [[5], [1]]
    np.testing.assert_array_equal(got[0].boxes, np.array([[80, 120, 240, 240]], np.float32))  # x2, y1.5
    np.testing.assert_array_equal(got[1].boxes, np.array([[160, 180, 480, 360]], np.float32))  # x4, y2.25
    all_rows = detect_rows(out, [0, 1, 2], [None] * 3, MODEL, [0.0] * 3, [1, 1, 1])
    assert [d.class_ids.tolist() for d in all_rows] == [[1], [3], [5]]


def test_a_detection_output_of_the_wrong_form_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(boxes, scores, labels, counts\)"):
        detect_rows(torch.zeros(1, 4), [0], [None], MODEL, [0.5], [1])
    with pytest.raises(ValueError, match="N x K x 4"):
        detect_rows((torch.zeros(1, 2, 5), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1)), [0], [None],
                    MODEL, [0.5], [1])


# -- mask_rows -----------------------------------------------------------------------------------------------------
def _quadrant_logits(n: int, classes: int = 4, size: int = 4) -> torch.Tensor:
    """Row r: class (quadrant + r) % classes wins in each quadrant of a size x size map."""
    logits = torch.zeros(n, classes, size, size)
    half = size // 2
    for r in range(n):
        for q, (ys, xs) in enumerate([(slice(0, half), slice(0, half)), (slice(0, half), slice(half, size)),
                                      (slice(half, size), slice(0, half)), (slice(half, size), slice(half, size))]):
            logits[r, (q + r) % classes, ys, xs] = 1.0
    return logits


def test_mask_at_the_source_size_is_the_nearest_class_of_each_source_pixel() -> None:
    logits = _quadrant_logits(1)
    (row,) = mask_rows(logits, [0], [(6, 10)])
    assert row.mask.shape == (6, 10) and row.mask.dtype == np.uint8
    expected = np.zeros((6, 10), np.uint8)
    expected[:3, 5:], expected[3:, :5], expected[3:, 5:] = 1, 2, 3
    np.testing.assert_array_equal(row.mask, expected)
    assert row.summary == segment_rows(logits, [0])[0]  # the summary at the model's resolution, as before


def test_masks_of_a_burst_at_different_sizes_and_at_the_model_size() -> None:
    logits = _quadrant_logits(3)
    rows = mask_rows(logits, [2, 0, 1], [(8, 8), None, (2, 2)])
    assert [r.mask.shape for r in rows] == [(8, 8), (4, 4), (2, 2)]
    np.testing.assert_array_equal(rows[1].mask, logits[0].argmax(0).numpy().astype(np.uint8))
    np.testing.assert_array_equal(rows[2].mask, np.array([[1, 2], [3, 0]], np.uint8))  # row 1: classes shifted by 1
    np.testing.assert_array_equal(rows[0].mask[::4, ::4], np.array([[2, 3], [0, 1]], np.uint8))
    assert [r.summary for r in rows] == segment_rows(logits, [2, 0, 1])


def test_a_mask_nobody_wants_is_not_made_but_its_summary_is() -> None:
    logits = _quadrant_logits(3)
    rows = mask_rows(logits, [0, 1, 2], [(8, 8), (8, 8), None], wanted=[False, True, False])
    assert [r.mask is None for r in rows] == [True, False, True]
    np.testing.assert_array_equal(rows[1].mask, mask_rows(logits, [1], [(8, 8)])[0].mask)
    assert [r.summary for r in rows] == segment_rows(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="2 wanted"):
        mask_rows(logits, [0, 1, 2], [None] * 3, wanted=[True, True])


def test_more_than_256_classes_do_not_fit_a_mono8_mask() -> None:
    with pytest.raises(ValueError, match="257 classes"):
        mask_rows(torch.zeros(1, 257, 2, 2), [0], [None])


# -- labels --------------------------------------------------------------------------------------------------------
def test_labels_file_one_name_per_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("background\ncar\n\nperson\n\n", encoding="utf-8")
    assert read_labels_file(str(path)) == ("background", "car", "", "person")  # a blank line: an unnamed id
    assert class_names_for(str(path), ("x",)) == ("background", "car", "", "person")  # the file wins
    assert class_names_for("", ("x", "y")) == ("x", "y")  # else the model's own names
    assert class_names_for("", None) == ()


@pytest.mark.parametrize(("content", "match"), [
    (None, "does not exist"), (b"\xff\xfe\x00bad", "is not UTF-8 text"), (b"\n\n", "names no class"),
    ("dir", "is not a regular file")])
def test_labels_file_errors_name_the_parameter(tmp_path: Path, content: bytes | str | None, match: str) -> None:
    path = tmp_path / "labels.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    raw = {"topic": "/cam", "rate": 10.0, "model": "resnet18", "labels_file": str(path)}
    with pytest.raises(ConfigError, match=match) as err:
        validate_task("front", raw)
    assert err.value.parameter == "tasks.front.labels_file"


# -- parameters ----------------------------------------------------------------------------------------------------
def test_perception_parameters_defaults_and_named_errors() -> None:
    t = validate_task("front", {"topic": "/cam", "rate": 10.0, "model": "resnet18"})
    assert (t.score_threshold, t.max_detections, t.labels_file, t.mask_resolution) == (0.5, 100, "", "source")
    assert (t.output_topic, t.detections_topic, t.mask_topic, t.labels_topic) == (
        "daris/front/result", "daris/front/detections", "daris/front/mask", "daris/front/labels")
    base = {"topic": "/cam", "rate": 10.0, "model": "resnet18"}
    for fld, value, match in (("score_threshold", 1.5, "out of range"), ("max_detections", 0, "out of range"),
                              ("max_detections", 1001, "out of range"), ("mask_resolution", "half", "not one of"),
                              ("mask_topic", "daris/front/result", "also the task's output_topic")):
        with pytest.raises(ConfigError, match=match) as err:
            validate_task("front", {**base, fld: value})
        assert err.value.parameter == f"tasks.front.{fld}"
    with pytest.raises(ConfigError) as err:  # an output topic of another task
        settings_from_mapping({"task_names": ["a", "b"], "tasks": {
            "a": {**base, "topic": "/a"}, "b": {**base, "topic": "/b", "labels_topic": "daris/a/mask"}}})
    assert err.value.parameter == "tasks.b.labels_topic"
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"perception_msgs": "ros1", "task_names": []})
    assert err.value.parameter == "perception_msgs"


# -- the engine's path ---------------------------------------------------------------------------------------------
class FixedDetector(nn.Module):
    """A deterministic detector (issue 16's contract): two boxes in model-input pixels, K = 4 slots."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = "detection"  # attributes build_torchscript_staged reads
        self.num_classes = 3
        self.max_detections = 4
        self.class_names = ["background", "car", "person"]
        self.probe = nn.Conv2d(3, 1, 1)
        self.register_buffer("boxes", torch.tensor([[80.0, 160.0, 160.0, 240.0], [0.0, 0.0, 32.0, 32.0],
                                                    [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        self.register_buffer("scores", torch.tensor([0.9, 0.2, 0.0, 0.0]))
        self.register_buffer("labels", torch.tensor([2, 1, 0, 0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        zero = self.probe(x).sum() * 0.0  # the output follows the input (batch size, device), not its pixels
        return (self.boxes.repeat(n, 1, 1) + zero, self.scores.repeat(n, 1) + zero, self.labels.repeat(n, 1),
                torch.full((n,), 2, dtype=torch.int64))


def _fixed_detector_file(tmp_path: Path) -> str:
    path = tmp_path / "fixed_detector.pt"
    torch.jit.save(torch.jit.script(FixedDetector()), str(path))
    return str(path)


def test_a_torchscript_detector_declares_its_kind_names_and_k(tmp_path: Path) -> None:
    path = _fixed_detector_file(tmp_path)
    assert is_known_model(path) and not is_known_model(str(tmp_path / "missing.pt"))
    model = build_staged_model(path, input_size=MODEL)
    assert (model.kind, model.num_classes, model.max_detections) == ("detection", 3, 4)
    assert model.class_names == ("background", "car", "person")
    assert model.merged().class_names == model.class_names  # no_staging keeps them
    with pytest.raises(ValueError, match="does not match"):
        build_staged_model("d", torchscript=path, kind="segmentation")


def test_engine_publishes_boxes_in_source_pixels_and_masks_at_the_source_size(tmp_path: Path) -> None:
    labels = tmp_path / "voc.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(21)), encoding="utf-8")
    # HP: always admitted (an LP job could be rejected on a loaded machine)
    tasks = (TaskSettings("det", "/det", "HP", 1.0, 1.0, _fixed_detector_file(tmp_path), input_size=MODEL,
                          score_threshold=0.5),
             TaskSettings("seg", "/seg", "HP", 1.0, 1.0, "unet", input_size=(32, 32), labels_file=str(labels)),
             TaskSettings("seg_model", "/seg2", "HP", 1.0, 1.0, "unet", input_size=(32, 32),
                          mask_resolution="model"),
             TaskSettings("seg_unread", "/seg3", "HP", 1.0, 1.0, "unet", input_size=(32, 32)))
    s = SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks,
                          worker_stage_timeout=0.0, skip_late=0.0)
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    try:
        e.load_models()
        assert [e.kind_of(t.name) for t in tasks] == ["detection"] + ["segmentation"] * 3
        assert e.class_names("det") == ("background", "car", "person")  # the model's own
        assert e.class_names("seg") == tuple(f"class{i}" for i in range(21))  # the labels file
        assert e.class_names("seg_model") == ()
        e.profile()
        e.start()
        e.offer("det", np.zeros((*SOURCE, 3), np.uint8))
        e.offer("seg", np.zeros((48, 80, 3), np.uint8))
        e.offer("seg_model", np.zeros((48, 80, 3), np.uint8))
        e.set_mask_wanted("seg_unread", False)  # (the node: no subscriber on its mask topic)
        e.offer("seg_unread", np.zeros((48, 80, 3), np.uint8))
        t0 = time.monotonic()
        while len(results) < 4:
            assert time.monotonic() - t0 < 60, [r.task for r in results]
            time.sleep(0.01)
        drain(e, 60.0)
    finally:
        e.close()
    by_task = {r.task: r for r in results}
    det = by_task["det"]
    assert det.error == "" and det.kind == "detection" and det.source_size == SOURCE
    assert isinstance(det.detections, Detections) and det.mask is None
    np.testing.assert_array_equal(det.detections.boxes, np.array([[320, 360, 640, 540]], np.float32))
    assert det.detections.class_ids.tolist() == [2]  # the 0.2 box is under the threshold
    seg = by_task["seg"]
    assert seg.kind == "segmentation" and seg.source_size == (48, 80) and seg.detections is None
    assert seg.mask is not None and seg.mask.shape == (48, 80) and seg.mask.dtype == np.uint8
    assert int(seg.mask.max()) < 21 and seg.segmentation is not None and seg.segmentation[:2] == (32, 32)
    assert set(np.unique(seg.mask).tolist()) <= set(seg.segmentation[2])
    assert by_task["seg_model"].mask is not None and by_task["seg_model"].mask.shape == (32, 32)
    unread = by_task["seg_unread"]
    assert unread.error == "" and unread.mask is None and unread.segmentation is not None


class WideSegmenter(nn.Module):
    """A TorchScript segmenter of 300 classes (a 1x1 convolution): more than a mono8 mask can hold."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = "segmentation"
        self.head = nn.Conv2d(3, 300, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_a_segmentation_model_with_more_than_256_classes_fails_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "wide.pt"
    torch.jit.save(torch.jit.script(WideSegmenter()), str(path))
    tasks = (TaskSettings("seg", "/seg", "LP", 0.1, 1.0, str(path), input_size=(16, 16)),)
    e = Engine(SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, tasks=tasks), on_result=lambda _r: None)
    try:
        with pytest.raises(ConfigError, match="300 classes") as err:
            e.load_models()
        assert err.value.parameter == "tasks.seg.model"
    finally:
        e.close()


class _CountingDecoder:
    """Frames as arrays, decoded in a pool of two threads; counts its warm-ups per thread."""

    threads = 2

    def __init__(self) -> None:
        import threading

        self.warmed: list[str] = []
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        import threading

        with self._lock:
            self.warmed.append(threading.current_thread().name)

    def decode(self, tasks: list[TaskSettings], payloads: list[np.ndarray]) -> list[np.ndarray]:
        return list(payloads)


def test_warm_up_runs_every_model_once_and_the_decoder_in_each_thread(tmp_path: Path) -> None:
    """The release path before the first release (what the loop does on a CUDA device): the decoder's warm-up in
    every decode thread, then per model key a resized frame through every stage and the post-processing."""
    tasks = (TaskSettings("det", "/det", "HP", 1.0, 1.0, _fixed_detector_file(tmp_path), input_size=MODEL),
             TaskSettings("seg", "/seg", "LP", 1.0, 1.0, "unet", input_size=(32, 32)),
             TaskSettings("seg2", "/seg2", "LP", 1.0, 1.0, "unet", input_size=(32, 32)),  # the same model key
             TaskSettings("cls", "/cls", "LP", 1.0, 1.0, "resnet18", input_size=(32, 32)))
    decoder = _CountingDecoder()
    e = Engine(SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks),
               on_result=lambda _r: None, decoder=decoder)
    try:
        e.load_models()
        warmed = e.warm_up()
    finally:
        e.close()
    assert len(warmed) == 3 and [k.split("@")[0] for k in warmed] == [tasks[0].model, "unet", "resnet18"]
    assert len(decoder.warmed) == 2 and len(set(decoder.warmed)) == 2  # once in each of the pool's threads


class _FailingWarmUpDecoder(_CountingDecoder):
    threads = 0  # (decoded in the loop: its warm-up is called there)

    def warm_up(self) -> None:
        super().warm_up()
        raise RuntimeError("no nvJPEG here")


def test_a_failing_warm_up_step_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    tasks = (TaskSettings("cls", "/cls", "HP", 1.0, 1.0, "resnet18", input_size=(32, 32)),)
    decoder = _FailingWarmUpDecoder()
    e = Engine(SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks),
               on_result=lambda _r: None, decoder=decoder)
    try:
        e.load_models()
        with caplog.at_level("WARNING", logger="daris_ros"):
            warmed = e.warm_up()
    finally:
        e.close()
    assert len(decoder.warmed) == 1 and len(warmed) == 1  # the decoder's failure did not stop the model's warm-up
    assert "decoder warm-up failed (RuntimeError: no nvJPEG here)" in caplog.text


def test_a_detectors_score_floor_is_its_tasks_lowest_threshold_also_for_tasks_added_at_run_time() -> None:
    from daris_ros.runtime.models.detection import DenseDetectStage

    ssd = "ssdlite320_mobilenet_v3_large"
    tasks = (TaskSettings("front", "/front", "HP", 1.0, 1.0, ssd, input_size=(64, 64), score_threshold=0.6),)
    e = Engine(SchedulerSettings(policy="STR", n_contexts=1, n_streams=1, profile_runs=1, tasks=tasks),
               on_result=lambda _r: None)

    def floor(key_size: int) -> float:
        (model,) = [m for k, m in e.models.items() if k.startswith(f"{ssd}@{key_size}x")]
        assert isinstance(model.stages[-1], DenseDetectStage)
        return float(model.stages[-1].score_floor)
    try:
        e.load_models()
        e.profile()
        e.start()
        assert floor(64) == pytest.approx(0.6)
        e.add_task(TaskSettings("left", "/left", "LP", 1.0, 1.0, ssd, input_size=(64, 64), score_threshold=0.3))
        assert floor(64) == pytest.approx(0.3)  # the same model: the lower threshold
        e.add_task(TaskSettings("rear", "/rear", "LP", 1.0, 1.0, ssd, input_size=(96, 96), score_threshold=0.7))
        assert floor(96) == pytest.approx(0.7) and floor(64) == pytest.approx(0.3)  # a new model: its own
    finally:
        e.close()
