"""The thin ROS 2 adapter: the scheduler node, parameters, image conversion, message building."""
