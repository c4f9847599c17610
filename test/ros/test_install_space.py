"""The colcon install space holds messages, executables, launch and config; the launch file is sane."""

from __future__ import annotations

import ast
import configparser
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _console_scripts() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines if line.strip()]


def test_messages_import_from_install_space(install_prefix):
    import daris_ros
    from daris_ros.msg import InferenceResult, PriorityStats, SchedulerStats, TaskStats

    assert str(install_prefix) in daris_ros.__file__
    r = InferenceResult()
    assert r.PRIORITY_HIGH == 0 and r.PRIORITY_LOW == 1
    assert {"header", "task", "job_id", "class_ids", "scores", "response_time", "deadline", "met", "context",
            "stream"} <= set(r.get_fields_and_field_types())
    assert SchedulerStats().get_fields_and_field_types()["tasks"] == "sequence<daris_ros/TaskStats>"
    assert "miss_rate" in TaskStats.get_fields_and_field_types() and PriorityStats().priority == 0


def test_executables_installed(install_prefix):
    libdir = install_prefix / "lib" / "daris_ros"
    scripts = _console_scripts()
    assert "scheduler_node" in scripts
    for name in scripts:
        exe = libdir / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} missing or not executable"


def test_share_and_ament_index(install_prefix):
    share = install_prefix / "share" / "daris_ros"
    assert (share / "package.xml").is_file()
    assert (install_prefix / "share" / "ament_index" / "resource_index" / "packages" / "daris_ros").is_file()
    for f in (REPO / "launch").iterdir():
        assert (share / "launch" / f.name).is_file()
    for f in (REPO / "config").glob("*.yaml"):
        assert (share / "config" / f.name).is_file()
    assert sorted(p.name for p in (share / "msg").glob("*.msg")) == sorted(
        p.name for p in (REPO / "msg").glob("*.msg"))


def test_launch_file_parses_and_names_installed_things(install_prefix):
    src = (REPO / "launch" / "daris.launch.py").read_text()
    tree = ast.parse(src)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    executables = re.findall(r'executable="([^"]+)"', src)
    assert executables, "launch file starts no executable"
    for exe in executables:
        assert (install_prefix / "lib" / "daris_ros" / exe).is_file()
    configs = re.findall(r'"config",\s*"([^"]+\.yaml)"', src)
    assert configs
    for cfg in configs:
        assert (install_prefix / "share" / "daris_ros" / "config" / cfg).is_file()
    args = set(re.findall(r'DeclareLaunchArgument\(\s*"([^"]+)"', src))
    assert {"config", "namespace", "use_sim_time", "log_level", "device"} <= args


def test_no_launch_imports_outside_launch_dir():
    pat = re.compile(r"^\s*(from|import)\s+(launch|launch_ros)(\.|\s|$)", re.M)
    offenders = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
                 if not {"launch", ".venv", "build", "install"} & set(p.relative_to(REPO).parts)
                 and pat.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert offenders == []
