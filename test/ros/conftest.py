"""Fixtures for tests that need the colcon install space (generated messages, installed executables).

Run them through the README's test command (`make test`), which builds and sources install/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _install_prefix() -> Path | None:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return None
    try:
        return Path(get_package_prefix("daris_ros"))
    except PackageNotFoundError:
        return None


@pytest.fixture(scope="session")
def install_prefix() -> Path:
    prefix = _install_prefix()
    if prefix is None:
        pytest.fail("daris_ros is not in AMENT_PREFIX_PATH: run the tests with `make test` (it builds with "
                    "colcon and sources install/setup.bash)")
    return prefix


@pytest.fixture(scope="session")
def domain_id() -> int:
    return int(os.environ["ROS_DOMAIN_ID"])
