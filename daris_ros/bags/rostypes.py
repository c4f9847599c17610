"""Glue between bag type names and rclpy: message classes, header stamps inside CDR bytes."""

from __future__ import annotations

import importlib
import struct
from typing import Any

from rosbags.typesys.store import Typestore

from .typestore import get_typestore

HEADER_TYPE = "std_msgs/msg/Header"
#: CDR encapsulation identifiers (first two bytes of a serialised message).
CDR_LE = b"\x00\x01"
CDR_BE = b"\x00\x00"


def split_msgtype(msgtype: str) -> tuple[str, str, str]:
    """``"sensor_msgs/msg/Image"`` -> ``("sensor_msgs", "msg", "Image")``."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS 2 type name <package>/<kind>/<Name>: {msgtype!r}")
    return parts[0], parts[1], parts[2]


def import_message_class(msgtype: str) -> type[Any]:
    """The generated Python class of ``msgtype`` (e.g. ``sensor_msgs.msg.Image``).

    Raises:
        ImportError: the interface package is not importable (for ``daris_ros/msg/*``: run from the
            colcon install space, where the generated ``daris_ros.msg`` exists).
    """
    pkg, kind, name = split_msgtype(msgtype)
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot import the message class of {msgtype}: {exc}") from exc


def msgtype_of(cls: type[Any]) -> str:
    """``sensor_msgs.msg.Image`` (class) -> ``"sensor_msgs/msg/Image"``."""
    module = cls.__module__.split(".")
    # generated modules are <pkg>.<kind>._<snake_name>
    return f"{module[0]}/{module[1]}/{cls.__name__}"


def starts_with_header(msgtype: str, store: Typestore | None = None) -> bool:
    """Whether the first field of ``msgtype`` is a ``std_msgs/Header`` (so its stamp sits at a fixed
    offset of the CDR bytes)."""
    fields = (store or get_typestore()).fielddefs.get(msgtype)
    if not fields or not fields[1]:
        return False
    _name, (_kind, ref) = fields[1][0]
    return ref == HEADER_TYPE


def header_stamp_ns(data: bytes | bytearray | memoryview) -> int | None:
    """``header.stamp`` (ns) of a CDR message whose first field is a Header; None if not CDR."""
    raw = bytes(data[:12])
    if len(raw) < 12 or raw[:2] not in (CDR_LE, CDR_BE):
        return None
    fmt = "<iI" if raw[:2] == CDR_LE else ">iI"
    sec, nsec = struct.unpack_from(fmt, raw, 4)
    return sec * 10**9 + nsec


def shift_header_stamp(data: bytes | memoryview, offset_ns: int) -> bytes:
    """A copy of a CDR message (first field a Header) with ``header.stamp`` moved by ``offset_ns``.

    The stamp is the first thing after the 4-byte encapsulation header (int32 sec, uint32 nanosec),
    so this patches 8 bytes without deserialising. Non-CDR data is returned unchanged.
    """
    buf = bytearray(data)
    stamp = header_stamp_ns(buf)
    if stamp is None or offset_ns == 0:
        return bytes(buf)
    new = stamp + offset_ns
    fmt = "<iI" if buf[:2] == CDR_LE else ">iI"
    struct.pack_into(fmt, buf, 4, new // 10**9, new % 10**9)
    return bytes(buf)
