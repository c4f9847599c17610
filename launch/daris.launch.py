"""Launch the daris_ros scheduler node with a YAML parameter file.

    ros2 launch daris_ros daris.launch.py
    ros2 launch daris_ros daris.launch.py config:=/path/to/tasks.yaml namespace:=vehicle1 device:=cuda:1
    ros2 launch daris_ros daris.launch.py use_sim_time:=true log_level:=debug    # bag replay with /clock

Arguments:
  config        parameter file (ros__parameters); default: the package's config/default.yaml
  namespace     namespace of the node and its relative topics (daris/<task>/result, daris/stats)
  use_sim_time  take time from /clock (bag replay)
  log_level     debug | info | warn | error
  device        overrides the file's `device` parameter (cpu, cuda:N); empty keeps the file's value
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _scheduler(context, *args, **kwargs):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    return [
        Node(
            package="daris_ros",
            executable="scheduler_node",
            name="daris_scheduler",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config"), overrides],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]


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
        OpaqueFunction(function=_scheduler),
    ])
