"""bench.intake_cost's CPU parts (the measurement itself needs ROS: docs/benchmarks/intake/), and the variant-runs
helpers it shares with bench.decode_interference."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from daris_ros.bench.intake_cost import VARIANTS, main, thread_cpu
from daris_ros.bench.variant_runs import record_run


def test_an_unknown_variant_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--variants", "intake,events", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown events" in err and all(v in err for v in VARIANTS)


def test_thread_cpu_counts_the_named_thread_only() -> None:
    me = threading.get_native_id()
    before = thread_cpu([me])
    total = 0
    for i in range(3_000_000):  # about 0.1-0.3 s of CPU
        total += i
    assert thread_cpu([me]) - before > 0.02
    idle = threading.Thread(target=threading.Event().wait, args=(0.3,))
    idle.start()
    assert idle.native_id is not None
    assert thread_cpu([idle.native_id]) < 0.05  # a waiting thread spends (almost) nothing
    idle.join()
    assert thread_cpu([-1]) == 0.0  # a thread that is not there counts nothing


def test_each_run_is_recorded_at_once(tmp_path: Path) -> None:
    doc = {"runs": []}
    record_run(doc, {"variant": "a", "x": 1}, tmp_path, "bench", lambda d: f"{len(d['runs'])} run(s)\n")
    record_run(doc, {"variant": "b", "x": 2}, tmp_path, "bench", lambda d: f"{len(d['runs'])} run(s)\n")
    assert [r["variant"] for r in json.loads((tmp_path / "bench.json").read_text())["runs"]] == ["a", "b"]
    assert (tmp_path / "bench.md").read_text() == "2 run(s)\n"
