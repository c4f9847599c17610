"""pip entry point for daris_ros's pure-Python parts (``pip install .``).

On a machine without ROS (the GPU bench machine, a laptop running the simulator) this installs the
policy core, simulator, runtime and tools with their console scripts. The ROS build is colcon +
CMakeLists.txt, which also reads setup.cfg's entry points. Metadata lives in setup.cfg.
"""

from setuptools import setup

setup()
