"""A task that never ran keeps its start-up AFET forever unless the runtime refreshes it (refresh_afet)."""

from __future__ import annotations

import pytest

from daris_ros.core import Policy, Priority, Scheduler, SchedulerConfig, TaskSpec
from daris_ros.core.mret import MretTracker


def test_set_afet_only_changes_unmeasured_stages():
    t = MretTracker((0.010, 0.020), ws=5)
    t.record(0, 0.004)
    assert t.measured() == (True, False)
    assert t.set_afet((0.001, 0.003)) is True
    assert t.stages() == (0.004, 0.003)  # stage 0 keeps its measurement (eq. 1), stage 1 takes the new AFET
    assert t.total == pytest.approx(0.007)  # eq. 2
    with pytest.raises(ValueError):
        t.set_afet((0.1,))


def test_refresh_afet_readmits_lp_task_rejected_on_pessimistic_afet():
    cfg = SchedulerConfig(policy=Policy.MPS, n_contexts=1, n_streams=1)
    hp = TaskSpec("hp", period=0.1, priority=Priority.HP, n_stages=2, afet=(0.01, 0.01))
    lp = TaskSpec("lp", period=0.1, priority=Priority.LP, n_stages=2, afet=(0.5, 0.5))  # u = 10: hopeless
    s = Scheduler(cfg, [hp, lp])
    assert not s.release("lp", 0.0).admitted  # eq. 12: 0 + 10 < 1 - 0.2 fails
    s.refresh_afet("lp", (0.01, 0.01))
    assert s.mret("lp") == pytest.approx(0.02)
    assert s.task_utilization("lp") == pytest.approx(0.2)  # eq. 3
    assert s.utilization(0).lp == pytest.approx(0.2)  # eq. 5 follows
    assert s.release("lp", 0.1).admitted
