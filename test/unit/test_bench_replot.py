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


def test_replot_from_summary_md_alone(tmp_path: Path) -> None:
    """A folder with only summary.md (results.csv did not come back from the device) plots from its tables."""
    from daris_ros.bench.report import ModelBaselines, write_summary

    rows = [_row(2, 1, 2.0, 2736.4), _row(3, 1, 3.0, 3420.0), _row(1, 8, 1.0, 5076.0, "STR")]
    rows[1].lp_dmr, rows[1].hp_p99_ms = 0.01874, 16.771
    base = ModelBaselines(965.0, 21610.0, 256, {256: 21610.0}, 183.0, 1.0, 1.0, 274, 5474.0, 5468.0, "upper",
                          8211.0, {"naive_warmup_s": 3.2})
    env = {"device": "H200", "torch": "2.11", "cuda": "13.0", "cudnn": "9", "driver": "580"}
    write_summary(tmp_path, rows, {"resnet18": base}, env, "python -m daris_ros.bench.cli --full", "today", [])
    (tmp_path / "summary.json").unlink()
    back, bases = read_results(tmp_path)
    b = bases["resnet18"]
    assert (b.lower_jps, b.upper_jps, b.upper_batch, b.naive_jps, b.ceiling_jps, b.ceiling_staged_jps,
            b.load_reference, b.offered_jps) == (965.0, 21610.0, 256, 183.0, 5474.0, 5468.0, "upper", 8211.0)
    key = lambda r: (r.backend, r.policy, r.n_contexts, r.n_streams, r.oversubscription)  # noqa: E731
    assert sorted(map(key, back)) == sorted(map(key, rows))
    by = {key(r): r for r in back}
    for r in rows:
        got = by[key(r)]
        assert abs(got.jps - r.jps) <= 0.5 and abs(got.lp_dmr - r.lp_dmr) <= 5.1e-5
        assert abs(got.hp_p99_ms - r.hp_p99_ms) <= 0.005 and got.sm_per_context == r.sm_per_context
        assert (got.cpu_us_per_job, got.release_us_per_job, got.rest_us_per_job) == (200.0, 50.0, 150.0)
        assert got.graphs and got.kind == "daris"
    (png,) = replot(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replot_reads_results_written_before_the_bench_ran_the_engine(tmp_path: Path) -> None:
    """Old results.csv files name the CPU split core/launch (the old bench loop's): read as release/rest."""
    write_csv(tmp_path / "results.csv", [_row(2, 1, 2.0, 2736.0)])
    text = (tmp_path / "results.csv").read_text()
    header, *lines = text.splitlines()
    old = header.replace("release_us_per_job", "core_us_per_job").replace("rest_us_per_job", "launch_us_per_job")
    (tmp_path / "results.csv").write_text("\n".join([old.replace(",host_us_per_release,jps_window", ""),
                                                     *(ln.rsplit(",", 2)[0] for ln in lines)]) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({"models": {"resnet18": {
        "lower_jps": 965.0, "batching_upper_jps": None, "upper_batch": None, "naive_jps": 183.0,
        "b1_ceiling_jps": 5474.0, "b1_ceiling_staged_jps": 5468.0, "load_reference": "ceiling",
        "offered_jps": 8211.0}}}))
    (back,), bases = read_results(tmp_path)
    assert (back.release_us_per_job, back.rest_us_per_job, back.host_us_per_release) == (50.0, 150.0, 0.0)
    assert bases["resnet18"].upper_jps == 0.0  # not measured
