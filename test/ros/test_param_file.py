"""Failures are loud: a parameter problem stops the scheduler node with exit code 2 and one line naming the
file (and line) and the parameter, before rclpy.init (daris_ros/ros/param_file.py).

The first tests run the installed executable as a process with broken parameter files; the others call the
check in this process (what each kind of problem says, and that every shipped file passes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from daris_ros.ros.param_file import (
    EXIT_INVALID_PARAMETERS,
    check_node_arguments,
    parse_node_arguments,
    pattern_matches,
    rcl_scalar,
)
from daris_ros.ros.parameters import declare_and_read
from daris_ros.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
/**/daris_scheduler:
  ros__parameters:
    policy: MPS
    n_contexts: 1
    task_names: [front]
    tasks:
      front:
        topic: /cam/front
        priority: HP
        rate: 10.0
        model: resnet18
"""


def _broken(line: str, replacement: str) -> str:
    assert line in GOOD
    return GOOD.replace(line, replacement)


# name -> (file text, or None for a missing file; words the one line must contain)
NODE_CASES = {
    "missing_file": (None, ["not found"]),
    "yaml_syntax": (_broken("task_names: [front]", "task_names: [front"), [":6:", "YAML syntax error"]),
    "wrong_type": (_broken("rate: 10.0", 'rate: "fast"'), [":10:", "'tasks.front.rate'", "'fast' is a string"]),
    "unknown_task_field": (_broken("rate: 10.0", "rat: 10.0"),
                           [":10:", "'tasks.front.rat'", "did you mean 'rate'?"]),
    "unknown_top_key": (_broken("/**/daris_scheduler:", "daris_schedular:"),
                        [":1:", "'daris_schedular' matches no node", "/daris_scheduler",
                         "did you mean 'daris_scheduler'?"]),
    "empty_task_list": (_broken("task_names: [front]", "task_names: []"), [":5:", "'task_names'", "no camera tasks"]),
}


@pytest.mark.parametrize("case", sorted(NODE_CASES))
def test_node_exits_2_with_one_line_naming_file_and_parameter(install_prefix, tmp_path, case):
    text, words = NODE_CASES[case]
    f = tmp_path / f"{case}.yaml"
    if text is not None:
        f.write_text(text, encoding="utf-8")
    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    proc = subprocess.run([str(exe), "--ros-args", "--params-file", str(f)], capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == EXIT_INVALID_PARAMETERS, lines
    assert len(lines) == 1, lines  # one line, no traceback, no rcl "Failed to parse global arguments"
    assert lines[0].startswith(f"[daris_scheduler] invalid parameters: {f}")
    for w in words:
        assert w in lines[0], (w, lines[0])


def _check(capsys, args: list[str]) -> tuple[int | None, str]:
    rc = check_node_arguments(["scheduler_node", *args])
    err = capsys.readouterr().err.strip()
    return rc, err


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


@pytest.mark.parametrize(
    ("line", "replacement", "words"),
    [
        ("n_contexts: 1", "n_contexts: 100", ["'n_contexts'", "out of range", "1..64", ":4:"]),
        ("n_contexts: 1", "n_contexts: 1.5", ["'n_contexts'", "expected an integer", ":4:"]),
        ("policy: MPS", "polcy: MPS", ["'polcy'", "did you mean 'policy'?", ":3:"]),
        ("policy: MPS", "policy: FIFO", ["'policy'", "'FIFO' is not one of", ":3:"]),  # settings validation
        ("priority: HP", "priority: XP", ["'tasks.front.priority'", ":9:"]),
        ("model: resnet18", "model: resnet1800", ["'tasks.front.model'", "unknown model 'resnet1800'", ":11:"]),
        ("rate: 10.0", "rate: 10.0\n        period: 0.1", ["'tasks.front.rate'", "not both", ":10:"]),
        ("model: resnet18", "model:", ["'tasks.front.model'", "no value", ":11:"]),
        ("task_names: [front]", "task_names: [front, 3]", ["Sequence should be of same type", ":5:"]),  # rcl's
        ("task_names: [front]", "task_names: [front, rear]", ["'tasks.rear.topic'", ":5:"]),  # no block
        ("model: resnet18", "model: resnet18\n      rear: 3", ["'tasks.rear'", "must be a block", ":12:"]),
        ("  ros__parameters:\n", "  ros_parameters:\n",
         ["'ros_parameters' is no node name", "did you mean 'ros__parameters'?", ":2:"]),
    ],
)
def test_each_problem_names_file_line_and_parameter(capsys, tmp_path, line, replacement, words):
    f = _write(tmp_path, _broken(line, replacement))
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(f)])
    assert rc == EXIT_INVALID_PARAMETERS
    assert len(err.splitlines()) == 1 and str(f) in err, err
    for w in words:
        assert w in err, (w, err)


def test_command_line_values_and_rules_are_checked(capsys, tmp_path):
    f = _write(tmp_path, GOOD)
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(f), "-p", "tasks.front.rate:=fast"])
    assert rc == 2 and "command line (-p tasks.front.rate:=fast)" in err and "expected a number" in err
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(f), "--bogus"])
    assert rc == 2 and "--bogus" in err and len(err.splitlines()) == 1
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(f), "-p", "daris_scheduler:n_contexts:=0"])
    assert rc == 2 and "'n_contexts'" in err
    # a rule for another node does not apply to this one
    assert _check(capsys, ["--ros-args", "--params-file", str(f), "-p", "other:n_contexts:=0"]) == (None, "")
    rc, err = _check(capsys, [])  # no parameter file at all: no tasks
    assert rc == 2 and "no --params-file" in err and "task_names" in err


def test_top_key_of_another_node_is_named_with_the_node_it_should_match(capsys, tmp_path):
    f = _write(tmp_path, GOOD.replace("/**/daris_scheduler:", "/gpu0/daris_scheduler:"))
    assert _check(capsys, ["--ros-args", "-r", "__ns:=/gpu0", "--params-file", str(f)]) == (None, "")
    rc, err = _check(capsys, ["--ros-args", "-r", "__ns:=/gpu1", "--params-file", str(f)])
    assert rc == 2 and "'gpu0/daris_scheduler' matches no node" in err and "/gpu1/daris_scheduler (another" in err
    # a file with a section for this node and a misspelt one: the missing tasks are explained
    g = _write(tmp_path, "/**:\n  ros__parameters:\n    use_sim_time: true\n" + GOOD.replace(
        "/**/daris_scheduler:", "daris_schedular:"), "two.yaml")
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(g)])
    assert rc == 2 and "no camera tasks" in err and "sections for other nodes: 'daris_schedular'" in err


def test_later_files_and_overrides_win_and_a_launch_override_file_passes(capsys, tmp_path):
    broken = _write(tmp_path, _broken("n_contexts: 1", "n_contexts: 0"), "a.yaml")
    # launch_ros writes a dict of parameters as a '/**' file after the config
    fix = _write(tmp_path, "/**:\n  ros__parameters:\n    n_contexts: 2\n    device: cpu\n    use_sim_time: false\n",
                 "b.yaml")
    assert _check(capsys, ["--ros-args", "--params-file", str(broken), "--params-file", str(fix)]) == (None, "")
    rc, err = _check(capsys, ["--ros-args", "--params-file", str(fix), "--params-file", str(broken)])
    assert rc == 2 and f"{broken}:4:" in err


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_parameter_files_pass(capsys, name):
    args = ["--ros-args", "-r", "__ns:=/vehicle1", "-p", "use_sim_time:=true", "--params-file",
            str(REPO / "config" / name)]
    assert _check(capsys, args) == (None, "")


def test_rcl_typing_of_plain_scalars():
    cases = {"true": True, "Yes": True, "off": False, "n": False, "017": 15, "0x1F": 31, "-0": 0, "+5": 5,
             "1e3": 1000.0, "1.": 1.0, ".5": 0.5, "08": 8.0, "null": "null", "~": "~", "1_000": "1_000",
             "0o17": "0o17", "fast": "fast"}
    for text, value in cases.items():
        got = rcl_scalar(text)
        assert got == value and type(got) is type(value), (text, got)
    assert rcl_scalar("-.inf") == float("-inf")


def test_node_name_patterns_and_remaps():
    assert pattern_matches("/**", "/daris_scheduler") and pattern_matches("/**", "/a/b/daris_scheduler")
    assert pattern_matches("/**/daris_scheduler", "/daris_scheduler")
    assert pattern_matches("/**/daris_scheduler", "/a/b/daris_scheduler")
    assert pattern_matches("/*/daris_scheduler", "/gpu0/daris_scheduler")
    assert not pattern_matches("/*/daris_scheduler", "/daris_scheduler")
    assert not pattern_matches("/daris_scheduler", "/gpu0/daris_scheduler")
    a = parse_node_arguments(["x", "--ros-args", "-r", "__ns:=gpu1/", "-r", "daris_scheduler:__node:=s1",
                              "-r", "other:__node:=nope", "--params-file", "f.yaml", "--", "--params-file", "g"])
    assert (a.fqn, a.files) == ("/gpu1/s1", ["f.yaml"])


def test_node_refuses_unknown_overrides_and_no_tasks_when_started_without_the_check():
    """declare_and_read is the check of a node started otherwise (its parameter overrides, its task list)."""
    context = Context()
    rclpy.init(context=context)
    try:
        good = [Parameter("task_names", value=["a"]), Parameter("tasks.a.topic", value="/cam/a"),
                Parameter("tasks.a.rate", value=5.0), Parameter("tasks.a.model", value="resnet18")]
        for extra, match in ([Parameter("tasks.a.rat", value=5.0)], "did you mean 'rate'"), \
                ([Parameter("polcy", value="MPS")], "did you mean 'policy'"):
            node = Node("daris_scheduler", context=context, parameter_overrides=good + extra)
            try:
                with pytest.raises(ConfigError, match=match):
                    declare_and_read(node)
            finally:
                node.destroy_node()
        node = Node("daris_scheduler", context=context, parameter_overrides=good[1:])
        try:
            with pytest.raises(ConfigError, match="no camera tasks") as err:
                declare_and_read(node)
            assert err.value.parameter == "task_names"
        finally:
            node.destroy_node()
        node = Node("daris_scheduler", context=context, parameter_overrides=good)
        try:
            assert [t.name for t in declare_and_read(node).tasks] == ["a"]
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_ros_declarations_follow_the_parameter_table():
    """Descriptors come from daris_ros/parameter_table.py: read-only, integer and floating-point ranges."""
    from daris_ros.parameter_table import SCHEDULER_PARAMETERS, TASK_PARAMETERS, Kind, Runtime
    from daris_ros.ros.parameters import ros_descriptor

    for p in SCHEDULER_PARAMETERS + TASK_PARAMETERS:
        d = ros_descriptor(p, p.name)
        assert d.description == p.description
        assert d.read_only == (p.runtime is Runtime.READ_ONLY), p.name
        ranges = [(r.from_value, r.to_value) for r in (*d.integer_range, *d.floating_point_range)]
        assert ranges == ([p.bounds] if p.bounds and p.kind in (Kind.INTEGER, Kind.NUMBER) else []), p.name
        assert d.dynamic_typing == (p.kind is Kind.NUMBER), p.name
