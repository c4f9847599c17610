"""Launch the daris_ros scheduler node with a YAML parameter file.

    ros2 launch daris_ros daris.launch.py
    ros2 launch daris_ros daris.launch.py config:=/path/to/tasks.yaml namespace:=vehicle1

Arguments: ``config`` (parameter file; default: the package's config/default.yaml) and
``namespace`` (namespace for the node and its relative topics; default: none).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory("daris_ros"), "config", "default.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="YAML parameter file (ros__parameters) listing the camera tasks"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the scheduler node and its topics"),
        Node(
            package="daris_ros",
            executable="scheduler_node",
            name="daris_scheduler",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config")],
            output="screen",
            emulate_tty=True,
        ),
    ])
