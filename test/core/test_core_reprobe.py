"""Re-probing (beyond the paper; SchedulerConfig.reprobe_after): an LP task rejected on stale, inflated
MRET measurements forgets them after N rejections in a row and is tested on its AFET again (eq. 10)."""

from __future__ import annotations

import pytest

from daris_ros.core import Policy, Priority, Scheduler, SchedulerConfig, TaskSpec
from daris_ros.core.mret import MretTracker

HP, LP = Priority.HP, Priority.LP


def _run_job(s: Scheduler, task: str, now: float, et: float) -> float:
    assert s.release(task, now).admitted
    while True:
        (d,) = s.dispatch(now)
        now += et
        if s.complete(d, now, et):
            return now


def _inflated(reprobe_after: int) -> Scheduler:
    # one stream; LP task u = 0.2 on its AFET, then one job measured at 0.95 s: u = 0.95 (eq. 3)
    cfg = SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, reprobe_after=reprobe_after)
    s = Scheduler(cfg, [TaskSpec("h", 1.0, HP, 1, (0.5,)), TaskSpec("l", 1.0, LP, 1, (0.2,))])
    _run_job(s, "l", 0.0, 0.95)
    assert s.mret("l") == pytest.approx(0.95)
    return s


def test_without_reprobing_an_inflated_mret_rejects_for_ever() -> None:
    s = _inflated(0)
    # eq. 12: 0 + 0.95 < 1 - 0.5 fails at every release (nothing runs, nothing is measured again)
    assert not any(s.release("l", 1.0 + i).admitted for i in range(50))
    assert s.mret("l") == pytest.approx(0.95) and s.reprobes() == {}


def test_reprobing_forgets_the_measurements_after_n_rejections_in_a_row() -> None:
    s = _inflated(5)
    decisions = [s.release("l", 1.0 + i) for i in range(6)]
    assert [d.admitted for d in decisions] == [False] * 5 + [True]  # the 5th rejection forgot eq. 1's window
    assert decisions[-1].reason == "admitted-probe"
    assert s.reprobes() == {"l": 1} and s.measured_stages("l") == (False,)  # tested on its AFET
    assert s.task_stats()["l"].rejected == 5


def test_an_admission_resets_the_count() -> None:
    # one stream, two LP tasks: while a job of "a" (u 0.6) is active, "l" (u 0.5 measured) fails eq. 12
    cfg = SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, reprobe_after=3)
    s = Scheduler(cfg, [TaskSpec("a", 1.0, LP, 1, (0.6,)), TaskSpec("l", 1.0, LP, 1, (0.2,))])
    _run_job(s, "l", 0.0, 0.5)
    assert s.release("a", 1.0).admitted
    assert [s.release("l", 1.0 + 0.1 * i).admitted for i in range(2)] == [False, False]
    (d,) = s.dispatch(1.2)
    s.complete(d, 1.8, 0.6)  # "a" done: nothing active
    assert s.release("l", 2.0).admitted  # admitted: the count starts again
    (d,) = s.dispatch(2.0)
    s.complete(d, 2.5, 0.5)
    assert s.release("a", 3.0).admitted
    assert [s.release("l", 3.0 + 0.1 * i).admitted for i in range(2)] == [False, False]
    assert s.reprobes() == {} and s.measured_stages("l") == (True,)  # 2 + 2 rejections, never 3 in a row
    assert not s.release("l", 3.5).admitted  # the third in a row (tested on u 0.5); then it forgets
    assert s.reprobes() == {"l": 1} and s.mret("l") == pytest.approx(0.2)
    assert s.release("l", 3.6).admitted  # on its AFET: 0.6 + 0.2 < 1


def test_forget_returns_to_afet() -> None:
    m = MretTracker((0.1, 0.2), ws=3)
    m.record(0, 0.5)
    assert m.total == pytest.approx(0.7) and m.measured() == (True, False)
    assert m.forget() and m.total == pytest.approx(0.3) and m.measured() == (False, False)
    assert not m.forget()


def test_reprobe_after_is_validated() -> None:
    with pytest.raises(ValueError, match="reprobe_after"):
        SchedulerConfig(reprobe_after=-1)


def test_a_task_rejected_on_its_afet_alone_is_probed_and_measured() -> None:
    # the start-up AFET is inflated (profiled under load: 1.2 s for a 1 s period): eq. 12 can never pass,
    # and with nothing measured there is nothing to forget; the probe job is what measures it
    cfg = SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, reprobe_after=10)
    s = Scheduler(cfg, [TaskSpec("l", 1.0, LP, 1, (1.2,))])
    out = [s.release("l", float(i)) for i in range(11)]
    assert [r.admitted for r in out] == [False] * 10 + [True] and out[-1].reason == "admitted-probe"
    (d,) = s.dispatch(10.0)
    s.complete(d, 10.05, 0.05)  # really 50 ms
    assert s.mret("l") == pytest.approx(0.05) and s.release("l", 11.0).reason == "admitted"
    off = Scheduler(SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1), [TaskSpec("l", 1.0, LP, 1, (1.2,))])
    assert not any(off.release("l", float(i)).admitted for i in range(50))  # the paper: rejected for ever


def test_hp_under_hpa_forgets_but_is_not_admitted_without_the_test() -> None:
    cfg = SchedulerConfig(Policy.MPS, n_contexts=1, n_streams=1, hp_admission=True, reprobe_after=3)
    s = Scheduler(cfg, [TaskSpec("h", 1.0, HP, 1, (1.5,))])
    assert [s.release("h", float(i)).admitted for i in range(8)] == [False] * 8
    assert s.reprobes() == {"h": 2}
