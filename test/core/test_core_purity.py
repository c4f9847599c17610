"""The policy core and the simulator import nothing from ROS or torch and never read a clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import daris_ros.core
import daris_ros.sim

FORBIDDEN_PREFIXES = ("rclpy", "torch", "rosidl", "rclcpp", "std_msgs", "sensor_msgs", "builtin_interfaces",
                      "rosbags", "daris_ros.ros", "daris_ros.runtime", "daris_ros.msg")
CLOCK_MODULES = ("time", "datetime")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _sources(pkg: object) -> list[Path]:
    root = Path(pkg.__file__).parent  # type: ignore[attr-defined]
    files = sorted(root.rglob("*.py"))
    assert files
    return files


def test_core_and_sim_sources_import_no_ros_or_torch() -> None:
    for path in _sources(daris_ros.core) + _sources(daris_ros.sim):
        for mod in _imports(path):
            assert not mod.startswith(FORBIDDEN_PREFIXES), f"{path.name} imports {mod}"


def test_core_never_reads_a_wall_clock() -> None:
    for path in _sources(daris_ros.core):
        for mod in _imports(path):
            assert mod.split(".")[0] not in CLOCK_MODULES, f"{path.name} imports {mod}"


def test_importing_core_and_sim_loads_no_ros_or_torch_module() -> None:
    code = (
        "import sys, daris_ros.core, daris_ros.sim, daris_ros.sim.cli\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN_PREFIXES!r}))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
