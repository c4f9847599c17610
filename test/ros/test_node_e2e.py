"""daris-node-e2e on a tiny scenario on the cpu backend, both systems (the scheduler node, one process per camera):
camera publishers and result readers in processes of their own over real DDS. Checks the accounting and the
report, not speed (CI is a loaded 2-core machine)."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FIGURES = ("hp_frames", "hp_served", "hp_missed", "hp_e2e_p99_ms", "frames_published", "frames_received",
           "frames_lost_in_transport", "frames_uncounted", "results_read", "reader_delay_p99_ms", "cpu_cores",
           "gpu_mem_gb", "startup_s", "tasks")


@pytest.fixture(scope="module")
def e2e(install_prefix, tmp_path_factory):
    out = tmp_path_factory.mktemp("node_e2e")
    exe = install_prefix / "lib" / "daris_ros" / "daris-node-e2e"
    cmd = [str(exe), "--sweep", "3", "--systems", "node,per-camera", "--group", "HP:resnet18:1,LP:resnet18:1,LP:unet:1",
           "--rate", "2", "--width", "64", "--height", "48", "--seconds", "4", "--warmup", "1", "--backend", "cpu",
           "--device", "cpu", "--contexts", "1", "--os", "1", "--input-size", "32x32", "--profile-runs", "1",
           "--ready-timeout", "180", "--param", "feasibility=warn", "--out", str(out)]
    # (feasibility: warn, as the other ROS tests not about feasibility: CI's loaded cores profile ResNet18 32x32 at
    # hundreds of ms a stage, and the node would refuse the set)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, out, lines


def test_runs_and_report_files(e2e):
    proc, out, lines = e2e
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [(r["system"], r["cameras"]) for r in lines[:-1]] == [("node", 3), ("per-camera", 3)]
    report = json.loads((out / "node_e2e.json").read_text())
    assert {"command", "commit", "device", "date", "scenario", "runs", "max_cameras", "node_e2e"} <= set(report)
    assert report["command"].startswith("daris-node-e2e --sweep 3") and report["device"].startswith("cpu")
    assert [r["system"] for r in report["runs"]] == ["node", "per-camera"]
    for r in report["runs"]:
        assert "error" not in r, r.get("error")
        assert set(FIGURES) <= set(r)
    assert set(report["node_e2e"]) == {"cameras", "hp_served", "hp_missed", "frames_uncounted", "hp_e2e_p99_ms",
                                       "lp_dmr", "max_cameras_node", "max_cameras_per_camera_nodes"}
    assert report["node_e2e"]["cameras"] == 3
    assert set(report["max_cameras"]) == {"node", "per-camera"}
    md = (out / "node_e2e.md").read_text()
    assert "| node | 3 |" in md and "| per-camera | 3 |" in md and "engine_acceptance.node_e2e" in md
    for system in ("node", "per-camera"):
        assert (out / "runs" / f"{system}_3" / "run.json").is_file()
    assert (out / "runs" / "node_3" / "params.yaml").is_file()


def _published_and_read(run_dir):
    published, results = {}, {}
    for f in run_dir.glob("publisher_*[0-9].json"):
        published.update(json.loads(f.read_text())["published"])
    for f in run_dir.glob("reader_*[0-9].json"):
        results.update(json.loads(f.read_text())["results"])
    return published, results


@pytest.mark.parametrize("system", ["node", "per-camera"])
def test_results_carry_published_stamps(e2e, system):
    _, out, _ = e2e
    published, results = _published_and_read(out / "runs" / f"{system}_3")
    assert len(published) == 3 and all(len(v) >= 5 for v in published.values())  # 2 Hz for 5 s
    hp = [t for t in results if "_hp_" in t]
    assert hp and results[hp[0]], f"no HP result read: {list(results)}"
    for task, rows in results.items():
        stamps = set(published[task])
        for job_id, prio, _met, stamp, receipt, finish, receive, release in rows:
            assert stamp in stamps, f"{task} job {job_id}: stamp {stamp} was never published"
            assert prio == (0 if "_hp_" in task else 1)
            assert stamp <= receive <= release <= finish <= receipt + 50_000_000  # (clocks of one host)
        ids = [r[0] for r in rows]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert len({r[3] for r in rows}) == len(rows)  # one result per frame


def test_node_accounts_for_every_received_frame(e2e):
    _, out, lines = e2e
    r = json.loads((out / "runs" / "node_3" / "run.json").read_text())
    assert r["node_exit_code"] == 0
    assert r["frames_uncounted"] == 0 and r["results_unmatched"] == 0 and r["results_duplicate"] == 0
    assert r["frames_received"] + r["frames_lost_in_transport"] == r["frames_published"]
    for t in r["tasks"]:
        assert t["frames"] == t["released"] + t["superseded"] + t["dropped"] + t["pending"], t
        assert t["lost_in_transport"] >= 0 and t["frames"] > 0, t
        assert t["results"] <= t["completed"] <= t["released"], t
    hp = [t for t in r["tasks"] if t["priority"] == "HP"]
    assert hp[0]["completed"] > 0 and r["hp_results"] > 0
    assert 0 <= r["hp_served"] <= 1 and r["hp_served_n"] <= r["hp_frames"]
    assert r["sut_processes"] >= 1 and r["cpu_cores"] >= 0 and r["gpu_mem_gb"] == 0
    # the engine loop's load, from the node's SchedulerStats in the window (every 0.5 s over a window of seconds)
    assert 0 < r["loop_busy_share"] <= r["loop_busy_share_max"] <= 1 and r["host_us_per_release"] > 0
    lp = [t for t in r["tasks"] if t["priority"] == "LP"]
    assert r["lp_released"] == sum(t["released"] for t in lp) > 0 and r["lp_rejected"] == sum(t["rejected"] for t in lp)
    assert r["lp_dmr"] == round(r["lp_missed"] / r["lp_released"], 5)


def test_per_camera_nodes_process_every_frame_they_get(e2e):
    _, out, _ = e2e
    r = json.loads((out / "runs" / "per-camera_3" / "run.json").read_text())
    assert r["frames_uncounted"] == 0 and r["results_unmatched"] == 0 and r["results_duplicate"] == 0
    assert r["sut_processes"] >= 3
    for t in r["tasks"]:
        assert t["received"] == t["processed"] + t["failed"] and t["failed"] == 0, t
        assert t["processed"] > 0 and t["results"] <= t["processed"], t
        assert t["received"] + t["lost_in_transport"] == t["published"], t
