"""GPU/CPU runtime: staged models, backends; knows nothing about ROS."""
