"""daris-node-e2e --profile-cmd: the template filled in (pid, seconds, the run's folder), run with its output in
profiler.log, its exit status returned; one still running after the timeout is killed (None)."""

from __future__ import annotations

import sys
from pathlib import Path

from daris_ros.bench.node_e2e import start_profiler, wait_profiler


def test_no_template_no_profiler(tmp_path: Path) -> None:
    assert start_profiler("", 123, 4.0, tmp_path) is None
    assert not (tmp_path / "profiler.log").exists()


def test_template_filled_in_and_its_output_kept(tmp_path: Path) -> None:
    proc = start_profiler(f"{sys.executable} -c 'import sys; print(sys.argv[1:])' {{pid}} {{seconds}} {{out}}/x",
                          4321, 12.7, tmp_path)
    assert proc is not None
    assert wait_profiler(proc, 30.0) == 0
    assert (tmp_path / "profiler.log").read_text().strip() == str(["4321", "12", f"{tmp_path}/x"])


def test_a_profiler_that_does_not_stop_is_killed(tmp_path: Path) -> None:
    proc = start_profiler(f"{sys.executable} -c 'import time; time.sleep(60)'", 1, 1.0, tmp_path)
    assert proc is not None
    assert wait_profiler(proc, 0.5) is None
    assert proc.returncode is not None  # killed and reaped
