"""Jobs and the records the scheduler hands to its driver (release decisions, dispatches, outcomes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daris_ros.core.task import Priority


@dataclass(slots=True, eq=False)
class Job:
    """One release of a task. Compared and hashed by identity (each release is a distinct object).

    ``stage_deadlines`` are absolute virtual deadlines: ``release + sum_{m<=j} D_{i,m}`` with
    ``D_{i,m}`` from eq. 8, frozen at release time; the last one equals ``abs_deadline``.
    ``start`` is the time of the first dispatch (None until then). ``n_stages`` is the number of
    scheduling stages (1 under the ``no_staging`` ablation).
    """

    task: str
    job_id: int
    priority: Priority
    release: float
    abs_deadline: float
    context: int
    stage_deadlines: tuple[float, ...]
    start: float | None = None
    n_stages: int = 1
    n_model_stages: int = 1
    migrated_from: int | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One model stage placed on one stream for 1..n jobs: run stage ``stage`` of every job in ``jobs``
    on (``context``, ``stream``). With batching off ``jobs`` holds one job; with batching on, the jobs of
    one model key at the same stage (docs/policy.md, "Cross-task stage batching").

    ``size`` is the captured batch size it runs at (``>= len(jobs)``, the rows above are padding; 1 with
    batching off). ``model`` is the model key (``TaskSpec.model``, else the task name). ``levels[i]`` is
    the queue level job i came from (0 = highest, the eight levels of section IV-B2).
    ``virtual_deadline`` is the absolute virtual deadline (eq. 8) the dispatch was checked against: with
    batching off the job's stage deadline; with batching on the earliest one among the members that can
    still meet theirs in this batch (``inf`` when every member was already late).
    ``predicted_finish`` is ``start`` + the stage's MRET estimate (eq. 1; per batch size with batching).
    ``model_stages`` lists the DNN stages this dispatch covers: ``(stage,)`` normally, every stage of the
    model under ``no_staging``. ``start`` is the predicted start: the ``now`` of the ``dispatch`` call,
    or, for a dispatch queued behind others on a busy stream (``SchedulerConfig.launch_ahead``), the
    stream's predicted free time; ``behind`` is how many dispatches were on the stream before it (0: it
    starts now).
    """

    jobs: tuple[Job, ...]
    stage: int
    context: int
    stream: int
    size: int
    model: str
    levels: tuple[int, ...]
    virtual_deadline: float
    predicted_finish: float
    model_stages: tuple[int, ...]
    start: float
    behind: int = 0

    @property
    def job(self) -> Job:
        """The first (with batching off: the only) job."""
        return self.jobs[0]

    @property
    def level(self) -> int:
        """The queue level of the first (with batching off: the only) job."""
        return self.levels[0]

    @property
    def is_last(self) -> bool:
        """Whether ``stage`` is the last scheduling stage of the jobs (they finish with it)."""
        return self.stage == self.jobs[0].n_stages - 1


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished job. ``met`` is ``finish <= job.abs_deadline`` (section VI: DMR = missed / accepted)."""

    job: Job
    finish: float
    response_time: float
    met: bool


@dataclass(frozen=True, slots=True)
class ReleaseDecision:
    """Result of the online admission step for one release.

    ``context`` is where the job was admitted, or for a rejection the context that was tested first
    (the task's current context). ``migrated_from`` is the task's previous context when the admission
    migrated it. ``job`` is None for a rejection (its job id is still consumed: ``job_id``).
    """

    admitted: bool
    job: Job | None
    context: int
    migrated_from: int | None
    reason: str
    job_id: int = -1



# Positional constructors for the hot path. They skip the generated frozen ``__init__`` (which calls
# ``object.__setattr__`` once per field) and set the slots directly: same object, 2-3x faster. These
# classes validate nothing in ``__init__``, so the result is identical to ``Cls(*args)``.
_new = object.__new__
_jo = tuple(getattr(JobOutcome, f).__set__ for f in ("job", "finish", "response_time", "met"))
_rd = tuple(
    getattr(ReleaseDecision, f).__set__
    for f in ("admitted", "job", "context", "migrated_from", "reason", "job_id")
)


class _DispatchBuilder:
    """:class:`Dispatch`'s slot layout without its frozen ``__setattr__``: :func:`new_dispatch` fills one with
    plain slot stores and then makes it a ``Dispatch`` (``__class__`` assignment, which CPython allows between
    classes with the same slots). A ``Dispatch`` built this way is the same object as ``Dispatch(*args)``; the
    frozen ``__init__`` (one ``object.__setattr__`` per field) costs about twice as much, on the path that
    runs once per stage."""

    __slots__ = ("jobs", "stage", "context", "stream", "size", "model", "levels", "virtual_deadline",
                 "predicted_finish", "model_stages", "start", "behind")

    def __init__(
        self, jobs: tuple[Job, ...], stage: int, context: int, stream: int, size: int, model: str,
        levels: tuple[int, ...], virtual_deadline: float, predicted_finish: float, model_stages: tuple[int, ...],
        start: float, behind: int,
    ) -> None:
        self.jobs = jobs
        self.stage = stage
        self.context = context
        self.stream = stream
        self.size = size
        self.model = model
        self.levels = levels
        self.virtual_deadline = virtual_deadline
        self.predicted_finish = predicted_finish
        self.model_stages = model_stages
        self.start = start
        self.behind = behind


if Dispatch.__slots__ != _DispatchBuilder.__slots__:  # (a changed field list must change both)
    raise TypeError("Dispatch and _DispatchBuilder must have the same slots")


def new_dispatch(
    jobs: tuple[Job, ...], stage: int, context: int, stream: int, size: int, model: str, levels: tuple[int, ...],
    virtual_deadline: float, predicted_finish: float, model_stages: tuple[int, ...], start: float, behind: int,
) -> Dispatch:
    """``Dispatch(...)`` with every field given, positionally, without the frozen ``__init__``."""
    o: Any = _DispatchBuilder(jobs, stage, context, stream, size, model, levels, virtual_deadline,
                              predicted_finish, model_stages, start, behind)
    o.__class__ = Dispatch
    return o  # type: ignore[no-any-return]


def new_job_outcome(job: Job, finish: float, response_time: float, met: bool) -> JobOutcome:
    o = _new(JobOutcome)
    s0, s1, s2, s3 = _jo
    s0(o, job)
    s1(o, finish)
    s2(o, response_time)
    s3(o, met)
    return o


def new_release_decision(
    admitted: bool, job: Job | None, context: int, migrated_from: int | None, reason: str, job_id: int
) -> ReleaseDecision:
    o = _new(ReleaseDecision)
    s0, s1, s2, s3, s4, s5 = _rd
    s0(o, admitted)
    s1(o, job)
    s2(o, context)
    s3(o, migrated_from)
    s4(o, reason)
    s5(o, job_id)
    return o
