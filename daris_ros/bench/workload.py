"""Task sets of the paper's main scenario: 150% overload of a reference throughput, 2:1 LP:HP tasks."""

from __future__ import annotations

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


def make_taskset(models: tuple[str, ...], offered_jps: float, task_rate: float = 30.0,
                 lp_per_hp: int = 2) -> list[BenchTask]:
    """``offered_jps`` spread over tasks of ``task_rate`` Hz (deadline = period), LP:HP = ``lp_per_hp``:1.

    Tasks cycle over ``models`` (the mixed set uses all three), releases are phased evenly over one period.
    """
    n = max(lp_per_hp + 1, round(offered_jps / task_rate))
    n_hp = max(1, round(n / (lp_per_hp + 1)))
    period = 1.0 / task_rate
    tasks = []
    for i in range(n):
        prio = Priority.HP if i < n_hp else Priority.LP
        tasks.append(BenchTask(name=f"{'hp' if prio is Priority.HP else 'lp'}{i}", model=models[i % len(models)],
                               priority=prio, period=period, phase=period * ((i * 0.618034) % 1.0)))
    return tasks
