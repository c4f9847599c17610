"""Scheduler.release(host_busy=True) (beyond the paper; the runtime's lp_host_busy_limit): an LP release is rejected
before eq. 12 and counted in rejected and rejected_host; HP releases and the other tasks' accounting are not
touched; a pending re-probe waits for a release while the host keeps up."""

from __future__ import annotations

import pytest

from daris_ros.core import Policy, Priority, Scheduler, SchedulerConfig, TaskSpec
from daris_ros.core.scheduler import REASON_REJECTED_HOST

HP, LP = Priority.HP, Priority.LP


def _scheduler(reprobe_after: int = 0) -> Scheduler:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, reprobe_after=reprobe_after)
    return Scheduler(cfg, [TaskSpec("h", 1.0, HP, 1, (0.1,)), TaskSpec("l", 1.0, LP, 1, (0.1,))])


def test_lp_rejected_when_the_host_is_busy_hp_admitted() -> None:
    s = _scheduler()
    lp = s.release("l", 0.0, host_busy=True)
    hp = s.release("h", 0.0, host_busy=True)
    assert (lp.admitted, lp.reason, lp.job) == (False, REASON_REJECTED_HOST, None)
    assert hp.admitted and hp.job is not None
    ts = s.task_stats()
    assert (ts["l"].released, ts["l"].admitted, ts["l"].rejected, ts["l"].rejected_host) == (1, 0, 1, 1)
    assert (ts["h"].released, ts["h"].admitted, ts["h"].rejected, ts["h"].rejected_host) == (1, 1, 0, 0)
    ps = s.priority_stats()
    assert (ps[LP].rejected, ps[LP].rejected_host, ps[HP].rejected_host) == (1, 1, 0)
    # the same release with the host keeping up passes eq. 12 (u 0.1 of the 0.9 left by the HP task)
    again = s.release("l", 1.0)
    assert again.admitted and s.task_stats()["l"].rejected_host == 1
    assert s.task_stats()["l"].copy().rejected_host == 1  # (copies keep the counter)


def test_a_reprobe_waits_for_a_host_that_keeps_up() -> None:
    s = _scheduler(reprobe_after=2)
    # an LP task whose measured time fails eq. 12: two rejections make its next release a probe
    assert s.release("l", 0.0).admitted
    (d,) = s.dispatch(0.0)
    assert s.complete(d, 0.95, 0.95)
    assert [s.release("l", 1.0 + i).admitted for i in range(2)] == [False, False]
    busy = s.release("l", 3.0, host_busy=True)
    assert busy.reason == REASON_REJECTED_HOST
    probe = s.release("l", 4.0)
    assert probe.admitted and probe.reason == "admitted-probe"
    assert s.task_stats()["l"].rejected == 3 and s.task_stats()["l"].rejected_host == 1


@pytest.mark.parametrize("busy", [False, True])
def test_host_busy_never_changes_an_hp_decision(busy: bool) -> None:
    s = _scheduler()
    assert all(s.release("h", float(i), host_busy=busy).admitted for i in range(3))
    assert s.task_stats()["h"].rejected_host == 0
