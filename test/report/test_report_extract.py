"""daris_ros.report.extract: a bag written with rosbags (daris_ros messages, diagnostics, images) read back
into records; no ROS needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import STORE, T

from daris_ros.bags.writer import CUSTOM_PREFIX, BagWriter
from daris_ros.report.extract import cdr_header, read_run


def _time(ns: int) -> Any:
    return T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ns: int, frame_id: str) -> Any:
    return T["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame_id)


def _result(task: str, job_id: int, stamp: int, release: int, met: bool) -> Any:
    stages = [T["daris_ros/msg/StageRecord"](stage=j, context=1, stream=0, level=2, start=0.001 * j,
                                             finish=0.001 * (j + 1), exec_time=0.0008, virtual_deadline=0.05)
              for j in range(3)]
    return T["daris_ros/msg/InferenceResult"](
        header=_header(stamp, f"{task}_frame"), task=task, job_id=job_id, priority=1, model="resnet18",
        class_ids=np.array([3, 1], np.int32), scores=np.array([0.6, 0.3], np.float32), seg_height=0,
        seg_width=0, seg_class_ids=np.array([], np.int32), seg_class_fractions=np.array([], np.float32),
        receive_time=_time(stamp + 1000), release_time=_time(release), start_time=_time(release + 10),
        finish_time=_time(release + 3_000_000), deadline=_time(release + 50_000_000), response_time=0.003,
        exec_time=0.0024, met=met, mret=0.0025, context=1, stream=0, stages=stages)


def _task_stats(task: str, frames: int) -> Any:
    return T["daris_ros/msg/TaskStats"](
        task=task, topic=f"/cam/{task}", model="resnet18", priority=1, context=1, period=0.2, deadline=0.05,
        frames=frames, superseded=0, released=frames, admitted=frames, rejected=0, completed=frames, missed=1,
        stale=0, dropped=0, migrations=0, jps=5.0, miss_rate=0.5, response_p50=0.003, response_p99=0.003,
        response_max=0.003, mret=0.0025)


def _stats(ns: int, frames: int) -> Any:
    prio = T["daris_ros/msg/PriorityStats"](
        priority=1, tasks=1, frames=frames, superseded=0, released=frames, admitted=frames, rejected=0,
        completed=frames, missed=1, stale=0, dropped=0, jps=5.0, miss_rate=0.5, response_p50=0.003,
        response_p99=0.003, response_max=0.003)
    return T["daris_ros/msg/SchedulerStats"](
        header=_header(ns, ""), node="/daris_scheduler", policy="MPS", backend="cpu", device="cpu", n_contexts=2,
        n_streams=1, oversubscription=1.0, sm_per_context=66, uptime=1.0, tasks=[_task_stats("side", frames)],
        priorities=[prio])


def _diag(level: int, message: str) -> Any:
    kv = T["diagnostic_msgs/msg/KeyValue"](key="completed", value="2")
    status = T["diagnostic_msgs/msg/DiagnosticStatus"](level=level, name="/daris_scheduler: task side",
                                                       message=message, hardware_id="cpu", values=[kv])
    return T["diagnostic_msgs/msg/DiagnosticArray"](header=_header(0, ""), status=[status])


def _image(stamp: int, frame_id: str) -> Any:
    return T["sensor_msgs/msg/Image"](header=_header(stamp, frame_id), height=2, width=2, encoding="rgb8",
                                      is_bigendian=0, step=6, data=np.zeros(12, np.uint8))


@pytest.fixture
def bag(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    replay = {"published": {"/cam/side": 2}, "input_bag": "in"}
    with BagWriter(path, default_qos=(), custom_data={f"{CUSTOM_PREFIX}replay": json.dumps(replay)}) as w:
        msgs = [
            ("/cam/side", "sensor_msgs/msg/Image", 1_000, _image(1_000, "side_frame")),
            ("/cam/side", "sensor_msgs/msg/Image", 2_000, _image(2_000, "side_frame")),
            ("/daris/side/result", "daris_ros/msg/InferenceResult", 5_000, _result("side", 1, 2_000, 4_000, False)),
            ("/daris/side/result", "daris_ros/msg/InferenceResult", 4_000, _result("side", 0, 1_000, 3_000, True)),
            ("/daris/stats", "daris_ros/msg/SchedulerStats", 6_000, _stats(6_000, 1)),
            ("/daris/stats", "daris_ros/msg/SchedulerStats", 7_000, _stats(7_000, 2)),
            ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", 6_500, _diag(0, "OK")),
            ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", 7_500, _diag(1, "stale")),
        ]
        for topic, msgtype, t, msg in msgs:
            w.write(topic, t, STORE.serialize_cdr(msg, msgtype), msgtype)
    return path


def test_read_run_records(bag: Path) -> None:
    run = read_run(bag)
    assert run.topics["/daris/side/result"] == "daris_ros/msg/InferenceResult"
    assert run.counts == {"/cam/side": 2, "/daris/side/result": 2, "/daris/stats": 2, "/diagnostics": 2}
    rows = run.results["side"]
    assert [r.job_id for r in rows] == [0, 1]  # sorted by job id, not log time
    r = rows[1]
    assert (r.priority, r.model, r.stamp_ns, r.frame_id, r.met) == ("LP", "resnet18", 2_000, "side_frame", False)
    assert (r.release_ns, r.finish_ns, r.deadline_ns, r.receive_ns) == (4_000, 3_004_000, 50_004_000, 3_000)
    assert r.response_time == pytest.approx(0.003) and r.mret == pytest.approx(0.0025)
    assert [s.stage for s in r.stages] == [0, 1, 2] and r.stages[2].finish == pytest.approx(0.003)
    assert (r.context, r.stream, r.log_ns, r.topic) == (1, 0, 5_000, "/daris/side/result")
    assert [s.log_ns for s in run.stats] == [6_000, 7_000]
    last = run.last_stats
    assert last is not None and last.tasks["side"].frames == 2 and last.n_contexts == 2
    assert last.tasks["side"].priority == "LP" and last.policy == "MPS"
    d = run.diagnostics["/daris_scheduler: task side"]
    assert d.counts == {"OK": 1, "WARN": 1} and d.last_level == "WARN" and d.last_message == "stale"
    assert d.last_values == {"completed": "2"}
    assert [(f.stamp_ns, f.frame_id) for f in run.inputs["/cam/side"]] == [(1_000, "side_frame"), (2_000, "side_frame")]
    assert run.replay == {"published": {"/cam/side": 2}, "input_bag": "in"}
    assert run.task_names() == ["side"]


def test_read_run_without_inputs(bag: Path) -> None:
    run = read_run(bag, inputs=False)
    assert run.inputs == {} and len(run.results["side"]) == 2


def test_cdr_header_of_serialised_messages() -> None:
    raw = STORE.serialize_cdr(_image(1_700_000_000_123_456_789, "cam0_optical_frame"), "sensor_msgs/msg/Image")
    assert cdr_header(raw) == (1_700_000_000_123_456_789, "cam0_optical_frame")
    long_id = "x" * 5000
    raw = STORE.serialize_cdr(_image(5, long_id), "sensor_msgs/msg/Image")
    assert cdr_header(raw) == (5, long_id)
    assert cdr_header(b"\x07\x07garbage-not-cdr!") is None
