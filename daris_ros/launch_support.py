"""The logic of the package's launch files (``launch/daris.launch.py``, ``launch/multi_gpu.launch.py``), kept here
once: what happens when a scheduler node exits (stop the launch; fail it when the node failed), the ``autostart``
argument, and multi_gpu's plan of nodes per device. The package never imports ``launch`` (a ROS install's package;
CI has none): the launch files pass its actions in, and test/ros/test_launch_files.py runs these functions with
stand-ins and reads the launch files statically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The scheduler node's own exit codes (daris_ros.ros.scheduler_node.main).
EXIT_MEANINGS = {2: "invalid parameters", 3: "the execution backend cannot run"}


def node_exit_reason(process: str, returncode: int) -> tuple[bool, str]:
    """(failed, reason) for the launch's shutdown after ``process`` exited with ``returncode``."""
    if returncode == 0:
        return False, f"{process} exited (code 0): stopping the launch"
    meaning = f"killed by signal {-returncode}" if returncode < 0 else EXIT_MEANINGS.get(returncode, "")
    return True, f"{process} failed with exit code {returncode}" + (f" ({meaning})" if meaning else "") + \
        ": stopping the launch"


class NodeFailed(RuntimeError):
    """Raised by an action: launch shuts everything down with this message and exits 1."""


def raise_node_failed(_context: Any, reason: str) -> None:
    raise NodeFailed(reason)


def scheduler_exit_handler(opaque_function: Callable[..., Any], shutdown: Callable[..., Any]
                           ) -> Callable[[Any, Any], list[Any] | None]:
    """The OnProcessExit handler of a scheduler node, built from launch's ``OpaqueFunction`` and ``Shutdown`` (the
    launch file passes them: this package does not import ``launch``). It stops the launch, and fails it when the
    node failed; an exit while the launch is already stopping (Ctrl-C, another node's failure) is the expected end
    and changes nothing."""

    def on_scheduler_exit(event: Any, context: Any) -> list[Any] | None:
        if getattr(context, "is_shutdown", False):
            return None
        failed, reason = node_exit_reason(event.process_name, event.returncode)
        if failed:  # an error in an action is what makes `ros2 launch` return non-zero (and shut down)
            return [opaque_function(function=raise_node_failed, args=[reason])]
        return [shutdown(reason=reason)]

    return on_scheduler_exit


def autostart_override(value: str) -> bool | None:
    """The launch argument ``autostart``: ``true``/``false`` override the parameter files; empty keeps them."""
    text = value.strip().lower()
    if not text:
        return None
    if text not in ("true", "false"):
        raise ValueError(f"autostart:={value!r}: expected true or false (empty: the file's value)")
    return text == "true"


def scheduler_plan(devices: str, configs: str, fallback: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """[(namespace, parameter file, parameter overrides)] of the nodes for ``devices`` (comma-separated)
    and ``configs`` (comma-separated: one per device or one for all; empty: ``fallback[i]`` for node i, the
    last entry for the nodes beyond it). Raises ValueError naming a bad entry."""
    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        raise ValueError("devices is empty: give e.g. cuda:0,cuda:1 or cpu")
    files = [c.strip() for c in configs.split(",") if c.strip()]
    if len(files) not in (0, 1, len(names)):
        raise ValueError(f"configs has {len(files)} files for {len(names)} devices: give one per device or one")
    plan: list[tuple[str, str, dict[str, str]]] = []
    cpus = 0
    for i, device in enumerate(names):
        if device == "cpu":
            namespace, overrides = f"cpu{cpus}", {"device": "cpu", "backend": "cpu"}
            cpus += 1
        elif device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
            index = device[5:] or "0"
            namespace, overrides = f"gpu{index}", {"device": f"cuda:{index}"}
        else:
            raise ValueError(f"devices entry {device!r} is neither cpu nor cuda:N")
        if any(namespace == p[0] for p in plan):
            namespace = f"{namespace}_{i}"  # the same device twice: two nodes, two namespaces
        config = files[i] if len(files) == len(names) else files[0] if files else fallback[min(i, len(fallback) - 1)]
        plan.append((namespace, config, overrides))
    return plan
