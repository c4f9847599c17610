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

from daris_ros.launch_support import autostart_override, scheduler_exit_handler, scheduler_plan


def _schedulers(context, *args, **kwargs):
    fallback = [LaunchConfiguration(f"config_gpu{i}").perform(context) for i in (0, 1)]
    fallback.append(os.path.join(get_package_share_directory("daris_ros"), "config", "default.yaml"))
    plan = scheduler_plan(LaunchConfiguration("devices").perform(context),
                          LaunchConfiguration("configs").perform(context), fallback)
    autostart = autostart_override(LaunchConfiguration("autostart").perform(context))
    lifecycle = {} if autostart is None else {"autostart": autostart}
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
        on_exit = scheduler_exit_handler(OpaqueFunction, Shutdown)
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]
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
