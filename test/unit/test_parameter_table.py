"""The parameter table (daris_ros/parameter_table.py) is the one definition of every parameter: the settings'
dataclasses, their validation and the README's table agree with it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daris_ros import parameter_table, settings
from daris_ros.parameter_table import (
    README_COMMAND,
    SCHEDULER_PARAMETERS,
    TASK_PARAMETERS,
    ConfigError,
    Kind,
    Parameter,
    Runtime,
    check_dataclass,
    parse_value,
    render_readme,
)
from daris_ros.settings import SchedulerSettings, TaskSettings, settings_from_mapping, validate_settings

REPO = Path(__file__).resolve().parents[2]
BOUNDED_SCHEDULER = [p for p in SCHEDULER_PARAMETERS if p.bounds is not None]
CHOICES = [p for p in SCHEDULER_PARAMETERS + TASK_PARAMETERS if p.choices]


def _task_params(**task: Any) -> dict[str, Any]:
    return {"task_names": ["a"], "tasks": {"a": {"topic": "/cam/a", "rate": 10.0, "model": "resnet18", **task}}}


def test_readme_parameter_table_is_generated_from_the_table() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "| `tasks.<name>.topic`" in text
    assert render_readme(text) == text, f"README.md's parameter table is out of date: run {README_COMMAND}"


def test_the_check_command_finds_a_stale_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- PARAMS:BEGIN -->\n| old |\n<!-- PARAMS:END -->\n", encoding="utf-8")
    assert parameter_table.main(["--check", str(readme)]) == 1
    assert parameter_table.main(["--readme", str(readme)]) == 0
    assert parameter_table.main(["--check", str(readme)]) == 0
    assert "| `skip_late` | number | `2.0` | 0..1000 | read-only |" in readme.read_text(encoding="utf-8")


def test_the_dataclasses_match_the_table() -> None:
    """Names and defaults: every field with a default has the table's, every parameter has a field."""
    check_dataclass(SchedulerSettings, SCHEDULER_PARAMETERS, extra_fields=("tasks",), extra_parameters=("task_names",))
    check_dataclass(TaskSettings, TASK_PARAMETERS, extra_fields=("name",), extra_parameters=("rate",))
    defaults = SchedulerSettings()
    for p in SCHEDULER_PARAMETERS:
        if p.name != "task_names":
            assert getattr(defaults, p.name) == p.default, p.name
    names = {f.name for f in dataclasses.fields(SchedulerSettings)} - {"tasks"}
    assert names == {p.name for p in SCHEDULER_PARAMETERS} - {"task_names"}


def test_a_dataclass_that_disagrees_with_the_table_is_refused() -> None:
    table = (Parameter("n", Kind.INTEGER, 1, "a count"), Parameter("s", Kind.STRING, "x", "a name"))

    @dataclasses.dataclass
    class WrongDefault:
        n: int = 2
        s: str = "x"

    @dataclasses.dataclass
    class MissingAndExtra:
        n: int = 1
        other: str = ""

    with pytest.raises(TypeError, match="'n' defaults to 2, the table to 1"):
        check_dataclass(WrongDefault, table)
    with pytest.raises(TypeError, match="field 'other' is not in the parameter table.*parameter 's' has no field"):
        check_dataclass(MissingAndExtra, table)


def test_settings_takes_its_choices_and_names_from_the_table() -> None:
    assert settings.POLICIES is parameter_table.POLICIES
    assert parameter_table.SCHEDULER_BY_NAME["policy"].choices is settings.POLICIES
    assert settings.TASK_FIELDS == tuple(p.name for p in TASK_PARAMETERS)
    assert settings.SCHEDULER_FIELDS == tuple(p.name for p in SCHEDULER_PARAMETERS)
    assert set(parameter_table.RUNTIME_TASK_FIELDS) == {"priority", "rate", "period", "deadline"}
    assert {p.runtime for p in TASK_PARAMETERS} == {Runtime.LIVE, Runtime.TASK_RESTART}
    assert Runtime.TASK_RESTART not in {p.runtime for p in SCHEDULER_PARAMETERS}


def test_every_default_is_a_valid_value() -> None:
    for p in SCHEDULER_PARAMETERS + TASK_PARAMETERS:
        assert parse_value(p, p.ros_default) == p.default, p.name
    assert validate_settings({}, []) == SchedulerSettings()


@pytest.mark.parametrize("parameter", BOUNDED_SCHEDULER, ids=lambda p: p.name)
def test_the_tables_range_is_what_settings_enforces(parameter: Parameter) -> None:
    low, high = parameter.bounds or (0, 0)
    for bad in (low - 1, high + 1):
        value: Any = [1, int(bad)] if parameter.kind is Kind.INTEGER_LIST else bad
        with pytest.raises(ConfigError, match="out of range") as err:
            settings_from_mapping({**_task_params(), parameter.name: value})
        assert err.value.parameter == parameter.name


@pytest.mark.parametrize("parameter", CHOICES, ids=lambda p: p.name)
def test_the_tables_choices_are_what_settings_enforces(parameter: Parameter) -> None:
    scheduler = parameter in SCHEDULER_PARAMETERS
    params = {**_task_params(), parameter.name: "bogus"} if scheduler else _task_params(**{parameter.name: "bogus"})
    with pytest.raises(ConfigError, match="(?i)'bogus' is not one of") as err:
        settings_from_mapping(params)
    assert err.value.parameter == (parameter.name if scheduler else f"tasks.a.{parameter.name}")


@pytest.mark.parametrize("parameter", SCHEDULER_PARAMETERS[:-1], ids=lambda p: p.name)
def test_the_tables_type_is_what_settings_enforces(parameter: Parameter) -> None:
    wrong: Any = 7 if parameter.kind in (Kind.STRING, Kind.BOOL) else "seven"
    with pytest.raises(ConfigError, match="expected|not a list") as err:
        settings_from_mapping({**_task_params(), parameter.name: wrong})
    assert err.value.parameter == parameter.name


def test_the_table_and_settings_need_neither_rclpy_nor_torch() -> None:
    code = ("import sys, daris_ros.parameter_table, daris_ros.settings; "
            "print([m for m in ('rclpy', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
