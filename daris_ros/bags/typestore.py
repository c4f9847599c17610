"""The rosbags type store used by every bag tool: ROS 2 kilted types plus daris_ros's own messages.

The daris_ros message definitions are read from the package's ``msg/`` directory, so the bag tools
work without the colcon build (the generated ``daris_ros.msg`` classes are not needed to write or read
bags, only to publish/subscribe those types with rclpy). The directory is looked up, in order:

1. ``$DARIS_ROS_MSG_DIR`` if set;
2. the ament index (``<prefix>/share/daris_ros/msg`` of the colcon install space);
3. the source tree (``<repo>/msg`` next to the ``daris_ros`` Python package).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "daris_ros"

#: The ROS 2 distribution the bags are written for (its type hashes go into the metadata).
ROS_DISTRO = "kilted"

#: rosbags store for that distribution (``LATEST`` is kilted in rosbags 0.11; used only if an older
#: rosbags lacks the named store).
KILTED_STORE: Stores = getattr(Stores, "ROS2_KILTED", Stores.LATEST)

#: daris_ros message types, in dependency order.
DARIS_MSG_NAMES: tuple[str, ...] = ("PriorityStats", "TaskStats", "SchedulerStats", "StageRecord", "InferenceResult",
                                    "BoundingBox2D", "ObjectHypothesis", "Detection2D", "Detection2DArray",
                                    "VisionClass", "LabelInfo")
DARIS_TYPES: tuple[str, ...] = tuple(f"{PACKAGE}/msg/{name}" for name in DARIS_MSG_NAMES)

MSG_DIR_ENV = "DARIS_ROS_MSG_DIR"


def _share_msg_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        share = Path(get_package_share_directory(PACKAGE))
    except (LookupError, OSError, ValueError):
        # PackageNotFoundError is a KeyError; an unset AMENT_PREFIX_PATH raises OSError.
        return None
    msg_dir = share / "msg"
    return msg_dir if msg_dir.is_dir() else None


def _source_msg_dir() -> Path | None:
    # daris_ros/bags/typestore.py -> <repo>/msg
    msg_dir = Path(__file__).resolve().parents[2] / "msg"
    return msg_dir if msg_dir.is_dir() else None


def find_msg_dir() -> Path | None:
    """Return the directory holding daris_ros's ``.msg`` files, or None if none is found."""
    env = os.environ.get(MSG_DIR_ENV)
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    return _share_msg_dir() or _source_msg_dir()


def load_msg_types(msg_dir: Path, package: str = PACKAGE) -> dict[str, object]:
    """Parse every ``<msg_dir>/*.msg`` into rosbags type definitions named ``<package>/msg/<Name>``."""
    types: dict[str, object] = {}
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{package}/msg/{path.stem}"))
    return types


def make_typestore(msg_dir: Path | None = None, *, include_package: bool = True) -> Typestore:
    """Build a fresh kilted type store, with daris_ros's messages registered when found.

    Args:
        msg_dir: where the ``.msg`` files are; default: :func:`find_msg_dir`.
        include_package: register daris_ros's messages (False gives the plain kilted store).

    Raises:
        FileNotFoundError: ``msg_dir`` was given but does not exist.
    """
    store = _rosbags_typestore(KILTED_STORE)
    if not include_package:
        return store
    if msg_dir is None:
        msg_dir = find_msg_dir()
        if msg_dir is None:
            return store
    elif not msg_dir.is_dir():
        raise FileNotFoundError(f"message directory not found: {msg_dir}")
    store.register(load_msg_types(msg_dir))  # type: ignore[arg-type]
    return store


@functools.cache
def get_typestore() -> Typestore:
    """The shared default type store (built once; treat it as read-only)."""
    return make_typestore()


def has_type(msgtype: str, store: Typestore | None = None) -> bool:
    """Whether ``msgtype`` (e.g. ``sensor_msgs/msg/Image``) is known to the store."""
    return msgtype in (store or get_typestore()).fielddefs


def type_hash(msgtype: str, store: Typestore | None = None) -> str:
    """The ``RIHS01_...`` type description hash of ``msgtype``, as rosidl computes it."""
    return (store or get_typestore()).hash_rihs01(msgtype)


def message_definition(msgtype: str, store: Typestore | None = None) -> str:
    """The concatenated ``.msg`` definition (with dependencies) that rosbag2 stores as the schema."""
    return (store or get_typestore()).generate_msgdef(msgtype, ros_version=2)[0]
