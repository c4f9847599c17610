"""QoS profiles for bags: the rosbags form (metadata), the rclpy form (publishers) and the YAML form.

rosbag2 metadata version 9 stores, per topic, the list of QoS profiles the recorded publishers
*offered*, with policies as lower-case strings (``keep_last``, ``best_effort``, ``volatile``,
``automatic``) and durations as ``{sec, nsec}``; an infinite duration is rmw's
``RMW_DURATION_INFINITE`` = ``{sec: 9223372036, nsec: 854775807}``, which is what a real recording
of a default publisher holds. ``ros2 bag play`` offers the recorded reliability/durability again.

rclpy is imported lazily so that bag synthesis works on a machine without ROS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

if TYPE_CHECKING:
    from rclpy.qos import QoSProfile

#: rmw's RMW_DURATION_INFINITE as rosbag2 writes it.
INFINITE = QosTime(9223372036, 854775807)
#: rmw's RMW_DURATION_UNSPECIFIED.
UNSPECIFIED = QosTime(0, 0)


def make_qos(
    *,
    reliability: str = "best_effort",
    durability: str = "volatile",
    history: str = "keep_last",
    depth: int = 1,
) -> Qos:
    """A rosbags ``Qos`` from short policy names (as ``ros2 topic pub --qos-*`` spells them)."""
    return Qos(
        QosHistory[history.upper()],
        depth,
        QosReliability[reliability.upper()],
        QosDurability[durability.upper()],
        INFINITE,
        INFINITE,
        QosLiveliness.AUTOMATIC,
        INFINITE,
        False,
    )


#: What a camera driver typically offers: sensor-data style (best effort, keep last 1, volatile).
SENSOR_DATA_QOS: Qos = make_qos()
#: A reliable volatile profile (results, statistics, diagnostics).
RELIABLE_QOS: Qos = make_qos(reliability="reliable", depth=10)


def qos_to_dict(qos: Qos) -> dict[str, Any]:
    """The rosbag2 v9 metadata / QoS-override YAML form of one profile."""
    return {
        "history": qos.history.name.lower(),
        "depth": qos.depth,
        "reliability": qos.reliability.name.lower(),
        "durability": qos.durability.name.lower(),
        "deadline": {"sec": qos.deadline.sec, "nsec": qos.deadline.nsec},
        "lifespan": {"sec": qos.lifespan.sec, "nsec": qos.lifespan.nsec},
        "liveliness": qos.liveliness.name.lower(),
        "liveliness_lease_duration": {
            "sec": qos.liveliness_lease_duration.sec,
            "nsec": qos.liveliness_lease_duration.nsec,
        },
        "avoid_ros_namespace_conventions": qos.avoid_ros_namespace_conventions,
    }


def effective_offer(profiles: Iterable[Qos]) -> Qos | None:
    """The profile to offer again on replay, like ``ros2 bag play``: the recorded one if all publishers
    offered the same reliability and durability, else None (use a default)."""
    items = list(profiles)
    if not items:
        return None
    first = items[0]
    if all(p.reliability == first.reliability and p.durability == first.durability for p in items):
        return first
    return None


#: The least keep-last depth of a reliable replay publisher. A reliable writer re-sends a lost sample only while it
#: is still in its history: a subscriber process held off the CPU for 0.6 s (SIGSTOP) lost 5 of 60 frames of
#: 112x112 rgb8 at 30 Hz from a depth-10 writer and none from a depth-100 one (Fast DDS, shared memory; with 4
#: cameras on one participant the 512 KB segment fills sooner). A CI run beside a CPU hog lost 1 of 30 frames
#: that way in the docs/replay.md walk-through. 100 is 3.3 s of a 30 Hz camera.
RELIABLE_REPLAY_DEPTH = 100


def to_rclpy(qos: Qos | None, *, depth: int | None = None, reliable: bool | None = None) -> QoSProfile:
    """An rclpy ``QoSProfile`` for a publisher/subscription from a recorded profile.

    Only reliability and durability matter for compatibility; history is always keep-last with
    ``depth`` (default: the recorded depth, at least 10, as ``ros2 bag play`` uses a default history;
    at least :data:`RELIABLE_REPLAY_DEPTH` when the profile is reliable, so a sample lost on the way to a
    stalled subscriber can still be re-sent). ``qos=None`` gives the sensor-data default. ``reliable``
    forces reliable (True) or best effort (False).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    src = qos or SENSOR_DATA_QOS
    rel_name = src.reliability.name
    if rel_name not in ("RELIABLE", "BEST_EFFORT"):
        rel_name = "BEST_EFFORT" if rel_name != "SYSTEM_DEFAULT" else "RELIABLE"
    if reliable is not None:
        rel_name = "RELIABLE" if reliable else "BEST_EFFORT"
    dur_name = src.durability.name if src.durability.name in ("VOLATILE", "TRANSIENT_LOCAL") else "VOLATILE"
    if depth is None:
        depth = max(RELIABLE_REPLAY_DEPTH if rel_name == "RELIABLE" else 10, src.depth)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy[rel_name],
        durability=DurabilityPolicy[dur_name],
    )


def from_rclpy(profile: QoSProfile) -> Qos:
    """A rosbags ``Qos`` from an rclpy profile (e.g. a discovered publisher's offered QoS)."""

    def _time(duration: Any) -> QosTime:
        nsec = int(duration.nanoseconds)
        if nsec >= 2**63 - 1 or nsec < 0:
            return INFINITE
        return QosTime(nsec // 10**9, nsec % 10**9)

    def _enum(enum_cls: Any, value: Any) -> Any:
        try:
            return enum_cls(int(value))
        except ValueError:
            return enum_cls.UNKNOWN

    return Qos(
        _enum(QosHistory, profile.history),
        int(profile.depth),
        _enum(QosReliability, profile.reliability),
        _enum(QosDurability, profile.durability),
        _time(profile.deadline),
        _time(profile.lifespan),
        _enum(QosLiveliness, profile.liveliness),
        _time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def write_qos_overrides(path: Path | str, topics: Mapping[str, Qos]) -> Path:
    """Write a ``ros2 bag play/record --qos-profile-overrides-path`` file for ``topics``.

    Only the policies that matter (history, depth, reliability, durability) are written; rosbag2
    falls back to its defaults for the rest.
    """
    data = {
        topic: {
            "history": qos.history.name.lower(),
            "depth": qos.depth,
            "reliability": qos.reliability.name.lower(),
            "durability": qos.durability.name.lower(),
        }
        for topic, qos in topics.items()
    }
    out = Path(path)
    out.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return out
