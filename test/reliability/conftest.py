"""Reliability tests run the installed node (colcon install space), like test/ros: run them through
`make test` or `scripts/run_in_install.sh pytest test/reliability`."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def install_prefix() -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        pytest.fail("ament_index_python is missing: run the tests with scripts/run_in_install.sh")
    try:
        return Path(get_package_prefix("daris_ros"))
    except PackageNotFoundError:
        pytest.fail("daris_ros is not in AMENT_PREFIX_PATH: run the tests with `make test` (it builds with "
                    "colcon and sources install/setup.bash)")
