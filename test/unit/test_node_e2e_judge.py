"""daris-node-e2e's scenario and judging, without ROS: served within 2 periods of the stamp, the window, the frame
accounting of both systems, the parameter file and the report."""

from __future__ import annotations

import argparse

import pytest

from daris_ros.bench.node_e2e import (
    NS,
    build_parser,
    judge,
    loop_load,
    make_cameras,
    max_cameras,
    node_params,
    parse_group,
    render_md,
    summary_of,
)

GROUP = parse_group("HP:resnet18:1,LP:unet:1")


def test_cameras_in_whole_groups():
    cams = make_cameras(4, GROUP, 30.0, lp_rate=15.0)
    assert [(c.priority, c.model, c.rate) for c in cams] == [("HP", "resnet18", 30.0), ("LP", "unet", 15.0)] * 2
    assert cams[3].task == "cam03_lp_unet" and cams[3].result_topic == "/daris/cam03_lp_unet/result"
    assert len({c.topic for c in cams}) == 4
    default = make_cameras(48, parse_group("HP:resnet50:4,LP:resnet18:4,LP:unet:4"), 30.0)
    assert sum(c.priority == "HP" for c in default) == 16 and sum(c.model == "unet" for c in default) == 16
    with pytest.raises(ValueError):
        make_cameras(3, GROUP, 30.0)
    with pytest.raises(ValueError):
        parse_group("XP:resnet18:1")


def test_a_group_gives_its_models_input_size():
    """PRIORITY:MODEL:COUNT[:HxW]: detectors and segmenters at their own sizes, the rest at --input-size (or the
    model's default when that is not given either)."""
    group = parse_group("HP:ssdlite320_mobilenet_v3_large:1:320x320,LP:lraspp_mobilenet_v3_large:1:288x512,"
                        "LP:resnet18:1")
    assert [(g.priority, g.model, g.cameras, g.input_size) for g in group] == [
        ("HP", "ssdlite320_mobilenet_v3_large", 1, (320, 320)), ("LP", "lraspp_mobilenet_v3_large", 1, (288, 512)),
        ("LP", "resnet18", 1, None)]
    cams = make_cameras(3, group, 30.0, lp_rate=15.0)
    args = build_parser().parse_args(["--input-size", "64x64"])
    tasks = node_params(args, cams)["/**/daris_scheduler"]["ros__parameters"]["tasks"]
    assert [tasks[c.task]["input_size"] for c in cams] == [[320, 320], [288, 512], [64, 64]]
    assert [tasks[c.task]["model"] for c in cams] == [g.model for g in group]
    plain = node_params(build_parser().parse_args([]), cams)["/**/daris_scheduler"]["ros__parameters"]["tasks"]
    assert "input_size" not in plain[cams[2].task] and plain[cams[0].task]["input_size"] == [320, 320]
    for bad in ("HP:resnet18:1:big", "HP:resnet18:1:0x4", "HP:resnet18:1:2x2:x"):
        with pytest.raises(ValueError):
            parse_group(bad)


def test_node_params_per_task():
    args = build_parser().parse_args(["--precision", "fp16", "--input-size", "64x48", "--batching",
                                      "--batch-sizes", "1,2,4", "--param", "afet_cache=/tmp/a.json"])
    p = node_params(args, make_cameras(2, GROUP, 30.0))["/**/daris_scheduler"]["ros__parameters"]
    assert p["backend"] == "green" and p["n_contexts"] == 3 and p["batching"] is True
    assert p["batch_sizes"] == [1, 2, 4] and p["afet_cache"] == "/tmp/a.json"
    t = p["tasks"][p["task_names"][0]]
    assert t["input_type"] == "compressed" and t["precision"] == "fp16" and t["input_size"] == [64, 48]
    assert t["input_size"] is not p["tasks"][p["task_names"][1]]["input_size"]  # (no YAML anchors)


def _res(job, stamp_ms, receipt_ms, met=True, prio=0):
    s, r = stamp_ms * 1_000_000, receipt_ms * 1_000_000
    return [job, prio, met, s, r, r - 1_000_000, s + 1_000_000, s + 2_000_000]


def test_judge_served_window_and_accounting():
    cams = make_cameras(2, GROUP, 10.0)  # HP period 100 ms: served within 200 ms
    hp, lp = cams[0].task, cams[1].task
    ms = 1_000_000
    published = {hp: [0, 100 * ms, 200 * ms, 300 * ms, 400 * ms], lp: [50 * ms, 150 * ms]}
    results = {hp: [_res(0, 0, 50),  # before the window: not counted
                    _res(1, 100, 250),  # served (150 ms)
                    _res(2, 200, 450, met=False),  # late (250 ms), the node's own flag says missed
                    _res(3, 200, 460),  # a duplicate of the same frame
                    _res(4, 999, 1000)],  # a stamp never published (outside the window too)
               lp: [_res(0, 150, 200, prio=1)]}
    stats = {hp: {"frames": 5, "released": 3, "superseded": 1, "dropped": 0, "pending": 1, "completed": 5},
             lp: {"frames": 2, "released": 1, "superseded": 0, "dropped": 0, "pending": 0, "completed": 1}}
    out = judge(cams, published, results, (100 * ms, 400 * ms), node_stats=stats)
    assert out["hp_frames"] == 4 and out["hp_served_n"] == 1 and out["hp_served"] == 0.25
    assert out["hp_missed"] == 1 and out["hp_results"] == 2
    assert out["hp_e2e_p99_ms"] == pytest.approx(250.0)
    assert out["results_duplicate"] == 1 and out["results_unmatched"] == 1
    assert out["frames_lost_in_transport"] == 0 and out["frames_uncounted"] == 1  # lp: 2 received, 1 accounted
    assert out["lp_frames"] == 1 and out["lp_served"] == 1.0
    # DMR by the node's own flag over the whole run: missed results / jobs the node released
    assert out["hp_released"] == 3 and out["hp_dmr"] == pytest.approx(1 / 3, abs=1e-5)
    assert out["lp_released"] == 1 and out["lp_missed"] == 0 and out["lp_dmr"] == 0.0 and out["lp_rejected"] == 0
    assert out["reader_delay_p99_ms"] == pytest.approx(1.0)
    rows = {r["task"]: r for r in out["tasks"]}
    assert rows[lp]["uncounted"] == 1 and rows[hp]["uncounted"] == 0 and rows[hp]["superseded"] == 1


def test_judge_per_camera_counts():
    cams = make_cameras(2, GROUP, 10.0)
    hp, lp = cams[0].task, cams[1].task
    published = {hp: [0, NS // 10], lp: [0]}
    counts = {hp: {"received": 1, "processed": 1, "failed": 0}, lp: {"received": 1, "processed": 0, "failed": 1}}
    out = judge(cams, published, {hp: [_res(0, 0, 10)]}, (0, NS), camera_counts=counts)
    assert out["frames_lost_in_transport"] == 1 and out["frames_uncounted"] == 0
    assert out["hp_served"] == 0.5 and "frames_superseded" not in out
    assert out["hp_released"] == 1 and out["hp_dmr"] == 0.0 and out["lp_released"] == 0 and out["lp_dmr"] is None


def test_max_cameras_and_report():
    runs = [{"system": "node", "cameras": 12, "hp_served": 1.0}, {"system": "node", "cameras": 24, "hp_served": 0.995},
            {"system": "per-camera", "cameras": 12, "hp_served": 0.9}, {"system": "node", "cameras": 36, "error": "x"}]
    assert max_cameras(runs, "node", 0.99) == 24 and max_cameras(runs, "per-camera", 0.99) is None
    full = {"hp_frames": 1, "hp_missed": 0, "hp_e2e_p50_ms": 1.0, "hp_e2e_p99_ms": 2.0, "lp_served": 1.0,
            "frames_lost_in_transport": 0, "frames_uncounted": 0, "results_not_read": 0, "reader_delay_p99_ms": 1.0,
            "cpu_cores": 1.0, "gpu_mem_gb": 0.0, "startup_s": 1.0}
    runs = [{**full, **r} if "error" not in r else r for r in runs]
    s = summary_of(runs, 0.99)
    assert s["cameras"] == 24 and s["max_cameras_node"] == 24 and s["max_cameras_per_camera_nodes"] is None
    md = render_md({"served_target": 0.99, "command": "c", "commit": "x", "device": "cpu", "date": "d",
                    "scenario": "s", "max_cameras": {"node": 24}, "runs": runs, "node_e2e": s})
    assert "| node | 24 | 1 | 99.50% |" in md and "error: x" in md and "LP DMR" in md
    runs[1]["lp_dmr"], runs[1]["lp_rejected"] = 0.0125, 3
    md = render_md({"served_target": 0.99, "command": "c", "commit": "x", "device": "cpu", "date": "d",
                    "scenario": "s", "max_cameras": {"node": 24}, "runs": runs, "node_e2e": summary_of(runs, 0.99)})
    assert "| 100.00% | 1.25%; 3 |" in md and summary_of(runs, 0.99)["lp_dmr"] == 0.0125
    assert isinstance(build_parser().parse_args([]), argparse.Namespace)


def test_loop_load_over_the_window_only():
    window = (10 * NS, 20 * NS)
    samples = [[9 * NS, 0.1, 10.0], [11 * NS, 0.8, 40.0], [15 * NS, 0.6, 45.0], [21 * NS, 0.0, 50.0]]
    assert loop_load(samples, window) == {"loop_busy_share": 0.7, "loop_busy_share_max": 0.8,
                                          "host_us_per_release": 45.0}
    assert loop_load(samples[:1], window) == {"loop_busy_share": None, "loop_busy_share_max": None,
                                              "host_us_per_release": None}
