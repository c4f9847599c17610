"""config/vehicle_perception.yaml (issue 16): HP detectors on the front cameras, LP segmentation on the sides and LP
classification at the rear, all JPEG CompressedImage, on the str backend with fp16, channels-last and batching.
The node's settings code and daris-bench --params-file read it; a CPU variant of it (a test-local copy: cpu
backend, tiny inputs, fp32) runs one 1280x720 frame per camera through the engine and gets each task's kind of
result. Also: the README's first parameter example (and config/default.yaml, which it mirrors) has a detector."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from daris_ros.bench.cli import parse_args
from daris_ros.bench.engine_run import node_scheduler_parameters
from daris_ros.runtime.driver import drain
from daris_ros.runtime.engine import Engine, JobResult
from daris_ros.runtime.models.detection import DETECTION_MODELS
from daris_ros.runtime.models.registry import SEGMENTATION_MODELS
from daris_ros.settings import SchedulerSettings, load_parameter_file, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
VEHICLE = REPO / "config" / "vehicle_perception.yaml"
SOURCE = (720, 1280)  # the cameras' 1280x720 frames (H, W)
#: The CPU variant's input size per model (tiny: a loaded 2-core machine runs the set in seconds).
TINY_INPUT = {"ssdlite320_mobilenet_v3_large": [64, 64], "lraspp_mobilenet_v3_large": [32, 64],
              "resnet18": [32, 32]}


def _kind(model: str) -> str:
    return ("detection" if model in DETECTION_MODELS else "segmentation" if model in SEGMENTATION_MODELS
            else "classification")


def test_the_vehicle_perception_set() -> None:
    s = settings_from_mapping(load_parameter_file(VEHICLE))
    assert (s.backend, s.device, s.policy) == ("str", "cuda:0", "STR") and s.batching and s.gpu_decode
    assert 1 in s.batch_sizes
    by_name = {t.name: t for t in s.tasks}
    hp = sorted(t.name for t in s.tasks if t.priority == "HP")
    assert hp == ["front_left", "front_right"]
    for t in s.tasks:
        assert t.input_type == "compressed" and t.topic.endswith("/compressed"), t.name
        assert t.precision == "fp16" and t.channels_last, t.name
        assert (_kind(t.model) == "detection") == (t.priority == "HP"), t.name  # HP = the front detectors
        assert t.deadline == t.period
    assert {_kind(t.model) for t in s.tasks if t.priority == "LP"} == {"segmentation", "classification"}
    front = by_name["front_left"]
    assert front.rate == 30.0 and front.detections_topic == "daris/front_left/detections"
    assert by_name["left"].mask_topic == "daris/left/mask"
    # tasks of one model share input size, precision and layout: they batch together
    for model in {t.model for t in s.tasks}:
        group = [t for t in s.tasks if t.model == model]
        assert len(group) == 2 and len({(t.input_size, t.precision, t.channels_last) for t in group}) == 1, model
    # the segmenters keep the cameras' 16:9
    h, w = by_name["left"].input_size
    assert abs(w / h - SOURCE[1] / SOURCE[0]) < 0.02


def test_daris_bench_reads_it() -> None:
    params = node_scheduler_parameters(VEHICLE)
    assert (params["backend"], params["policy"], params["n_streams"], params["batching"]) == ("str", "STR", 3, True)
    assert parse_args(["--params-file", str(VEHICLE), "--device", "cuda:0"]).params_file == str(VEHICLE)


def _cpu_variant() -> SchedulerSettings:
    """The set on the cpu backend: tiny inputs, fp32 (channels-last kept), every job run, no hang check."""
    params: dict[str, Any] = load_parameter_file(VEHICLE)
    params.update(backend="cpu", device="cpu", n_streams=2, profile_runs=1, feasibility="warn", skip_late=0.0,
                  worker_stage_timeout=0.0, batch_lp_admit_margin=0.0)
    for name in params["task_names"]:
        params[f"tasks.{name}.input_size"] = TINY_INPUT[params[f"tasks.{name}.model"]]
        params[f"tasks.{name}.precision"] = "fp32"
        params[f"tasks.{name}.priority"] = "HP"  # always admitted: an LP job could be rejected on a loaded machine
        params[f"tasks.{name}.rate"] = 1.0
        params[f"tasks.{name}.score_threshold"] = 0.0  # random weights: their scores are low
    return settings_from_mapping(params)


@pytest.mark.slow
def test_a_cpu_variant_runs_one_frame_per_camera() -> None:
    s = _cpu_variant()
    results: list[JobResult] = []  # (list.append is atomic: the engine's loop appends)
    e = Engine(s, on_result=results.append)
    try:
        e.load_models()
        e.profile()
        e.start()
        frame = np.random.default_rng(0).integers(0, 255, (*SOURCE, 3), dtype=np.uint8)
        for t in s.tasks:
            e.offer(t.name, frame)
        t0 = time.monotonic()
        while len({r.task for r in results}) < len(s.tasks):
            assert time.monotonic() - t0 < 120, sorted({r.task for r in results})
            time.sleep(0.02)
        drain(e, 60.0)
    finally:
        e.close()
    first = {}
    for r in results:
        first.setdefault(r.task, r)
    assert set(first) == {t.name for t in s.tasks}
    for t in s.tasks:
        r = first[t.name]
        assert r.error == "" and r.kind == _kind(t.model), (t.name, r.error, r.kind)
        assert r.source_size == SOURCE
        if r.kind == "detection":
            assert r.detections is not None and r.mask is None
            boxes = r.detections.boxes
            assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(r.detections) <= t.max_detections
            # boxes in the camera's pixels (the model ran at 64x64)
            assert np.all(boxes[:, 0::2] <= SOURCE[1]) and np.all(boxes[:, 1::2] <= SOURCE[0]) and np.all(boxes >= 0)
        elif r.kind == "segmentation":
            assert r.mask is not None and r.mask.shape == SOURCE and r.detections is None
            assert int(r.mask.max()) < 21
        else:
            assert len(r.class_ids) == s.top_k and r.detections is None and r.mask is None


def _first_yaml_block(markdown: str) -> str:
    match = re.search(r"^```yaml\n(.*?)^```", markdown, re.S | re.M)
    assert match is not None, "README.md has no yaml block"
    return match.group(1)


def test_the_readmes_first_parameter_example_is_a_detector_and_mirrors_the_default_file() -> None:
    raw = yaml.safe_load(_first_yaml_block((REPO / "README.md").read_text(encoding="utf-8")))
    readme = settings_from_mapping(raw["/**/daris_scheduler"]["ros__parameters"])
    default = settings_from_mapping(load_parameter_file(REPO / "config" / "default.yaml"))
    front = readme.tasks[0]
    assert front.name == "front" and front.priority == "HP" and _kind(front.model) == "detection"
    assert front.detections_topic == "daris/front/detections"
    assert [(t.name, t.topic, t.priority, t.model, t.period, t.input_size) for t in readme.tasks] == \
        [(t.name, t.topic, t.priority, t.model, t.period, t.input_size) for t in default.tasks]
    assert (readme.policy, readme.backend, readme.n_contexts) == (default.policy, default.backend, default.n_contexts)
