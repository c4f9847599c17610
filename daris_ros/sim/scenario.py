"""Scenario files (YAML) for the simulator; the format is described in docs/simulator.md."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daris_ros.core import Priority, SchedulerConfig, TaskSpec

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(SchedulerConfig)}
_TOP_KEYS = {"name", "description", "duration", "seed", "scheduler", "models", "exec_model", "tasks"}
_GROUP_KEYS = {"name", "model", "priority", "count", "period", "rate", "deadline", "phase"}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A staged DNN: per-stage time alone on the whole GPU, and optionally an explicit AFET."""

    name: str
    stage_times: tuple[float, ...]
    afet: tuple[float, ...] | None = None
    batch_factor: tuple[tuple[int, float], ...] | None = None  # (size, batch time / batch-1 time)


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """``count`` identical periodic tasks. ``phase``: 'random', 'spread', 'zero' or seconds."""

    name: str
    model: str
    priority: Priority
    count: int
    period: float
    deadline: float | None = None
    phase: str | float = "random"

    def task_names(self) -> list[str]:
        if self.count == 1:
            return [self.name]
        width = max(3, len(str(self.count - 1)))
        return [f"{self.name}{i:0{width}d}" for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration: float
    seed: int
    config: SchedulerConfig
    models: Mapping[str, ModelSpec]
    exec_model: Mapping[str, Any]
    groups: tuple[TaskGroup, ...]
    description: str = ""

    def task_specs(self, afet_of: Mapping[str, tuple[float, ...]], seed: int | None = None) -> list[TaskSpec]:
        """Expand the groups into TaskSpecs. Random phases are drawn from ``seed`` (default: own)."""
        rng = random.Random(f"phase/{self.seed if seed is None else seed}")
        specs: list[TaskSpec] = []
        for g in self.groups:
            model = self.models[g.model]
            for i, name in enumerate(g.task_names()):
                if g.phase == "random":
                    phase = rng.uniform(0.0, g.period)
                elif g.phase == "spread":
                    phase = g.period * i / g.count
                elif g.phase == "zero":
                    phase = 0.0
                else:
                    phase = float(g.phase)
                specs.append(
                    TaskSpec(
                        name=name,
                        period=g.period,
                        priority=g.priority,
                        n_stages=len(model.stage_times),
                        afet=afet_of[g.model],
                        deadline=g.deadline,
                        model=g.model,
                        phase=phase,
                    )
                )
        return specs

    @property
    def n_tasks(self) -> int:
        return sum(g.count for g in self.groups)


def parse_batch_factor(model: str, raw: Any) -> tuple[tuple[int, float], ...] | None:
    """``{size: factor}``: a batch of ``size`` takes ``factor`` x the stage's batch-1 time (size 1 -> 1)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"model {model}: batch_factor must map batch sizes to factors")
    pts = sorted((int(k), float(v)) for k, v in raw.items())
    if any(k < 1 or v <= 0 for k, v in pts):
        raise ValueError(f"model {model}: batch_factor needs sizes >= 1 and factors > 0")
    return tuple(pts)


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def scenario_from_dict(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Parse a scenario mapping. ``overrides`` maps dotted keys (``scheduler.hp_admission``) to values."""
    d: dict[str, Any] = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        _set_dotted(d, key, value)
    unknown = set(d) - _TOP_KEYS
    if unknown:
        raise ValueError(f"unknown scenario keys {sorted(unknown)}")
    sched = dict(d.get("scheduler") or {})
    bad = set(sched) - _CONFIG_FIELDS
    if bad:
        raise ValueError(f"unknown scheduler keys {sorted(bad)}")
    os_raw = str(sched.get("oversubscription", "")).strip().lower()
    if os_raw in ("nc", "n_c", "full"):
        sched["oversubscription"] = float(sched.get("n_contexts", 1))
    config = SchedulerConfig(**sched)

    models: dict[str, ModelSpec] = {}
    for mname, m in (d.get("models") or {}).items():
        times = tuple(float(x) for x in m["stage_times"])
        if not times or any(t <= 0 for t in times):
            raise ValueError(f"model {mname}: stage_times must be non-empty and > 0")
        afet_raw = m.get("afet", "auto")
        afet = None if afet_raw in (None, "auto") else tuple(float(x) for x in afet_raw)
        if afet is not None and len(afet) != len(times):
            raise ValueError(f"model {mname}: afet and stage_times differ in length")
        models[str(mname)] = ModelSpec(str(mname), times, afet, parse_batch_factor(mname, m.get("batch_factor")))
    if not models:
        raise ValueError("scenario defines no models")

    groups: list[TaskGroup] = []
    for g in d.get("tasks") or []:
        bad = set(g) - _GROUP_KEYS
        if bad:
            raise ValueError(f"unknown task keys {sorted(bad)}")
        if ("period" in g) == ("rate" in g):
            raise ValueError(f"task group {g.get('name')}: give exactly one of period or rate")
        period = float(g["period"]) if "period" in g else 1.0 / float(g["rate"])
        model = str(g["model"])
        if model not in models:
            raise ValueError(f"task group {g.get('name')}: unknown model {model!r}")
        phase = g.get("phase", "random")
        if not (isinstance(phase, str) and phase in ("random", "spread", "zero")):
            phase = float(phase)
        groups.append(
            TaskGroup(
                name=str(g["name"]),
                model=model,
                priority=Priority.parse(g.get("priority", "LP")),
                count=int(g.get("count", 1)),
                period=period,
                deadline=None if g.get("deadline") is None else float(g["deadline"]),
                phase=phase,
            )
        )
    if not groups:
        raise ValueError("scenario defines no tasks")
    names = [n for g in groups for n in g.task_names()]
    if len(set(names)) != len(names):
        raise ValueError("task names collide; give task groups distinct names")
    duration = float(d.get("duration", 10.0))
    if duration <= 0:
        raise ValueError("duration must be > 0")
    return Scenario(
        name=str(d.get("name", "scenario")),
        duration=duration,
        seed=int(d.get("seed", 0)),
        config=config,
        models=models,
        exec_model=dict(d.get("exec_model") or {"kind": "constant"}),
        groups=tuple(groups),
        description=str(d.get("description", "")),
    )


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read a scenario YAML file (see docs/simulator.md)."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: a scenario must be a YAML mapping")
    return scenario_from_dict(raw, overrides)
