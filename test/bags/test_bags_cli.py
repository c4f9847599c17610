"""The command-line tools: daris-make-bag in-process; daris-play -> daris-record as two processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rosbags.rosbag2 import Reader

from daris_ros.bags.info import daris_info, topic_counts
from daris_ros.bags.synth import SynthConfig
from daris_ros.tools import make_bag

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_make_bag_cli_writes_the_configured_bag(tmp_path, capsys):
    out = tmp_path / "cams"
    argv = [str(out), "--cameras", "3", "--width", "40", "--height", "30", "--encoding", "mono16"]
    argv += ["--rate", "15", "--duration", "1", "--jitter-ms", "2", "--drop-prob", "0.2", "--seed", "7"]
    argv += ["--prefix", "/sim", "--qos-overrides", str(tmp_path / "qos.yaml")]
    assert make_bag.main(argv) == 0
    cfg = SynthConfig(
        cameras=3,
        width=40,
        height=30,
        encoding="mono16",
        rate=15,
        duration=1,
        jitter_ms=2,
        drop_prob=0.2,
        seed=7,
        prefix="/sim",
    )
    expected = cfg.expected_counts()
    assert topic_counts(out) == expected
    with Reader(out) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == expected
        assert sum(1 for _ in reader.messages()) == sum(expected.values())
    assert daris_info(out, "synth")["encoding"] == "mono16"
    assert set(yaml.safe_load((tmp_path / "qos.yaml").read_text())) == set(expected)
    assert "wrote" in capsys.readouterr().out
    # the output exists: refused, nothing overwritten
    assert make_bag.main([str(out), "--quiet"]) != 0


def test_make_bag_cli_sqlite3_png(tmp_path):
    out = tmp_path / "png"
    argv = [str(out), "--cameras", "1", "--width", "32", "--height", "24", "--encoding", "png"]
    argv += ["--rate", "10", "--duration", "0.3", "--storage", "sqlite3", "--reliability", "reliable", "-q"]
    assert make_bag.main(argv) == 0
    with Reader(out) as reader:
        (conn,) = reader.connections
        assert conn.topic == "/cameras/cam0/image_raw/compressed"
        assert conn.msgtype == "sensor_msgs/msg/CompressedImage" and conn.msgcount == 3
        assert conn.ext.offered_qos_profiles[0].reliability.name == "RELIABLE"
    assert (out / "png.db3").is_file()


def test_make_bag_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_bag.main([str(tmp_path / "x"), "--encoding", "yuv"])
    assert make_bag.main([str(tmp_path / "y"), "--width", "4", "-q"]) == 2
    capsys.readouterr()


@pytest.mark.ros
def test_play_cli_into_record_cli_then_ctrl_c(tmp_path, small_bag):
    """Two processes: daris-record (one topic typed, one discovered, one remapped) and daris-play
    (reliable, waits for the recorder). Ctrl-C ends the recorder, which must still close the bag."""
    with Reader(small_bag) as reader:
        expected = {c.topic: c.msgcount for c in reader.connections}
    out = tmp_path / "rec"
    record_cmd = [sys.executable, "-m", "daris_ros.tools.record_bag", str(out)]
    record_cmd += ["/cameras/cam0/image_raw=sensor_msgs/msg/Image", "/renamed/cam1"]
    record_cmd += ["--qos", "reliable", "--storage", "sqlite3"]
    play_cmd = [sys.executable, "-m", "daris_ros.tools.play_bag", str(small_bag), "--rate", "5", "--reliable"]
    play_cmd += ["--wait-subscribers", "1", "--wait-timeout", "15", "--clock"]
    play_cmd += ["--remap", "/cameras/cam1/image_raw:=/renamed/cam1"]
    record = subprocess.Popen(
        record_cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        play = subprocess.run(play_cmd, env=_env(), capture_output=True, text=True, timeout=60)
        assert play.returncode == 0, play.stdout + play.stderr
        assert f"published {sum(expected.values())} messages" in play.stdout
        time.sleep(0.5)
    finally:
        record.send_signal(signal.SIGINT)
        try:
            rec_out, _ = record.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            record.kill()
            raise
    assert record.returncode == 0, rec_out
    assert "recorded" in rec_out
    counts = topic_counts(out)
    assert counts == {
        "/cameras/cam0/image_raw": expected["/cameras/cam0/image_raw"],
        "/renamed/cam1": expected["/cameras/cam1/image_raw"],
    }
    with Reader(out) as reader:
        assert sum(1 for _ in reader.messages()) == sum(expected.values())
