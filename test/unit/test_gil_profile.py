"""daris_ros.bench.gil_profile: py-spy raw stacks -> GIL share, per-thread shares, inclusive function shares."""

from __future__ import annotations

import gzip

from daris_ros.bench.gil_profile import main, parse_raw

BOOT = "_bootstrap (threading.py:1030);Thread.run (threading.py:1010)"
LOOP = f"{BOOT};Engine._run (engine.py:491);Engine._loop (engine.py:620)"
MAIN = "<module> (scheduler_node:8);main (scheduler_node.py:917);spin_until_future_complete (__init__.py:1)"
RAW = "\n".join([
    f"{LOOP};preprocess_batch (preprocess.py:172) 30",
    f"{LOOP} 10",
    f"{BOOT};SchedulerNode._publish_results (scheduler_node.py:630);Publisher.publish (publisher.py:72) 20",
    f"{MAIN};Executor._wait_for_ready_callbacks (executors.py:818) 40",
    "garbage line",
])


def test_parse_shares() -> None:
    profile = parse_raw(RAW)
    assert profile.samples == 100
    assert profile.threads == {"engine loop": 40, "result publisher": 20, "executor (main thread)": 40}
    assert profile.inclusive["Engine._loop"] == 40
    assert profile.inclusive["preprocess_batch"] == 30
    assert profile.inclusive["_bootstrap"] == 60  # counted once per stack


def test_main_writes_markdown_from_gzip(tmp_path) -> None:
    raw = tmp_path / "gil.txt.gz"
    raw.write_bytes(gzip.compress(RAW.encode()))
    out = tmp_path / "gil.md"
    assert main([str(raw), "--rate", "10", "--seconds", "20", "--out", str(out)]) == 0
    text = out.read_text()
    assert "GIL held in 100 of 200 samples (50% of the time)" in text
    assert "| engine loop | 40.0% |" in text
    assert "| `Publisher.publish` | 20.0% |" in text


def test_one_threads_samples_by_function(tmp_path) -> None:
    raw = tmp_path / "wall.txt"
    raw.write_text(RAW)
    out = tmp_path / "wall.md"
    assert main([str(raw), "--thread", "engine loop", "--top", "3", "--wall", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Where the threads spend their wall time") and "GIL" not in text
    assert "The engine loop's 40 samples by function below its root" in text
    assert "| `preprocess_batch` | 75.0% |" in text  # 30 of the loop's 40
    assert "| `(the root function itself)` | 25.0% |" in text
    assert "Publisher.publish` | " not in text.split("The engine loop's")[1]
