"""Skipped jobs (``skip_late``, docs/policy.md "Bounded staleness under overload") in the node's statistics:
``TaskStats.skipped``, ``PriorityStats.skipped``, the miss rate counting them, and the /diagnostics WARN in a
stats period with new skips. Message building only (generated messages from the install space, no DDS)."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from daris_ros.ros.messages import (
    DiagnosticThresholds,
    TaskRow,
    priority_stats_msg,
    task_diagnostic,
    task_stats_msg,
)


def _row(**kw: object) -> TaskRow:
    base = dict(task="cam", topic="/cam", model="resnet18", priority="HP", context=0, period=0.1, deadline=0.1,
                frames=100, superseded=0, released=100, admitted=100, rejected=0, completed=60, missed=0,
                stale=0, dropped=0, migrations=0, jps=10.0, miss_rate=0.4, p50=0.01, p99=0.02, max=0.03,
                mret=0.01, skipped=40)
    base.update(kw)
    return TaskRow(**base)  # type: ignore[arg-type]


def test_task_and_priority_messages_carry_skipped_and_the_miss_rate_counts_it() -> None:
    m = task_stats_msg(_row())
    assert m.skipped == 40 and m.missed == 0 and m.miss_rate == pytest.approx(0.4)
    p = priority_stats_msg("HP", [_row(), _row(task="b", skipped=10, missed=5)],
                           {"p50": 0.01, "p99": 0.02, "max": 0.03})
    assert p.skipped == 50 and p.missed == 5 and p.miss_rate == pytest.approx((5 + 50) / 200)


def test_diagnostics_warn_when_jobs_were_skipped_in_the_last_period() -> None:
    th = DiagnosticThresholds(miss_rate_warn=0.5, miss_rate_error=0.9)  # the miss rate alone stays OK here
    st = task_diagnostic("/n", "cpu", _row(), {"skipped": 7, "released": 20}, th, skip_late=2.0)
    assert st.level == DiagnosticStatus.WARN
    assert "7 jobs skipped: not started within 2 deadlines (overload)" in st.message
    assert {kv.key: kv.value for kv in st.values}["skipped"] == "40"
    quiet = task_diagnostic("/n", "cpu", _row(), {"skipped": 0, "released": 20}, th, skip_late=2.0)
    assert quiet.level == DiagnosticStatus.OK and "skipped" not in quiet.message
    # skipped jobs are lost deadlines: the miss-rate thresholds see them even without a late completion
    lossy = task_diagnostic("/n", "cpu", _row(miss_rate=0.4), {}, DiagnosticThresholds(), skip_late=2.0)
    assert lossy.level == DiagnosticStatus.ERROR and "miss rate 40.0%" in lossy.message


def test_host_rejections_in_the_messages_and_the_diagnostic() -> None:
    """lp_host_busy_limit: LP releases rejected while the engine's loop was overloaded (rejected_host, part of
    rejected) in TaskStats, PriorityStats and the task's /diagnostics status, which says why."""
    row = _row(priority="LP", rejected=30, rejected_host=25, admitted=70, skipped=0)
    assert task_stats_msg(row).rejected_host == 25
    p = priority_stats_msg("LP", [row, _row(task="b", priority="LP", rejected_host=5)],
                           {"p50": 0.01, "p99": 0.02, "max": 0.03})
    assert p.rejected_host == 30
    st = task_diagnostic("/n", "cpu", row, {"rejected": 12, "rejected_host": 10, "released": 20},
                         DiagnosticThresholds(miss_rate_warn=0.9, miss_rate_error=0.95))
    assert st.level == DiagnosticStatus.WARN
    assert "12 of 20 jobs rejected (10 while the engine's loop was overloaded)" in st.message
    assert {kv.key: kv.value for kv in st.values}["rejected_host"] == "25"
    eq12 = task_diagnostic("/n", "cpu", row, {"rejected": 12, "released": 20},
                           DiagnosticThresholds(miss_rate_warn=0.9, miss_rate_error=0.95))
    assert "12 of 20 jobs rejected" in eq12.message and "overloaded" not in eq12.message
