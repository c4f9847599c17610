"""daris-bench --params-file: the bench reads the node's parameter files and checks them with the node's code."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from daris_ros.bench.cli import config_params, main, parse_args
from daris_ros.bench.engine_run import bench_settings, node_scheduler_parameters
from daris_ros.bench.workload import make_taskset
from daris_ros.settings import ConfigError, load_parameter_file, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]

NODE_FILE = """\
/**/daris_scheduler:
  ros__parameters:
    use_sim_time: false
    policy: STR
    backend: cpu
    device: cpu
    n_contexts: 1
    n_streams: 2
    mret_window: 7
    skip_late: 3.0
    reprobe_after: 50
    profile_runs: 1
    no_last: true
    task_names: [front]
    tasks:
      front: {topic: /cam/front, priority: HP, rate: 10.0, model: resnet18}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_the_bench_reads_every_shipped_node_parameter_file(name: str) -> None:
    params = node_scheduler_parameters(REPO / "config" / name)
    assert "task_names" not in params and not any(k.startswith("tasks.") for k in params)
    assert params == {k: v for k, v in load_parameter_file(REPO / "config" / name).items()
                      if not k.startswith("tasks.") and k not in ("task_names", "use_sim_time")}


def test_the_files_parameters_are_the_base_of_every_configuration(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE_FILE)
    args = parse_args(["--params-file", str(path), "--device", "cpu", "--reprobe-after", "20"])
    args.file_params = node_scheduler_parameters(path)
    params = config_params(("cpu", "MPS", 2, 1, 1.5), args)
    # the configuration and --device win, an option given on the command line too; the rest is the file's
    assert (params["policy"], params["n_contexts"], params["n_streams"], params["oversubscription"]) == ("MPS", 2, 1,
                                                                                                         1.5)
    assert params["reprobe_after"] == 20
    assert (params["mret_window"], params["skip_late"], params["no_last"], params["profile_runs"]) == (7, 3.0, True, 1)
    s = bench_settings(params, make_taskset(("resnet18",), 30.0, 10.0), lambda _m: (32, 32))
    assert (s.mret_window, s.skip_late, s.reprobe_after, s.no_last, s.n_contexts) == (7, 3.0, 20, True, 2)
    # an ablation still sets its own flag (and only its own)
    ablated = config_params(("cpu", "STR", 1, 2, 1.0), args, "no_prior")
    assert ablated["no_prior"] and not ablated["no_last"]


def test_without_a_file_the_bench_keeps_its_paper_defaults(tmp_path: Path) -> None:
    args = parse_args(["--device", "cpu", "--out", str(tmp_path)])
    params = config_params(("cpu", "STR", 1, 2, 1.0), args)
    assert (params["reprobe_after"], params["skip_late"], params["hp_admission"]) == (0, 0.0, False)
    assert params["afet_cache"] == str(tmp_path / "afet_cache.json") and not params["no_staging"]


@pytest.mark.parametrize(
    ("line", "replacement", "parameter"),
    [
        ("n_streams: 2", "n_streams: 100", "n_streams"),  # the table's range
        ("policy: STR", "policy: FIFO", "policy"),  # the table's choices
        ("rate: 10.0", "rate: fast", "tasks.front.rate"),  # the table's type
        ("n_contexts: 1", "n_contexts: 2", "n_contexts"),  # a cross-field rule (STR: one context)
        ("mret_window: 7", "mret_windw: 7", "mret_windw"),  # an unknown name
        ("model: resnet18", "model: resnet1800", "tasks.front.model"),  # an unknown model
    ],
)
def test_a_file_the_node_refuses_is_refused_by_the_bench_naming_the_parameter(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, replacement: str, parameter: str) -> None:
    path = _write(tmp_path, NODE_FILE.replace(line, replacement))
    with pytest.raises(ConfigError) as err:  # what the node's validation says ...
        node_scheduler_parameters(path)
    assert err.value.parameter == parameter
    if parameter != "tasks.front.model":  # (the node checks models apart: a torch import)
        with pytest.raises(ConfigError):
            settings_from_mapping(load_parameter_file(path))
    rc = main(["--params-file", str(path), "--device", "cpu", "--offered", "30", "--no-baselines",
               "--out", str(tmp_path)])  # ... and the bench stops with it
    assert rc == 2
    assert f"parameter '{parameter}'" in capsys.readouterr().err


def test_the_bench_runs_the_files_configuration(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE_FILE)
    rc = main(["--params-file", str(path), "--device", "cpu", "--models", "resnet18", "--seconds", "1.2",
               "--warmup", "0.4", "--offered", "30", "--task-rate", "10", "--input-size", "32", "--no-baselines",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    with (tmp_path / "out" / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["policy"], r["n_contexts"], r["n_streams"]) for r in rows] == [("cpu", "STR", "1", "2")]
