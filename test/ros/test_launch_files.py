"""The launch files stop when a scheduler node exits and fail when it failed; multi_gpu.launch.py takes devices.

`launch`/`launch_ros` are not installable from PyPI, so these tests read the launch files statically: every
scheduler `Node` gets an `OnProcessExit` handler whose action is `Shutdown(reason=...)` on a clean exit and an
error raised in an action on a failure (what makes `ros2 launch` exit non-zero); the names imported from
`launch`/`launch_ros` exist in their API (launch 3.x, launch_ros 0.2x: the Humble..Rolling API); the
launch-free logic both files import (daris_ros/launch_support.py: exit reasons, autostart, the device plan) is run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daris_ros import launch_support

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))

# Public names of the modules the launch files import from (launch/__init__.py, launch/actions/__init__.py, ...
# of ros2/launch and ros2/launch_ros), restricted to what a launch file of this package may reasonably use.
LAUNCH_API = {
    "launch": {"LaunchDescription", "LaunchContext", "LaunchService", "Action", "Event", "EventHandler",
               "Substitution", "Condition"},
    "launch.actions": {"DeclareLaunchArgument", "EmitEvent", "ExecuteProcess", "GroupAction",
                       "IncludeLaunchDescription", "LogInfo", "OpaqueFunction", "RegisterEventHandler",
                       "SetEnvironmentVariable", "SetLaunchConfiguration", "Shutdown", "TimerAction"},
    "launch.event_handlers": {"OnExecutionComplete", "OnProcessExit", "OnProcessIO", "OnProcessStart",
                              "OnShutdown"},
    "launch.substitutions": {"LaunchConfiguration", "EnvironmentVariable", "PathJoinSubstitution",
                             "PythonExpression", "TextSubstitution"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch_ros.actions": {"Node", "LifecycleNode", "ComposableNodeContainer", "PushRosNamespace"},
    "ament_index_python.packages": {"get_package_share_directory", "get_package_prefix"},
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            and c.func.id == name]


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)



@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_imports_exist_in_the_launch_api(path):
    for node in _tree(path).body:
        if isinstance(node, ast.ImportFrom) and node.module in LAUNCH_API:
            for alias in node.names:
                assert alias.name in LAUNCH_API[node.module], f"{path.name}: {node.module}.{alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("launch",
                                                                                               "launch_ros"):
            pytest.fail(f"{path.name}: unexpected import from {node.module}")


def _imported_from_support(tree: ast.Module) -> set[str]:
    return {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module == "daris_ros.launch_support" for alias in node.names}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_scheduler_node_stops_the_launch_when_it_exits(path):
    tree = _tree(path)
    funcs = _functions(tree)
    nodes = [c for c in _calls(tree, "Node") if isinstance(_kw(c, "executable"), ast.Constant)
             and _kw(c, "executable").value == "scheduler_node"]
    assert nodes, f"{path.name} starts no scheduler_node"
    for fn in funcs.values():
        made = {t.id for a in ast.walk(fn) if isinstance(a, ast.Assign) and isinstance(a.value, ast.Call)
                and isinstance(a.value.func, ast.Name) and a.value.func.id == "Node" for t in a.targets
                if isinstance(t, ast.Name)}
        in_fn = [c for c in _calls(fn, "Node") if c in nodes]
        assert len(made) == len(in_fn), f"{path.name}:{fn.name}: every Node(...) is kept in a variable"
        for var in made:
            handlers = [h for h in _calls(fn, "OnProcessExit")
                        if isinstance(_kw(h, "target_action"), ast.Name) and _kw(h, "target_action").id == var]
            assert len(handlers) == 1, f"{path.name}:{fn.name}: no OnProcessExit(target_action={var})"
            (h,) = handlers
            assert any(h in list(ast.walk(r)) for r in _calls(fn, "RegisterEventHandler")), "handler not registered"
            on_exit = _kw(h, "on_exit")
            # the one exit handler of both launch files (daris_ros/launch_support.py), built from launch's actions
            assert isinstance(on_exit, ast.Name), f"{path.name}: on_exit={ast.unparse(on_exit)}"
            made_from = [a.value for a in ast.walk(fn) if isinstance(a, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == on_exit.id for t in a.targets)]
            assert len(made_from) == 1 and ast.unparse(made_from[0]) == \
                "scheduler_exit_handler(OpaqueFunction, Shutdown)", f"{path.name}: {on_exit.id}"
            assert "scheduler_exit_handler" in _imported_from_support(tree), f"{path.name}: its own exit handler"


class _Action:
    """A stand-in for launch's OpaqueFunction / Shutdown: records how the handler built it."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


class _Opaque(_Action):
    pass


class _Shutdown(_Action):
    pass


class _Exit:
    def __init__(self, returncode: int) -> None:
        self.process_name, self.returncode = "scheduler_node-1", returncode


class _Context:
    def __init__(self, is_shutdown: bool) -> None:
        self.is_shutdown = is_shutdown


def test_the_exit_handler_shuts_down_or_fails_the_launch():
    """On a clean exit: Shutdown(reason=...); on a failure: an OpaqueFunction whose function raises (launch then
    shuts down with that message and returns 1); nothing while the launch is already stopping."""
    handler = launch_support.scheduler_exit_handler(_Opaque, _Shutdown)
    (clean,) = handler(_Exit(0), _Context(False))
    assert isinstance(clean, _Shutdown) and clean.kwargs == {
        "reason": "scheduler_node-1 exited (code 0): stopping the launch"}
    (failing,) = handler(_Exit(2), _Context(False))
    assert isinstance(failing, _Opaque)
    with pytest.raises(launch_support.NodeFailed, match=r"exit code 2 \(invalid parameters\)"):
        failing.kwargs["function"](None, *failing.kwargs["args"])
    assert handler(_Exit(3), _Context(True)) is None  # the launch is stopping already


def test_exit_reasons():
    reason = launch_support.node_exit_reason
    assert reason("scheduler_node-1", 0) == (False, "scheduler_node-1 exited (code 0): stopping the launch")
    failed, text = reason("scheduler_node-1", 2)
    assert failed and "exit code 2 (invalid parameters)" in text
    failed, text = reason("scheduler_node-1", 3)
    assert failed and "exit code 3 (the execution backend cannot run)" in text
    failed, text = reason("scheduler_node-1", -9)
    assert failed and "killed by signal 9" in text
    assert reason("x", 1)[0]


def test_launch_files_share_their_exit_logic():
    """Both launch files use the one handler and keep no copy of its logic."""
    for path in LAUNCH_FILES:
        tree = _tree(path)
        assert {"scheduler_exit_handler", "autostart_override"} <= _imported_from_support(tree), path.name
        assert not {"node_exit_reason", "_raise", "_on_scheduler_exit", "scheduler_plan"} & set(_functions(tree))
        assert "class NodeFailed" not in path.read_text(encoding="utf-8")


def test_autostart_override():
    assert launch_support.autostart_override("") is None and launch_support.autostart_override("  ") is None
    assert launch_support.autostart_override("True") is True
    assert launch_support.autostart_override("false") is False
    with pytest.raises(ValueError, match="expected true or false"):
        launch_support.autostart_override("maybe")


def test_multi_gpu_devices_argument_and_plan():
    path = REPO / "launch" / "multi_gpu.launch.py"
    src = path.read_text(encoding="utf-8")
    tree = _tree(path)
    args = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"devices", "configs", "config_gpu0", "config_gpu1"} <= args
    assert 'LaunchConfiguration("devices")' in src
    assert "scheduler_plan" in _imported_from_support(tree)
    plan = launch_support.scheduler_plan
    fb = ["g0.yaml", "g1.yaml", "default.yaml"]
    assert plan("cuda:0,cuda:1", "", fb) == [("gpu0", "g0.yaml", {"device": "cuda:0"}),
                                              ("gpu1", "g1.yaml", {"device": "cuda:1"})]  # as before
    assert plan("cpu", "", fb) == [("cpu0", "g0.yaml", {"device": "cpu", "backend": "cpu"})]
    assert plan("cpu, cpu", "a.yaml", fb) == [("cpu0", "a.yaml", {"device": "cpu", "backend": "cpu"}),
                                              ("cpu1", "a.yaml", {"device": "cpu", "backend": "cpu"})]
    assert [p[:2] for p in plan("cuda:2,cpu,cuda", "a.yaml,b.yaml,c.yaml", fb)] == [
        ("gpu2", "a.yaml"), ("cpu0", "b.yaml"), ("gpu0", "c.yaml")]
    assert [p[0] for p in plan("cuda:0,cuda:0,cuda:1", "", fb)] == ["gpu0", "gpu0_1", "gpu1"]
    assert [p[1] for p in plan("cuda:0,cuda:1,cuda:2", "", fb)] == fb
    for devices, configs, match in (("tpu", "", "'tpu' is neither"), ("cuda:x", "", "neither"),
                                    ("", "", "devices is empty"), ("cpu,cpu", "a,b,c", "3 files for 2")):
        with pytest.raises(ValueError, match=match):
            plan(devices, configs, fb)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_autostart_argument_reaches_the_node(path):
    """The node is active by default (its autostart parameter, true unless the file says otherwise);
    `autostart:=false` leaves it unconfigured for a lifecycle manager (README.md, "Lifecycle")."""
    src = path.read_text(encoding="utf-8")
    tree = _tree(path)
    autostart = [c for c in _calls(tree, "DeclareLaunchArgument") if c.args[0].value == "autostart"]
    assert len(autostart) == 1 and _kw(autostart[0], "default_value").value == "", path.name
    assert 'LaunchConfiguration("autostart")' in src and '"autostart"' in src
