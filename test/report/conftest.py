"""Fixtures of the report tests: a hand-made, consistent run (see report_records.py)."""

from __future__ import annotations

import pytest
from report_records import make_run

from daris_ros.report.extract import RunData


@pytest.fixture
def run() -> RunData:
    return make_run()
