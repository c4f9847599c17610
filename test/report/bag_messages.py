"""rosbags messages of any type for the report tests' bags, every field not given zero (so the tests do not
break when a message gains fields): ``T["daris_ros/msg/InferenceResult"](task="a", ...)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from daris_ros.bags.typestore import get_typestore

STORE = get_typestore()

_BASE_DEFAULTS = {"string": "", "bool": False, "float32": 0.0, "float64": 0.0}
_NUMPY = {"uint8": np.uint8, "byte": np.uint8, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
          "uint64": np.uint64, "float32": np.float32, "float64": np.float64}


def make(msgtype: str, **fields: Any) -> Any:
    """A rosbags message of ``msgtype`` with ``fields``; fields not given get zero values, so the test
    does not break when a message gains fields."""
    for name, (kind, spec) in STORE.fielddefs[msgtype][1]:
        if name in fields:
            continue
        if kind == 1:  # base type
            fields[name] = _BASE_DEFAULTS.get(spec[0], 0)
        elif kind == 2:  # nested message
            fields[name] = make(spec)
        else:  # array / sequence
            (elem_kind, elem), _size = spec
            if elem_kind == 1 and elem[0] in _NUMPY:
                fields[name] = np.array([], _NUMPY[elem[0]])
            else:
                fields[name] = []
    return STORE.types[msgtype](**fields)


class _Types:
    def __getitem__(self, msgtype: str) -> Any:
        return lambda **fields: make(msgtype, **fields)


T = _Types()


def time_msg(ns: int) -> Any:
    return T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def header_msg(ns: int, frame_id: str) -> Any:
    return T["std_msgs/msg/Header"](stamp=time_msg(ns), frame_id=frame_id)
