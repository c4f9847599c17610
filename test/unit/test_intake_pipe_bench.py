"""daris_ros.bench.intake_pipe (the CPU figures: docs/benchmarks/intake/intake_pipe.md): both framings carry every
byte from a child process, and the run writes its JSON and Markdown; an unknown variant is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daris_ros.bench.intake_pipe import main


def test_both_framings_carry_every_frame(tmp_path: Path) -> None:
    assert main(["--kb", "3", "--frames", "50", "--rate", "500", "--variants", "connection,records",
                 "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "intake_pipe.json").read_text())
    assert [(r["variant"], r["kb"], r["frames"]) for r in doc["runs"]] == [("connection", 3, 50), ("records", 3, 50)]
    assert all(r["cpu_us_per_frame"] > 0 and r["frames_per_s"] > 0 for r in doc["runs"])
    assert "| records | 3 | 50 |" in (tmp_path / "intake_pipe.md").read_text()


def test_an_unknown_variant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--variants", "connection,shm"])
    assert info.value.code == 2 and "shm" in capsys.readouterr().err
