"""ROS declarations of the scheduler node's parameters, built from :mod:`daris_ros.parameter_table` (the one
definition of every parameter): each is declared with a ``ParameterDescriptor`` carrying its type, range and
read-only flag, and the values read are validated by :mod:`daris_ros.settings` (the same table).
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from daris_ros.parameter_table import (
    RUNTIME_TASK_FIELDS,
    SCHEDULER_PARAMETERS,
    TASK_PARAMETERS,
    Kind,
    Runtime,
)
from daris_ros.parameter_table import Parameter as ParamSpec
from daris_ros.settings import ConfigError, SchedulerSettings, check_parameter_names, settings_from_mapping

# The names this module has always exported (the scheduler node iterates TASK_PARAMS).
SCHEDULER_PARAMS: tuple[ParamSpec, ...] = SCHEDULER_PARAMETERS
TASK_PARAMS: tuple[ParamSpec, ...] = TASK_PARAMETERS

__all__ = ["NO_TASKS", "RUNTIME_TASK_FIELDS", "SCHEDULER_PARAMS", "TASK_PARAMS", "ParamSpec", "declare_and_read",
           "declare_task_parameter", "declared_value", "ros_descriptor"]


def ros_descriptor(spec: ParamSpec, name: str) -> ParameterDescriptor:
    """The ROS descriptor of parameter ``name`` (``spec``'s full name): description, read-only, range, type."""
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.runtime is Runtime.READ_ONLY)
    if spec.kind is Kind.STRING_LIST and not spec.default:
        d.type = ParameterType.PARAMETER_STRING_ARRAY  # an empty default cannot tell
    if spec.kind is Kind.NUMBER:
        d.dynamic_typing = True  # accept `rate: 30` as well as `rate: 30.0`; settings converts
    if spec.bounds is not None and spec.kind is Kind.INTEGER:
        d.integer_range = [IntegerRange(from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]), step=0)]
    if spec.bounds is not None and spec.kind is Kind.NUMBER:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.bounds[0]),
                                                     to_value=float(spec.bounds[1]), step=0.0)]
    return d


def _ros_default(spec: ParamSpec) -> Any:
    """The value to declare: the default, or the type for an empty string array (rclpy cannot type ``[]``)."""
    if spec.kind is Kind.STRING_LIST and not spec.default:
        return Parameter.Type.STRING_ARRAY
    return spec.ros_default


def declared_value(node: Node, name: str) -> Any:
    """The value of a declared parameter; None when it is declared by type only and was never set (an empty string
    list such as ``stage_boundaries``: the table's default)."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def _declare(node: Node, name: str, default: Any, descriptor: ParameterDescriptor) -> Any:
    """Declare one parameter (or return it when declared already: a managed node reads its parameters again at
    every configure); rclpy's type and range errors become a ConfigError naming it."""
    if node.has_parameter(name):  # a second configure: as declared (value None: declared by type only, never set)
        return node.get_parameter(name) if declared_value(node, name) is not None else Parameter(name)
    try:
        return node.declare_parameter(name, default, descriptor)
    except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
        rng = ""
        if descriptor.integer_range:
            rng = f"; allowed: {descriptor.integer_range[0].from_value}..{descriptor.integer_range[0].to_value}"
        elif descriptor.floating_point_range:
            r = descriptor.floating_point_range[0]
            rng = f"; allowed: {r.from_value:g}..{r.to_value:g}"
        raise ConfigError(name, f"{exc}{rng}") from exc


NO_TASKS = ("no camera tasks: list them in task_names, each with a tasks.<name> block (topic, priority, rate, "
            "model; see config/default.yaml)")


def declare_and_read(node: Node, known_models: list[str] | None = None) -> SchedulerSettings:
    """Declare every parameter with its descriptor and return validated settings.

    Raises :class:`daris_ros.settings.ConfigError` naming the offending parameter: also for a parameter given
    to the node (parameter file, ``-p``) that is not in the table (a misspelt field, e.g. ``tasks.a.rat``) and
    for an empty task list. (``daris_ros.ros.param_file`` checks the same before ``rclpy.init`` and names the
    file and line; this is the check for a node started otherwise.)
    """
    check_parameter_names(sorted(getattr(node, "_parameter_overrides", {})))
    values: dict[str, Any] = {}
    for spec in SCHEDULER_PARAMS:
        p = _declare(node, spec.name, _ros_default(spec), ros_descriptor(spec, spec.name))
        values[spec.name] = p.value if p.value is not None else spec.ros_default
    values["task_names"] = list(values["task_names"] or [])
    if not values["task_names"]:
        raise ConfigError("task_names", NO_TASKS)
    for task in values["task_names"]:
        for spec in TASK_PARAMS:
            values[f"tasks.{task}.{spec.name}"] = declare_task_parameter(node, task, spec).value
    return settings_from_mapping(values, known_models)


def declare_task_parameter(node: Node, task: str, spec: ParamSpec) -> Any:
    """Declare ``tasks.<task>.<field>``. Fields that need a task restart are refused by the node's
    parameter callback while the task runs (not read-only: a task added at run time must be configurable)."""
    full = f"tasks.{task}.{spec.name}"
    desc = ros_descriptor(spec, full)
    desc.read_only = False
    if spec.runtime is Runtime.TASK_RESTART:
        desc.additional_constraints = "fixed while the task runs: remove the task, set, add it again"
    return _declare(node, full, _ros_default(spec), desc)
