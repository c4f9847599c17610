"""Task sets of the paper's main scenario: 150% overload of a reference throughput, 2:1 LP:HP tasks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daris_ros.core import Priority, TaskSpec

MIXED = ("resnet18", "unet", "inception_v3")


@dataclass(frozen=True, slots=True)
class BenchTask:
    name: str
    model: str
    priority: Priority
    period: float
    phase: float

    def spec(self, afet: tuple[float, ...]) -> TaskSpec:
        return TaskSpec(name=self.name, period=self.period, priority=self.priority, n_stages=len(afet),
                        afet=afet, model=self.model, phase=self.phase)


#: Per-task release rates of the paper's main task sets (Table II, section V): 30 jobs/s per ResNet18 task,
#: 24 jobs/s per UNet or InceptionV3 task. ``--task-rate paper`` selects them (deadline = period).
PAPER_TASK_RATE: dict[str, float] = {"resnet18": 30.0, "unet": 24.0, "inception_v3": 24.0}

TaskRate = float | Mapping[str, float]


def parse_task_rate(text: str) -> TaskRate:
    """``--task-rate``: a rate in Hz for every task, or ``paper`` for the per-model rates of Table II."""
    if text.strip().lower() == "paper":
        return dict(PAPER_TASK_RATE)
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"--task-rate: expected a rate in Hz or 'paper', got {text!r}") from None
    if not rate > 0.0:
        raise ValueError(f"--task-rate: the rate must be > 0 Hz, got {text!r}")
    return rate


def rate_of(task_rate: TaskRate, model: str) -> float:
    """The release rate (Hz) of a ``model`` task under ``task_rate``."""
    if isinstance(task_rate, Mapping):
        try:
            return float(task_rate[model])
        except KeyError:
            raise ValueError(f"task rate: no rate for model {model!r} (have {sorted(task_rate)})") from None
    return float(task_rate)


def describe_rate(task_rate: TaskRate, models: tuple[str, ...]) -> str:
    """``30 Hz`` or ``paper rates (unet 24 Hz)`` for reports."""
    if isinstance(task_rate, Mapping):
        per_model = (f"{m} {rate_of(task_rate, m):g} Hz" for m in dict.fromkeys(models))
        return "paper (Table II) rates: " + ", ".join(per_model)
    return f"{task_rate:g} Hz"


def make_taskset(models: tuple[str, ...], offered_jps: float, task_rate: TaskRate = 30.0,
                 lp_per_hp: int = 2) -> list[BenchTask]:
    """``offered_jps`` spread over tasks of ``task_rate`` Hz (deadline = period), LP:HP = ``lp_per_hp``:1.

    ``task_rate`` is one rate for every task or a rate per model (``PAPER_TASK_RATE``). Tasks cycle over
    ``models`` (the mixed set uses all three), so the task count is the offered load over the mean rate of a
    cycle; each task's releases are phased over its own period.
    """
    rates = [rate_of(task_rate, m) for m in models]
    mean_rate = sum(rates) / len(rates)
    n = max(lp_per_hp + 1, round(offered_jps / mean_rate))
    n_hp = max(1, round(n / (lp_per_hp + 1)))
    tasks = []
    for i in range(n):
        prio = Priority.HP if i < n_hp else Priority.LP
        period = 1.0 / rates[i % len(models)]
        tasks.append(BenchTask(name=f"{'hp' if prio is Priority.HP else 'lp'}{i}", model=models[i % len(models)],
                               priority=prio, period=period, phase=period * ((i * 0.618034) % 1.0)))
    return tasks
