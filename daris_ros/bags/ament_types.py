"""Message types the type store does not know, learnt from the ``.msg`` files of installed ROS packages.

rosbags knows the standard ROS 2 messages and this package's own; a topic of any other package (``vision_msgs``
on a vehicle, a team's own interfaces) could not be recorded. Every ROS 2 interface package installs its
definitions as ``<prefix>/share/<package>/msg/<Name>.msg`` under a prefix of ``AMENT_PREFIX_PATH`` (rosidl does
so, and the ament index lists the prefixes). :func:`learn_type` reads the one a topic needs, and every type it
refers to that the store lacks, and registers them, so the recorder writes the definition into the bag like any
other (``ros2 bag`` does the same from the same files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rosbags.typesys import get_types_from_msg
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

PREFIX_ENV = "AMENT_PREFIX_PATH"


class UnknownTypeError(LookupError):
    """A message type (or one it refers to) has no ``.msg`` file under any prefix of ``AMENT_PREFIX_PATH``."""


def ament_prefixes(value: str | None = None) -> list[Path]:
    """The install prefixes of ``AMENT_PREFIX_PATH`` (or ``value``), in order, empty entries left out."""
    raw = os.environ.get(PREFIX_ENV, "") if value is None else value
    return [Path(entry) for entry in raw.split(os.pathsep) if entry]


def definition_file(msgtype: str, prefixes: Sequence[Path]) -> Path | None:
    """``<prefix>/share/<package>/msg/<Name>.msg`` of ``msgtype`` (``package/msg/Name``) in the first prefix
    that has it, or None."""
    package, kind, name = _split(msgtype)
    for prefix in prefixes:
        path = prefix / "share" / package / kind / f"{name}.msg"
        if path.is_file():
            return path
    return None


def learn_type(store: Typestore, msgtype: str, prefixes: Sequence[Path] | None = None) -> list[str]:
    """Register ``msgtype`` and every type it refers to that ``store`` lacks, from their ``.msg`` files; returns
    the names registered (empty when the store knew ``msgtype`` already).

    Raises:
        UnknownTypeError: a needed definition is in none of the prefixes (the message names the type, the type
            that refers to it, and where it was looked for).
        ValueError: ``msgtype`` is not ``package/msg/Name``.
    """
    if msgtype in store.fielddefs:
        return []
    search = ament_prefixes() if prefixes is None else list(prefixes)
    learnt: dict[str, Any] = {}
    todo: list[tuple[str, str | None]] = [(msgtype, None)]
    while todo:
        name, needed_by = todo.pop()
        if name in learnt or name in store.fielddefs:
            continue
        path = definition_file(name, search)
        if path is None:
            by = f" (a field type of {needed_by})" if needed_by else ""
            where = ", ".join(str(p / "share") for p in search) or f"nothing: {PREFIX_ENV} is empty"
            raise UnknownTypeError(f"no definition of message type {name}{by}: looked for "
                                   f"{'/'.join(_split(name))}.msg in {where}")
        types = get_types_from_msg(path.read_text(encoding="utf-8"), name)
        learnt.update(types)
        for _consts, fields in types.values():
            todo.extend((ref, name) for ref in _referenced(fields))
    store.register(learnt)
    return sorted(learnt)


def _split(msgtype: str) -> tuple[str, str, str]:
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts) or parts[1] != "msg":
        raise ValueError(f"not a message type name (package/msg/Name): {msgtype!r}")
    return parts[0], parts[1], parts[2]


def _referenced(fields: Iterable[tuple[str, Any]]) -> list[str]:
    """The message types named by the fields of one definition (inside arrays and sequences too)."""
    out: list[str] = []
    for _name, desc in fields:
        node, detail = desc
        while node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (node, detail), _size = detail
        if node == Nodetype.NAME:
            out.append(detail)
    return out


def with_bag_types(store: Typestore, connections: Iterable[Any]) -> Typestore:
    """``store``, or a copy of it that also knows the types of ``connections`` (a rosbags reader's) it lacks,
    from the definitions the bag stores with them (a bag recorded where vision_msgs was installed is read where
    it is not). ``store`` itself is never changed; a connection without a ``.msg`` definition is left out."""
    missing = {c.msgtype: c.msgdef for c in connections if c.msgtype not in store.fielddefs}
    learnt: dict[str, Any] = {}
    for msgtype, msgdef in missing.items():
        if getattr(getattr(msgdef, "format", None), "name", "") == "MSG" and msgdef.data:
            learnt.update(get_types_from_msg(msgdef.data, msgtype))
    if not learnt:
        return store
    copy = Typestore()
    copy.register(dict(store.fielddefs))
    copy.register({name: fields for name, fields in learnt.items() if name not in store.fielddefs})
    return copy
