"""Jobs and the records the scheduler hands to its driver (release decisions, dispatches, outcomes)."""

from __future__ import annotations

from dataclasses import dataclass

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
class StageDispatch:
    """A stage placed on a stream: run stage ``stage`` of ``job`` on (``context``, ``stream``).

    ``level`` is the queue level it came from (0 = highest, see docs/policy.md) and
    ``virtual_deadline`` its absolute virtual deadline. ``model_stages`` lists the DNN stages this
    dispatch covers: ``(stage,)`` normally, every stage of the model under ``no_staging``.
    ``start`` is the ``now`` of the ``dispatch`` call that produced it.
    """

    job: Job
    stage: int
    context: int
    stream: int
    level: int
    virtual_deadline: float
    model_stages: tuple[int, ...] = ()
    start: float = 0.0

    @property
    def is_last(self) -> bool:
        return self.stage == self.job.n_stages - 1


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
_sd = tuple(
    getattr(StageDispatch, f).__set__
    for f in ("job", "stage", "context", "stream", "level", "virtual_deadline", "model_stages", "start")
)
_jo = tuple(getattr(JobOutcome, f).__set__ for f in ("job", "finish", "response_time", "met"))
_rd = tuple(
    getattr(ReleaseDecision, f).__set__
    for f in ("admitted", "job", "context", "migrated_from", "reason", "job_id")
)


def new_stage_dispatch(
    job: Job, stage: int, context: int, stream: int, level: int, vdl: float, model_stages: tuple[int, ...],
    start: float,
) -> StageDispatch:
    o = _new(StageDispatch)
    s0, s1, s2, s3, s4, s5, s6, s7 = _sd
    s0(o, job)
    s1(o, stage)
    s2(o, context)
    s3(o, stream)
    s4(o, level)
    s5(o, vdl)
    s6(o, model_stages)
    s7(o, start)
    return o


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
