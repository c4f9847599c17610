"""Two scheduler nodes, one per GPU, sharing the cameras by configuration (plain DDS topics).

    ros2 launch daris_ros multi_gpu.launch.py config_gpu0:=front.yaml config_gpu1:=surround.yaml

Each node runs in its own namespace (gpu0, gpu1) with `device` cuda:0 / cuda:1 and the tasks of its own
parameter file; a camera topic may appear in both files (both nodes then subscribe to it).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("daris_ros")
    default_config = os.path.join(share, "config", "default.yaml")
    actions = []
    for gpu in (0, 1):
        arg = f"config_gpu{gpu}"
        actions.append(DeclareLaunchArgument(arg, default_value=default_config,
                                             description=f"parameter file of the node on cuda:{gpu}"))
        actions.append(Node(
            package="daris_ros",
            executable="scheduler_node",
            name="daris_scheduler",
            namespace=f"gpu{gpu}",
            parameters=[LaunchConfiguration(arg), {"device": f"cuda:{gpu}"}],
            output="screen",
        ))
    return LaunchDescription(actions)
