"""daris_ros.bench.sm_limit on the cpu backend: configurations parsed, one run per (configuration, limit), the
JSON and Markdown written. The GPU measurement is scripts/gpu_sm_limit.sh's ``bench`` step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daris_ros.bench.sm_limit import main, parse_config


def test_parse_config() -> None:
    assert parse_config("green:mps:2x1:1.5") == {"backend": "green", "policy": "MPS", "n_contexts": 2,
                                                 "n_streams": 1, "oversubscription": 1.5}
    with pytest.raises(ValueError, match="backend:policy:NcxNs:OS"):
        parse_config("green:MPS:2")


def test_runs_with_and_without_a_limit_on_cpu(tmp_path: Path) -> None:
    rc = main(["--configs", "cpu:MPS:2x1:1", "--limits", "0,16", "--device", "cpu", "--group",
               "HP:resnet18:1,LP:resnet18:1", "--rate", "2", "--lp-rate", "2", "--seconds", "1.5", "--warmup", "0.5",
               "--profile-runs", "1", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "sm_limit.json").read_text())
    assert [r["sm_limit"] for r in doc["runs"]] == [0, 16]
    # cpu contexts are not partitioned: each may use every SM the node has (a nominal 132, or the limit)
    assert [r["sm_counts"] for r in doc["runs"]] == [[132, 132], [16, 16]]
    assert all(r["completed"]["HP"] > 0 for r in doc["runs"])
    assert "| cpu:MPS:2x1:OS 1 | 16 | [16, 16] |" in (tmp_path / "sm_limit.md").read_text()
