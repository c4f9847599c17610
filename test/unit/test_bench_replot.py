"""daris-bench figures drawn again from a bench output folder (results.csv + summary.json), and the plot series
(OS = N_c is one series across N_c)."""

from __future__ import annotations

import json
from pathlib import Path

from daris_ros.bench.report import Row, read_results, replot, series_label, write_csv


def _row(nc: int, ns: int, os_: float, jps: float, policy: str = "MPS") -> Row:
    return Row("resnet18", "daris", "green", policy, nc, ns, os_, True, 8000.0, jps, 0.0, 0.01, 2.0, 30.0, 0.4,
               100, 200, 0, 200.0, 50.0, 150.0)


def test_replot_reads_back_what_the_bench_wrote(tmp_path: Path) -> None:
    rows = [_row(2, 1, 2.0, 2736.0), _row(3, 1, 3.0, 3420.0), _row(3, 1, 1.5, 3322.0), _row(1, 8, 1.0, 5076.0, "STR")]
    write_csv(tmp_path / "results.csv", rows)
    (tmp_path / "summary.json").write_text(json.dumps({"models": {"resnet18": {
        "lower_jps": 965.0, "batching_upper_jps": 21610.0, "upper_batch": 256, "naive_jps": 183.0,
        "b1_ceiling_jps": 5474.0, "b1_ceiling_staged_jps": 5468.0, "load_reference": "ceiling",
        "offered_jps": 8211.0}}}))
    back, bases = read_results(tmp_path)
    assert back == rows  # every field (these values survive the CSV's 4 significant digits)
    assert bases["resnet18"].ceiling_jps == 5474.0 and bases["resnet18"].upper_batch == 256
    (png,) = replot(tmp_path)
    assert png == tmp_path / "resnet18.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_oversubscription_is_one_series() -> None:
    assert series_label(_row(3, 1, 3.0, 1.0)) == series_label(_row(10, 1, 10.0, 1.0)) == "green:MPS OS=N_c"
    assert series_label(_row(2, 1, 2.0, 1.0)) == "green:MPS OS=2"  # N_c = 2: OS 2 is also the OS = 2 series
    assert series_label(_row(4, 1, 1.5, 1.0)) == "green:MPS OS=1.5"
    assert series_label(_row(1, 8, 1.0, 1.0, "STR")) == "green:STR"
