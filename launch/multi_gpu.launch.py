"""Scheduler nodes, one per device, sharing the cameras by configuration (plain DDS topics).

    ros2 launch daris_ros multi_gpu.launch.py config_gpu0:=front.yaml config_gpu1:=surround.yaml
    ros2 launch daris_ros multi_gpu.launch.py devices:=cuda:0,cuda:1,cuda:2 configs:=a.yaml,b.yaml,c.yaml
    ros2 launch daris_ros multi_gpu.launch.py devices:=cpu configs:=front.yaml      # no GPU: one node on the CPU

Arguments:
  devices      comma-separated, one scheduler node per entry (default cuda:0,cuda:1). cuda:N runs the node
               in namespace gpuN with `device` cuda:N; cpu runs it in namespace cpuK (K counts the cpu
               entries) with `device` cpu and `backend` cpu, whatever the parameter file says.
  configs      comma-separated parameter files, one per device, or one for all; empty: config_gpu0 for the
               first node, config_gpu1 for the second, the package's config/default.yaml for the others
  config_gpu0, config_gpu1   parameter files of the first and second node (when configs is empty)
  autostart    true or false: overrides every node's `autostart` parameter (false: they start unconfigured
               and wait for a lifecycle manager); empty keeps the files' values (true by default)

A camera topic may appear in several files (each of those nodes subscribes to it). When a node exits the
launch stops (Shutdown with the reason) and the other nodes with it; when it failed (exit code 2: invalid
parameters, 3: its backend cannot run, a signal) the launch ends with exit code 1.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def scheduler_plan(devices: str, configs: str, fallback: list[str]) -> list[tuple[str, str, dict]]:
    """[(namespace, parameter file, parameter overrides)] of the nodes for ``devices`` (comma-separated)
    and ``configs`` (comma-separated: one per device or one for all; empty: ``fallback[i]`` for node i, the
    last entry for the nodes beyond it). Raises ValueError naming a bad entry."""
    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        raise ValueError("devices is empty: give e.g. cuda:0,cuda:1 or cpu")
    files = [c.strip() for c in configs.split(",") if c.strip()]
    if len(files) not in (0, 1, len(names)):
        raise ValueError(f"configs has {len(files)} files for {len(names)} devices: give one per device or one")
    plan, cpus = [], 0
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


def node_exit_reason(process: str, returncode: int) -> tuple[bool, str]:
    """(failed, reason) for the launch's shutdown after ``process`` exited with ``returncode``."""
    meaning = {2: "invalid parameters", 3: "the execution backend cannot run"}.get(returncode, "")
    if returncode == 0:
        return False, f"{process} exited (code 0): stopping the launch"
    if returncode < 0:
        meaning = f"killed by signal {-returncode}"
    return True, f"{process} failed with exit code {returncode}" + (f" ({meaning})" if meaning else "") + \
        ": stopping the launch"


class NodeFailed(RuntimeError):
    """Raised by an action: launch shuts everything down with this message and exits 1."""


def _raise(_context, reason):
    raise NodeFailed(reason)


def _on_scheduler_exit(event, context):
    """OnProcessExit of the scheduler: stop the launch; fail it when the node failed. An exit while the
    launch is already stopping (Ctrl-C, another node's failure) is the expected end and changes nothing."""
    if getattr(context, "is_shutdown", False):
        return None
    failed, reason = node_exit_reason(event.process_name, event.returncode)
    if failed:  # an error in an action is what makes `ros2 launch` return non-zero (and shut down)
        return [OpaqueFunction(function=_raise, args=[reason])]
    return [Shutdown(reason=reason)]


def _schedulers(context, *args, **kwargs):
    fallback = [LaunchConfiguration(f"config_gpu{i}").perform(context) for i in (0, 1)]
    fallback.append(os.path.join(get_package_share_directory("daris_ros"), "config", "default.yaml"))
    plan = scheduler_plan(LaunchConfiguration("devices").perform(context),
                          LaunchConfiguration("configs").perform(context), fallback)
    autostart = LaunchConfiguration("autostart").perform(context).strip().lower()
    if autostart not in ("", "true", "false"):
        raise ValueError(f"autostart:={autostart!r}: expected true or false (empty: the files' values)")
    lifecycle = {"autostart": autostart == "true"} if autostart else {}
    actions = []
    for namespace, config, overrides in plan:
        node = Node(
            package="daris_ros",
            executable="scheduler_node",
            name="daris_scheduler",
            namespace=namespace,
            parameters=[config, {**overrides, **lifecycle}],
            output="screen",
        )
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_scheduler_exit))]
    return actions


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory("daris_ros"), "config", "default.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("devices", default_value="cuda:0,cuda:1",
                              description="comma-separated devices, one scheduler node each: cuda:N or cpu"),
        DeclareLaunchArgument("configs", default_value="",
                              description="comma-separated parameter files, one per device or one for all "
                                          "(empty: config_gpu0, config_gpu1)"),
        DeclareLaunchArgument("config_gpu0", default_value=default_config,
                              description="parameter file of the first node (when configs is empty)"),
        DeclareLaunchArgument("config_gpu1", default_value=default_config,
                              description="parameter file of the second node (when configs is empty)"),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true or false for every node (false: unconfigured, for a lifecycle "
                                          "manager); empty keeps the files' values (true by default)"),
        OpaqueFunction(function=_schedulers),
    ])
