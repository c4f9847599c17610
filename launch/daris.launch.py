"""Launch the daris_ros scheduler node with a YAML parameter file.

    ros2 launch daris_ros daris.launch.py
    ros2 launch daris_ros daris.launch.py config:=/path/to/tasks.yaml namespace:=vehicle1 device:=cuda:1
    ros2 launch daris_ros daris.launch.py use_sim_time:=true log_level:=debug    # bag replay with /clock
    ros2 launch daris_ros daris.launch.py autostart:=false    # unconfigured: a lifecycle manager brings it up

Arguments:
  config        parameter file (ros__parameters); default: the package's config/default.yaml
  namespace     namespace of the node and its relative topics (daris/<task>/result, daris/stats)
  use_sim_time  take time from /clock (bag replay)
  log_level     debug | info | warn | error
  device        overrides the file's `device` parameter (cpu, cuda:N); empty keeps the file's value
  autostart     overrides the file's `autostart` parameter: true (the node configures and activates itself),
                false (it starts unconfigured and waits for `ros2 lifecycle set` or a lifecycle manager); empty
                keeps the file's value (true when the file has none), so by default the node reaches active

The node is a managed (lifecycle) node; it is started as a plain `Node` action whose `autostart` parameter
brings it to active, so the launch needs no lifecycle event handlers (README.md, "Lifecycle").

The launch stops when the node exits (Shutdown with the reason), and fails when the node failed: the node
exits 2 on invalid parameters, 3 when its backend cannot run; launch then ends with exit code 1, the only
failure code `ros2 launch` has, after logging the node's own code.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from daris_ros.launch_support import autostart_override, scheduler_exit_handler


def _scheduler(context, *args, **kwargs):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    autostart = autostart_override(LaunchConfiguration("autostart").perform(context))
    if autostart is not None:
        overrides["autostart"] = autostart
    node = Node(
        package="daris_ros",
        executable="scheduler_node",
        name="daris_scheduler",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config"), overrides],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    on_exit = scheduler_exit_handler(OpaqueFunction, Shutdown)
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory("daris_ros"), "config", "default.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="YAML parameter file (ros__parameters) listing the camera tasks"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the scheduler node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true for bag replay with --clock)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn or error"),
        DeclareLaunchArgument("device", default_value="",
                              description="cpu or cuda:N; empty keeps the parameter file's device"),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true: the node configures and activates itself; false: it stays "
                                          "unconfigured for a lifecycle manager; empty keeps the file's value "
                                          "(true by default)"),
        OpaqueFunction(function=_scheduler),
    ])
