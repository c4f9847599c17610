"""Malformed input over real DDS (issue 8, item 1, the CI subset): ``daris-fuzz`` sends a seeded mix of
malformed Image and CompressedImage frames (every kind), good frames and frame_id changes to the
scheduler node started from the install space. Every frame must be counted under its reason (stats and
/diagnostics), the accounting identity must hold, good frames must keep completing, the node must not
crash and must stop cleanly."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from reliability_helpers import start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]



def test_fuzz_subset_every_malformed_frame_counted(install_prefix, tmp_path):
    node = start_node(install_prefix, (install_prefix / "share/daris_ros/config/fuzz.yaml").read_text(), tmp_path)
    try:
        node.wait_for("running:")
        out = tmp_path / "fuzz.json"
        cmd = [str(install_prefix / "lib" / "daris_ros" / "daris-fuzz"),
               "--image-topic", "/fuzz/image_raw", "--image-task", "img",
               "--compressed-topic", "/fuzz/image_raw/compressed", "--compressed-task", "jpg",
               "--count", "400", "--seed", "7", "--rate", "300", "--release-pause", "0",
               "--max-pixels", "100000", "--future-tolerance", "1.0", "--past-tolerance", "5.0",
               "--node-pid", str(node.pid), "--json", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.exists(), p.stdout + p.stderr
        report = json.loads(out.read_text())
        assert p.returncode == 0, p.stdout + p.stderr + node.output()[-3000:]
        assert report["ok"] and report["node_alive"]
        assert report["malformed_frames_sent"] == report["malformed_frames_counted"] == 400
        for task, r in report["tasks"].items():
            assert all(r["checks"].values()), (task, r["checks"])
            assert len(r["expected_drops"]) >= 6, r["expected_drops"]  # many reasons, per task
            assert r["frame_id_changes_counted"] > 0
        assert set(report["tasks"]["img"]["expected_drops"]) >= {"bad_step", "short_data", "long_data", "zero_size",
                                                                "too_large", "unknown_encoding", "stamp_future",
                                                                "stamp_past", "zero_stamp", "undecodable"}
        assert set(report["tasks"]["jpg"]["expected_drops"]) >= {"unknown_format", "zero_size", "corrupt_compressed",
                                                                "truncated_compressed", "too_large", "undecodable"}
        assert node.proc.poll() is None, "the node crashed"
    finally:
        rc = node.stop(signal.SIGINT)
    assert rc == 0, node.output()[-3000:]
    assert "Traceback" not in node.output()
