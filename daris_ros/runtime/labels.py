"""Class names of a task: a labels file (one name per line) or the model's own ``class_names``.

ROS-free (the node, the bench and the tests read the same files). A labels file is UTF-8 text, one class name per
line, line ``i`` (0-based) naming class id ``i``; a trailing newline is optional; blank lines are names too (an
unnamed id), except trailing blank lines, which are dropped. Errors are :class:`~daris_ros.parameter_table.
ConfigError` naming ``tasks.<task>.labels_file``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from daris_ros.parameter_table import ConfigError

#: The most class names a task may have: LabelInfo's VisionClass.class_id is a uint16 (vision_msgs too).
MAX_CLASS_NAMES = 1 << 16


def read_labels_file(path: str, parameter: str = "labels_file") -> tuple[str, ...]:
    """The class names in ``path`` (index = class id). Raises ConfigError naming ``parameter`` when the file does
    not exist, is not a regular file, cannot be read, is not UTF-8 text or names no class."""
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(parameter, f"labels file {path!r} does not exist")
    if not file.is_file():
        raise ConfigError(parameter, f"labels file {path!r} is not a regular file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(parameter, f"labels file {path!r} is not UTF-8 text ({exc.reason} at byte "
                                     f"{exc.start})") from None
    except OSError as exc:
        raise ConfigError(parameter, f"labels file {path!r} cannot be read: {exc.strerror or exc}") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ConfigError(parameter, f"labels file {path!r} names no class (one class name per line)")
    if len(names) > MAX_CLASS_NAMES:
        raise ConfigError(parameter, f"labels file {path!r} names {len(names)} classes; LabelInfo's class ids are "
                                     f"uint16 (at most {MAX_CLASS_NAMES})")
    return tuple(names)


def class_names_for(labels_file: str, model_names: Sequence[str] | None, parameter: str = "labels_file"
                    ) -> tuple[str, ...]:
    """A task's class names: its labels file when given, else the model's ``class_names``, else none."""
    if labels_file:
        return read_labels_file(labels_file, parameter)
    return tuple(model_names or ())


def name_of(names: Sequence[str], class_id: int) -> str:
    """The name of ``class_id`` ("" when ``names`` has none for it)."""
    return names[class_id] if 0 <= class_id < len(names) else ""
