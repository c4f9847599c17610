"""Parameter validation: every invalid class is a ConfigError naming the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

from daris_ros.settings import ConfigError, load_parameter_file, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]


def _params(**sched):
    base = {
        "policy": "MPS", "n_contexts": 2, "n_streams": 1, "oversubscription": 1.0,
        "task_names": ["a", "b"],
        "tasks": {
            "a": {"topic": "/cam/a", "priority": "HP", "rate": 30, "model": "resnet18"},
            "b": {"topic": "/cam/b", "priority": "LP", "period": 0.1, "model": "resnet18", "deadline": 0.05},
        },
    }
    base.update(sched)
    return base


def test_valid_settings_defaults_and_units():
    s = settings_from_mapping(_params())
    a, b = s.tasks
    assert a.period == pytest.approx(1 / 30) and a.deadline == pytest.approx(1 / 30)  # D_i = T_i
    assert b.period == pytest.approx(0.1) and b.deadline == pytest.approx(0.05)
    assert a.output_topic == "daris/a/result"
    assert s.task("b").priority == "LP"
    assert s.feasibility == "refuse"  # an infeasible HP set stops the node unless told to warn
    assert settings_from_mapping(_params(feasibility="WARN")).feasibility == "warn"


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"oversubscription": 3.0}, "oversubscription"),  # OS > N_c
        ({"oversubscription": 0.5}, "oversubscription"),
        ({"policy": "FIFO"}, "policy"),
        ({"backend": "tpu"}, "backend"),
        ({"policy": "STR", "n_contexts": 2}, "n_contexts"),
        ({"policy": "MPS", "n_streams": 2}, "n_streams"),
        ({"n_contexts": 0}, "n_contexts"),
        ({"mret_window": 0}, "mret_window"),
        ({"stats_period": 0}, "stats_period"),
        ({"batching": True, "backend": "mps"}, "batching"),  # mps workers cannot run batched stages
        ({"batch_sizes": [2, 4]}, "batch_sizes"),  # 1 must be a size
        ({"batch_sizes": [1, 2048]}, "batch_sizes"),
        ({"batch_sizes": ["big"]}, "batch_sizes"),
        ({"batch_pad_limit": 1.0}, "batch_pad_limit"),
        ({"batch_lp_admit_margin": -0.1}, "batch_lp_admit_margin"),
        ({"batch_min_size": 64}, "batch_min_size"),  # beyond the largest size
        ({"feasibility": "ignore"}, "feasibility"),  # refuse | warn
    ],
)
def test_invalid_scheduler_parameter_is_named(change, parameter):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(_params(**change))
    assert err.value.parameter == parameter
    assert parameter in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "parameter"),
    [
        ("rate", -5, "tasks.a.rate"),
        ("priority", "MEDIUM", "tasks.a.priority"),
        ("topic", "", "tasks.a.topic"),
        ("model", "", "tasks.a.model"),
        ("weights", "/nonexistent/w.pt", "tasks.a.weights"),
        ("input_size", [8, 8], "tasks.a.input_size"),
        ("input_type", "pointcloud", "tasks.a.input_type"),
        ("deadline", -1, "tasks.a.deadline"),
        ("precision", "int8", "tasks.a.precision"),
    ],
)
def test_invalid_task_parameter_is_named(field, value, parameter):
    p = _params()
    p["tasks"]["a"][field] = value
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(p)
    assert err.value.parameter == parameter


def test_duplicate_topics_rejected():
    p = _params()
    p["tasks"]["b"]["topic"] = "/cam/a"
    with pytest.raises(ConfigError, match="already used by task 'a'") as err:
        settings_from_mapping(p)
    assert err.value.parameter == "tasks.b.topic"


def test_rate_and_period_together_rejected():
    p = _params()
    p["tasks"]["a"]["period"] = 0.5
    with pytest.raises(ConfigError, match="not both"):
        settings_from_mapping(p)


def test_unknown_model_with_known_list():
    p = _params()
    p["tasks"]["a"]["model"] = "resnet1800"
    with pytest.raises(ConfigError, match="unknown model 'resnet1800'") as err:
        settings_from_mapping(p, known_models=["resnet18", "unet"])
    assert err.value.parameter == "tasks.a.model"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_config_files_are_valid(name):
    s = settings_from_mapping(load_parameter_file(REPO / "config" / name))
    assert s.tasks, f"{name} defines no tasks"


def test_parameter_file_without_section(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("other_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        load_parameter_file(f)


def test_batching_and_precision_settings() -> None:
    p = _params(backend="str", device="cuda", policy="STR", n_contexts=1, n_streams=3, batching=True,
                batch_sizes=[1, 8, 32, 4], batch_pad_limit=0.0, batch_lp_admit_margin=0.5)
    p["tasks"]["a"].update(precision="FP16", channels_last=True)
    s = settings_from_mapping(p)
    assert s.batching and s.batch_sizes == (1, 8, 32, 4) and s.batch_pad_limit == 0.0
    assert (s.tasks[0].precision, s.tasks[0].channels_last) == ("fp16", True)
    assert (s.tasks[1].precision, s.tasks[1].channels_last) == ("fp32", False)  # the defaults
    assert not settings_from_mapping(_params()).batching  # off unless asked for


@pytest.mark.parametrize(("field", "value"), [("precision", "bf16"), ("channels_last", True)])
def test_the_mps_backend_refuses_reduced_precision_and_channels_last(field, value) -> None:
    p = _params(backend="mps", device="cuda")
    p["tasks"]["b"][field] = value
    with pytest.raises(ConfigError, match="mps backend") as err:
        settings_from_mapping(p)
    assert err.value.parameter == f"tasks.b.{field}"


@pytest.mark.parametrize(
    ("change", "parameter", "message"),
    [
        ({"n_contexts": 2.5}, "n_contexts", "expected an integer"),
        ({"n_contexts": "two"}, "n_contexts", "expected an integer"),
        ({"oversubscription": "max"}, "oversubscription", "expected a number"),
        ({"hp_admission": "yes"}, "hp_admission", "expected true or false"),
        ({"policy": 3}, "policy", "expected a string"),
    ],
)
def test_wrong_scheduler_type_is_a_config_error_naming_the_parameter(change, parameter, message):
    with pytest.raises(ConfigError, match=message) as err:
        settings_from_mapping(_params(**change))
    assert err.value.parameter == parameter


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", "fast", "'fast' is a string; expected a number"),  # was a ValueError from float()
        ("rate", True, "expected a number"),
        ("qos_depth", 1.5, "expected an integer"),
        ("input_size", ["a", "b"], "not a list of integers"),
        ("channels_last", "false", "expected true or false"),  # bool("false") would be True
        ("topic", 5, "expected a string"),
    ],
)
def test_wrong_task_type_is_a_config_error_naming_the_parameter(field, value, message):
    p = _params()
    p["tasks"]["a"][field] = value
    with pytest.raises(ConfigError, match=message) as err:
        settings_from_mapping(p)
    assert err.value.parameter == f"tasks.a.{field}"


@pytest.mark.parametrize(
    ("where", "name", "parameter", "hint"),
    [
        ("task", "rat", "tasks.a.rat", "did you mean 'rate'?"),
        ("task", "prority", "tasks.a.prority", "did you mean 'priority'?"),
        ("top", "polcy", "polcy", "did you mean 'policy'?"),
        ("top", "n_context", "n_context", "did you mean 'n_contexts'?"),
    ],
)
def test_unknown_parameter_is_named_with_a_hint(where, name, parameter, hint):
    p = _params()
    if where == "task":
        p["tasks"]["a"][name] = 30.0
    else:
        p[name] = 1
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(p)
    assert err.value.parameter == parameter
    assert hint in str(err.value)


def test_ros_node_parameters_and_tasks_outside_task_names_are_accepted():
    p = _params(use_sim_time=True)
    p["tasks"]["later"] = {"topic": "/cam/later", "rate": 5.0, "model": "resnet18"}  # added at run time
    assert [t.name for t in settings_from_mapping(p).tasks] == ["a", "b"]


def test_skip_late_default_off_and_range() -> None:
    """Bounded staleness (docs/policy.md): on at 2 deadlines by default in the node, 0 turns it off (the core's
    None), and below one deadline (a job that could still meet its deadline) is refused, naming the parameter."""
    from daris_ros.runtime.engine import to_scheduler_config

    s = settings_from_mapping(_params())
    assert s.skip_late == 2.0 and to_scheduler_config(s).skip_late == 2.0
    off = settings_from_mapping(_params(skip_late=0))
    assert off.skip_late == 0.0 and to_scheduler_config(off).skip_late is None
    assert settings_from_mapping(_params(skip_late=1)).skip_late == 1.0
    for bad in (0.5, -1.0, 1001.0, float("nan")):
        with pytest.raises(ConfigError, match="skip_late") as info:
            settings_from_mapping(_params(skip_late=bad))
        assert info.value.parameter == "skip_late"
    with pytest.raises(ConfigError, match="skip_late"):
        settings_from_mapping(_params(skip_late="late"))
