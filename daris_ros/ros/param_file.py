"""Check of the scheduler node's parameters before ``rclpy.init``: every problem is one line naming the file
(and line) and the parameter, and the node exits with :data:`EXIT_INVALID_PARAMETERS` (2).

Without it rcl answers a missing ``--params-file`` or a YAML error with "Failed to parse global arguments"
and the node exits 0; a wrong type ends in a traceback; a misspelt task field or top key is ignored and the
node runs without the task. This module reads the node's ``--ros-args`` the way rcl does (``--params-file
FILE``, ``-p [node:]name:=value`` and the ``__node``/``__ns`` remappings, in order, later values winning),
keeps the sections of each file that apply to this node (``node``, ``/ns/node``, ``/**``, ``/**/node``,
``/*/node``, nested namespace keys), and checks, in this order:

1. each file exists and is YAML (a syntax error names its line);
2. rcl itself accepts the arguments (a trial ``rclpy.init`` in a context of its own, rcl's own message);
3. each file has a section for this node (else: which top keys it has and which would match);
4. every parameter is in the parameter table (:mod:`daris_ros.parameter_table`; a misspelt name gets a
   "did you mean"), has the table's type (``rate: "fast"`` is a string, not a number), is one of its choices and
   within its range (the same check :mod:`daris_ros.settings` makes);
5. there is at least one task, :func:`daris_ros.settings.settings_from_mapping` accepts the values and every
   task's model is known.

Values are typed as rcl types them (``yes``/``on`` are booleans, ``0x1F`` and ``017`` integers, ``1e3`` a
double, a quoted value a string), so a file passes here exactly when the node would take it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from daris_ros.parameter_table import parameter_of, parse_value, type_name
from daris_ros.ros.parameters import NO_TASKS
from daris_ros.settings import (
    ROS_NODE_PARAMETERS,
    ConfigError,
    did_you_mean,
    settings_from_mapping,
    unknown_parameter,
)

#: Exit code of the node for invalid parameters (and of this check).
EXIT_INVALID_PARAMETERS = 2
#: The scheduler node's name before remapping.
NODE_NAME = "daris_scheduler"
PARAMS_KEY = "ros__parameters"

# --ros-args options that take a value (rcl's list); the value of any other option is not a flag.
_WITH_VALUE = ("--params-file", "-p", "--param", "-r", "--remap", "-e", "--enclave", "--log-level",
               "--log-file-name", "--log-config-file")


class ParameterProblem(Exception):
    """One invalid parameter: ``str()`` is the one line printed (``FILE:LINE: parameter 'NAME': ...``)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value comes from: a file and line, or the command line."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(slots=True)
class NodeArguments:
    """What the node's ``--ros-args`` say about its parameters."""

    name: str = NODE_NAME
    namespace: str = "/"
    files: list[str] = field(default_factory=list)
    # in command-line order: ("file", path) or ("param", rule)
    sources: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"


def parse_node_arguments(argv: Sequence[str], node_name: str = NODE_NAME) -> NodeArguments:
    """The ``--params-file``, ``-p`` and ``__node``/``__ns`` remappings of ``argv`` (``--ros-args`` blocks only).
    A malformed block is left to rcl (the trial init reports it)."""
    out = NodeArguments(name=node_name)
    inside = False
    words = iter(argv)
    for word in words:
        if word == "--ros-args":
            inside = True
            continue
        if not inside:
            continue
        if word == "--":
            inside = False
            continue
        if word not in _WITH_VALUE:
            continue
        value = next(words, None)
        if value is None:
            break
        if word == "--params-file":
            out.files.append(value)
            out.sources.append(("file", value))
        elif word in ("-p", "--param"):
            out.sources.append(("param", value))
        elif word in ("-r", "--remap"):
            lhs, sep, rhs = value.partition(":=")
            target, colon, what = lhs.rpartition(":")
            if not sep or (colon and target != node_name):
                continue
            if what in ("__node", "__name"):
                out.name = rhs
            elif what == "__ns":
                out.namespace = "/" + rhs.strip("/")
    return out


# -- values as rcl types them ---------------------------------------------------------------------------
_TRUE = ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y")
_FALSE = ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N")
_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|[1-9][0-9]*|0)")
_OCTAL = re.compile(r"[-+]?0[0-7]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.?(inf|infinity|nan)", re.I)


def rcl_scalar(text: str) -> bool | int | float | str:
    """An unquoted, untagged YAML scalar as rcl's parameter parser types it (strtoll base 0, then strtod)."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text, 0)
    if _OCTAL.fullmatch(text):
        return int(text, 8)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _SPECIAL_FLOAT.fullmatch(text):
        return float(text.replace(".", "", 1))
    return text


class _Loader(yaml.SafeLoader):
    """Composes nodes with their lines; plain scalars get the tag ``!plain`` (typed by :func:`rcl_scalar`)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return "!plain"
        return super().resolve(kind, value, implicit)


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == "!plain":
        return rcl_scalar(node.value)
    return node.value  # quoted, or tagged (!!str)


class _BadValue(Exception):
    """A YAML value that is no parameter value (the reason; the caller names the parameter)."""


def _value(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "!plain" and node.value == "":
            raise _BadValue("no value")
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        items = [_value(n) for n in node.value]
        if any(isinstance(v, list) for v in items):
            raise _BadValue("a list of lists is not a parameter value")
        return items
    raise _BadValue("a mapping inside a list is not a parameter value")


@dataclass(slots=True)
class ParameterFile:
    """The sections of one parameter file: node-name pattern -> {parameter: (value, source)}."""

    path: str
    sections: dict[str, dict[str, tuple[Any, Source]]] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)  # pattern -> line of its top key


def load_parameter_file(path: str) -> ParameterFile:
    """Read ``path`` (a ROS 2 parameter file) with lines; a missing file or a YAML error is a
    :class:`ParameterProblem`. Structure errors rcl also reports (a value before ``ros__parameters``)
    are reported here with the line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ParameterProblem(f"{path}: parameter file not found (--params-file {path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterProblem(f"{path}: cannot read the parameter file: {exc}") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        raise ParameterProblem(f"{path}{line}: YAML syntax error: {what}" + (f" ({context})" if context else "")
                               ) from None
    out = ParameterFile(path)
    if root is None:
        return out
    if not isinstance(root, yaml.MappingNode):
        raise ParameterProblem(f"{path}:{root.start_mark.line + 1}: a parameter file is a mapping "
                               f"'<node>: {{{PARAMS_KEY}: {{...}}}}'")
    _walk_nodes(out, root, [], 0)
    return out


def _walk_nodes(out: ParameterFile, node: yaml.MappingNode, names: list[tuple[str, int]], top_line: int) -> None:
    for key, value in node.value:
        line = key.start_mark.line + 1
        k = str(key.value)
        if k == PARAMS_KEY:
            if not names:
                raise ParameterProblem(f"{out.path}:{line}: {PARAMS_KEY} needs a node name above it")
            pattern = "/" + "/".join(n.strip("/") for n, _ in names if n.strip("/"))
            if not isinstance(value, yaml.MappingNode):
                raise ParameterProblem(f"{out.path}:{line}: {PARAMS_KEY} of {pattern!r} must be a mapping")
            params = out.sections.setdefault(pattern, {})
            out.key_lines.setdefault(pattern, top_line or line)
            _walk_params(out.path, value, "", params)
        elif isinstance(value, yaml.MappingNode):
            _walk_nodes(out, value, [*names, (k, line)], top_line or line)
        else:
            typo = [(n, ln) for n, ln in names if did_you_mean(n, (PARAMS_KEY,))]
            if typo:
                raise ParameterProblem(f"{out.path}:{typo[0][1]}: {typo[0][0]!r} is no node name: parameters "
                                       f"come before {PARAMS_KEY} (did you mean {PARAMS_KEY!r}?)")
            raise ParameterProblem(f"{out.path}:{line}: {k!r} has a value before {PARAMS_KEY} (expected "
                                   f"'<node>: {{{PARAMS_KEY}: {{...}}}}')")


def _walk_params(path: str, node: yaml.MappingNode, prefix: str, params: dict[str, tuple[Any, Source]]) -> None:
    for key, value in node.value:
        name = f"{prefix}{key.value}"
        where = Source(path, value.start_mark.line + 1)
        if isinstance(value, yaml.MappingNode):
            _walk_params(path, value, name + ".", params)
        else:
            try:
                params[name] = (_value(value), where)
            except _BadValue as exc:
                raise ParameterProblem(f"{where}: parameter {name!r}: {exc}") from None


def pattern_matches(pattern: str, fqn: str) -> bool:
    """rcl's node-name match: ``*`` one name, ``**`` any number of them (``/**`` matches every node)."""
    parts = []
    for token in pattern.strip("/").split("/"):
        if token == "**":
            parts.append(r"(/[^/]+)*")
        elif token == "*":
            parts.append(r"/[^/]+")
        else:
            parts.append("/" + re.escape(token))
    return re.fullmatch("".join(parts), fqn) is not None


# -- checks ---------------------------------------------------------------------------------------------
def check_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not a value of parameter ``name`` (unknown name; type, choices or range by the parameter
    table, :func:`daris_ros.parameter_table.parse_value`), or None."""
    err = unknown_parameter(name)
    if err is not None:
        return str(err)
    if name in ROS_NODE_PARAMETERS:
        return None if isinstance(value, bool) else f"parameter {name!r}: {value!r} is {type_name(value)}; " \
                                                     "expected true or false"
    parameter = parameter_of(name)
    if parameter is None:  # qos_overrides.*: rclpy checks those
        return None
    try:
        parse_value(parameter, value, name)
    except ConfigError as exc:
        return str(exc)
    return None


def _command_line_value(rule: str) -> tuple[str, str, Any] | None:
    """``[node:]name:=value`` -> (node prefix, name, typed value)."""
    lhs, sep, text = rule.partition(":=")
    if not sep:
        return None
    node, _, name = lhs.rpartition(":")
    try:
        node_value = yaml.compose(text, Loader=_Loader) if text.strip() else None
        value = _value(node_value) if node_value is not None else text
    except (yaml.YAMLError, _BadValue):
        value = text
    return node, name, value


def collect_parameters(args: NodeArguments) -> tuple[dict[str, tuple[Any, Source]], list[ParameterFile]]:
    """The parameters that apply to the node, with their sources (later files and ``-p`` win)."""
    values: dict[str, tuple[Any, Source]] = {}
    files: list[ParameterFile] = []
    for kind, text in args.sources:
        if kind == "file":
            pf = load_parameter_file(text)
            files.append(pf)
            matched = [p for p in pf.sections if pattern_matches(p, args.fqn)]
            if not matched:
                raise ParameterProblem(_no_section(pf, args))
            for pattern in matched:
                values.update(pf.sections[pattern])
        else:
            parsed = _command_line_value(text)
            if parsed is None:
                continue
            node, name, value = parsed
            if node and node not in (args.name, args.fqn) and not pattern_matches(node, args.fqn):
                continue
            values[name] = (value, Source(f"command line (-p {text})"))
    return values, files


def _no_section(pf: ParameterFile, args: NodeArguments) -> str:
    if not pf.sections:
        return f"{pf.path}: no '<node>: {PARAMS_KEY}:' section (the node is {args.fqn})"
    keys = list(pf.sections)
    first = keys[0]
    if first.rsplit("/", 1)[-1] == args.name:
        hint = " (another namespace)"
    elif did_you_mean(first.rsplit("/", 1)[-1], (args.name,)):
        hint = f" (did you mean {args.name!r}?)"
    else:
        hint = ""
    return (f"{pf.path}:{pf.key_lines[first]}: top key {first.lstrip('/')!r} matches no node here: this node is "
            f"{args.fqn}{hint}; use {args.name!r}, '/**/{args.name}' or '/**'"
            + (f" (the file's keys: {', '.join(repr(k.lstrip('/')) for k in keys)})" if len(keys) > 1 else ""))


def _where(parameter: str, values: dict[str, tuple[Any, Source]], files: list[ParameterFile]) -> str:
    """The source to name for an error of ``parameter`` (its own, else its block's, else task_names')."""
    if parameter in values:
        return str(values[parameter][1])
    for name, (_, src) in values.items():
        if name.startswith(parameter + "."):
            return str(src)
    if "task_names" in values:
        return str(values["task_names"][1])
    return files[-1].path if files else "command line"


def check_parameters(args: NodeArguments) -> None:
    """Raise :class:`ParameterProblem` (one line) for the first problem of the node's parameters."""
    values, files = collect_parameters(args)
    for name, (value, src) in values.items():
        problem = check_value(name, value)
        if problem is not None:
            raise ParameterProblem(f"{src}: {problem}")
    names: object = values["task_names"][0] if "task_names" in values else []
    if not names:
        where = _where("task_names", values, files) if "task_names" in values else (
            ", ".join(f.path for f in files) or "the command line (no --params-file)")
        other = sorted({k for f in files for k in f.sections if not pattern_matches(k, args.fqn)})
        hint = (f"; sections for other nodes: {', '.join(repr(k.lstrip('/')) for k in other)} (this node is "
                f"{args.fqn})") if other else ""
        raise ParameterProblem(f"{where}: parameter 'task_names': {NO_TASKS}{hint}")
    try:
        settings = settings_from_mapping({k: v for k, (v, _) in values.items()})
    except ConfigError as exc:
        raise ParameterProblem(f"{_where(exc.parameter, values, files)}: {exc}") from None
    from daris_ros.runtime.models import BUILTIN_MODELS, is_known_model  # (torch: the node loads it anyway)

    for t in settings.tasks:
        if not is_known_model(t.model):
            name = f"tasks.{t.name}.model"
            raise ParameterProblem(f"{_where(name, values, files)}: parameter {name!r}: unknown model {t.model!r}; "
                                   f"built-in: {', '.join(BUILTIN_MODELS)}, any torchvision classification model "
                                   "name, or a .pt2/.onnx model file")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """rcl logs "Failed to parse global arguments" to stderr on its own; the message printed is ours."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_with_rcl(argv: Sequence[str]) -> None:
    """A trial ``rclpy.init`` of ``argv`` in a context of its own (no node, no DDS participant): what rcl
    refuses (an unknown ``--ros-args`` option, a malformed rule, a list of mixed types) is reported here."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    try:
        with _stderr_silenced():
            rclpy.init(args=list(argv), context=context, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - RCLError, UnknownROSArgsError: all are a refusal
        raise ParameterProblem(_rcl_message(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            context.try_shutdown()


def _rcl_message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if type(exc).__name__ == "UnknownROSArgsError":
        return f"command line: unknown --ros-args option(s) {text}"
    m = re.search(r"Couldn't parse (params file|parameter override rule): '([^']*)'\. Error: (.*)", text)
    if m:
        detail = re.sub(r",? at /\S+:\d+", "", m.group(3)).strip(" ,")
        what = m.group(2)
        if m.group(1) == "params file":
            line = re.search(r"line(?:_num)? (\d+)", detail)
            return f"{what.removeprefix('--params-file ')}{':' + line.group(1) if line else ''}: {detail}"
        return f"command line ({what}): {detail}"
    return f"command line: rcl refuses the arguments: {re.sub(r',? at /[^,]+:[0-9]+', '', text)}"


def check_node_arguments(argv: Sequence[str] | None = None, node_name: str = NODE_NAME) -> int | None:
    """The node's check before ``rclpy.init``: prints the problem as one line and returns
    :data:`EXIT_INVALID_PARAMETERS`, or returns None when the parameters are fine. ``argv`` None: sys.argv."""
    argv = list(sys.argv if argv is None else argv)
    try:
        args = parse_node_arguments(argv, node_name)
        for path in args.files:  # a missing file or a YAML error: named before rcl's less precise message
            load_parameter_file(path)
        check_with_rcl(argv)
        check_parameters(args)
    except ParameterProblem as exc:
        print(f"[{node_name}] invalid parameters: {exc}", file=sys.stderr, flush=True)
        return EXIT_INVALID_PARAMETERS
    return None
