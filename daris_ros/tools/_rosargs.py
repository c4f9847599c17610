"""Split a command line into the tool's own arguments and the ROS arguments (``--ros-args ... [--]``).

rclpy's ``remove_ros_args`` also strips bare ``a:=b`` words (the deprecated ROS 1 remap syntax), which
would eat the values of ``daris-play --remap /a:=/b``; this split only honours ``--ros-args`` blocks.
"""

from __future__ import annotations


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` (without the program name) -> (tool arguments, ``--ros-args`` blocks for rclpy.init)."""
    own: list[str] = []
    ros: list[str] = []
    inside = False
    for word in argv:
        if word == "--ros-args":
            inside = True
            ros.append(word)
        elif inside and word == "--":
            inside = False
            ros.append(word)
        elif inside:
            ros.append(word)
        else:
            own.append(word)
    return own, ros
