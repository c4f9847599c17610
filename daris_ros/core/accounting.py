"""Accounting: released / admitted / rejected / completed / missed / skipped, DMR, response times, JPS.

A job misses when its last stage finishes after ``release + D_i``. DMR = missed / admitted
("the ratio of missed deadlines to accepted jobs", section VI), per task and per priority.

Beyond the paper (``SchedulerConfig.skip_late``, docs/policy.md "Bounded staleness under overload"): an
admitted job that had not started ``skip_late`` x D_i after its release is *skipped*: never run, counted in
``skipped``, neither completed nor missed. Its deadline is lost all the same (``skip_late >= 1``: it could
not have been met), so the DMR counts it: DMR = (missed + skipped) / admitted. Every admitted job ends once,
completed or skipped: ``admitted = completed + skipped + in flight``. With skipping off ``skipped`` is 0 and
the DMR is the paper's.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from daris_ros.core.task import Priority


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100]); NaN for no values. ``values`` need not be sorted."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    n = len(values)
    if n == 0:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * n))
    return ordered[rank - 1]


def deadline_miss_rate(missed: int, admitted: int) -> float:
    """DMR = missed / accepted (0.0 when nothing was accepted)."""
    return missed / admitted if admitted else 0.0


def jobs_per_second(completed: int, duration: float) -> float:
    """JPS: completed jobs per second of the measured interval."""
    return completed / duration if duration > 0 else 0.0


ResponseTimes = array | deque
"""Response times in completion order: ``array('d')`` (all of them) or a bounded ``deque``."""


def new_response_times(window: int | None = None) -> ResponseTimes:
    """All response times (``window=None``) or only the most recent ``window`` of them."""
    if window is None:
        return array("d")
    if window < 1:
        raise ValueError(f"response window must be >= 1, got {window}")
    return deque(maxlen=window)


def _copy_times(times: ResponseTimes) -> ResponseTimes:
    return array("d", times) if isinstance(times, array) else deque(times, maxlen=times.maxlen)


@dataclass(slots=True)
class Counters:
    released: int = 0
    admitted: int = 0
    rejected: int = 0
    completed: int = 0
    missed: int = 0
    migrations: int = 0
    skipped: int = 0  # admitted, never started: dropped by the skip_late rule (neither completed nor missed)
    response_times: ResponseTimes = field(default_factory=new_response_times)
    rejected_host: int = 0  # of rejected: LP releases refused while the host could not keep up (release(host_busy))

    @property
    def met(self) -> int:
        return self.completed - self.missed

    @property
    def dmr(self) -> float:
        """(missed + skipped) / admitted: a skipped job lost its deadline too (0 skipped: the paper's DMR)."""
        return deadline_miss_rate(self.missed + self.skipped, self.admitted)

    @property
    def skip_rate(self) -> float:
        """skipped / admitted: the share of admitted jobs dropped unstarted by the skip_late rule."""
        return self.skipped / self.admitted if self.admitted else 0.0

    @property
    def finished(self) -> int:
        """Jobs that ended: completed (met or missed) or skipped; admitted - finished are in flight."""
        return self.completed + self.skipped

    @property
    def completed_dmr(self) -> float:
        """missed / completed: the DMR over jobs that have finished so far."""
        return deadline_miss_rate(self.missed, self.completed)

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.released if self.released else 0.0

    def response_percentile(self, p: float) -> float:
        return percentile(self.response_times, p)

    @property
    def p50(self) -> float:
        return self.response_percentile(50.0)

    @property
    def p99(self) -> float:
        return self.response_percentile(99.0)

    @property
    def max_response(self) -> float:
        """Largest response time recorded (within the window, if the history is bounded)."""
        return max(self.response_times) if self.response_times else math.nan

    @property
    def mean_response(self) -> float:
        return math.fsum(self.response_times) / len(self.response_times) if self.response_times else math.nan


@dataclass(slots=True)
class TaskStats(Counters):
    """Per-task counters and response times (seconds, in completion order)."""

    name: str = ""
    priority: Priority = Priority.LP

    def copy(self) -> TaskStats:
        return TaskStats(
            self.released, self.admitted, self.rejected, self.completed, self.missed, self.migrations,
            self.skipped, _copy_times(self.response_times), self.rejected_host, self.name, self.priority,
        )


@dataclass(slots=True)
class PriorityStats(Counters):
    """Per-priority counters; a job counts under the priority its task had at release."""

    priority: Priority = Priority.LP

    def copy(self) -> PriorityStats:
        return PriorityStats(
            self.released, self.admitted, self.rejected, self.completed, self.missed, self.migrations,
            self.skipped, _copy_times(self.response_times), self.rejected_host, self.priority,
        )
