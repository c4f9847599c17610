"""Deterministic discrete-event simulator for the DARIS policy core (no ROS, no torch).

See docs/simulator.md. ``python -m daris_ros.sim.cli SCENARIO.yaml`` (or ``daris-sim``) runs one.
"""

from daris_ros.sim.engine import SimResult, Simulation, simulate
from daris_ros.sim.exec_models import (
    ConstantModel,
    ContentionModel,
    Distribution,
    ExecTimeModel,
    Geometry,
    RandomModel,
    build_exec_model,
)
from daris_ros.sim.metrics import format_table, result_to_dict
from daris_ros.sim.scenario import ModelSpec, Scenario, TaskGroup, load_scenario, scenario_from_dict

__all__ = [
    "ConstantModel",
    "ContentionModel",
    "Distribution",
    "ExecTimeModel",
    "Geometry",
    "ModelSpec",
    "RandomModel",
    "Scenario",
    "SimResult",
    "Simulation",
    "TaskGroup",
    "build_exec_model",
    "format_table",
    "load_scenario",
    "result_to_dict",
    "scenario_from_dict",
    "simulate",
]
