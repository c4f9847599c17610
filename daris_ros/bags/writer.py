"""Write rosbag2 bags (mcap by default, sqlite3 as an option) with rosbags.

The bag is a rosbag2 directory: ``metadata.yaml`` (version 9, as written by rosbag2 on jazzy/kilted)
plus one storage file. Each topic records its type, ``cdr`` serialisation, the ``RIHS01_`` type
description hash of the kilted type (or of daris_ros's own ``.msg`` files) and the QoS profiles the
publisher offered, so ``ros2 bag info`` / ``ros2 bag play`` on a real ROS install accept it and
``ros2 bag play`` offers the recorded QoS again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from .qos import RELIABLE_QOS, SENSOR_DATA_QOS
from .synth import SynthConfig, generate
from .typestore import get_typestore

Storage = Literal["mcap", "sqlite3"]
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
#: rosbag2 metadata version written (jazzy and kilted write 9).
METADATA_VERSION: Literal[9] = 9
#: custom_data key prefix used by daris_ros tools.
CUSTOM_PREFIX = "daris_ros."


class BagMessage(Protocol):
    """Anything with a topic, a type, a log time and CDR bytes (e.g. ``SynthMessage``)."""

    @property
    def topic(self) -> str: ...
    @property
    def msgtype(self) -> str: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def data(self) -> bytes: ...


def _make_writer_class() -> type[Writer]:
    """rosbags' Writer, with mcap channels that also carry ``topic_type_hash`` in their metadata, as
    rosbag2's own mcap plugin writes them (``ros2 bag play`` reads topic types and hashes from the
    storage, not from metadata.yaml). Falls back to the stock Writer if rosbags' internals differ."""
    try:
        from io import BytesIO

        from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string
    except ImportError:  # pragma: no cover - another rosbags version
        return Writer

    class McapWriterWithHash(McapWriter):
        def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
            metadata = BytesIO()
            write_string(metadata, "offered_qos_profiles")
            write_string(metadata, offered_qos_profiles)
            write_string(metadata, "topic_type_hash")
            write_string(metadata, connection.digest)
            ext = connection.ext
            fmt = getattr(ext, "serialization_format", "cdr")
            self.channels.append(
                Channel(connection.id, connection.msgtype, connection.topic, fmt, metadata.getvalue())
            )
            self.channel_stats[connection.id] = 0
            write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    class DarisWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: McapWriterWithHash}

    return DarisWriter


_Writer = _make_writer_class()


def storage_plugin(storage: str) -> StoragePlugin:
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; expected one of {STORAGES}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


@dataclass
class BagSummary:
    """What was written."""

    path: Path
    storage: str
    counts: dict[str, int] = field(default_factory=dict)  # topic -> messages
    types: dict[str, str] = field(default_factory=dict)  # topic -> msgtype
    start_ns: int | None = None
    end_ns: int | None = None

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


class BagWriter:
    """A rosbag2 writer keyed by topic name. Use as a context manager or call ``open``/``close``.

    Topics are added on first use (``write`` with a ``msgtype``) or explicitly with ``add_topic``.
    ``write`` takes CDR bytes as produced by rclpy or rosbags.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        storage: str = "mcap",
        store: Typestore | None = None,
        default_qos: Sequence[Qos] = (SENSOR_DATA_QOS,),
        custom_data: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.storage = storage
        self.store = store or get_typestore()
        self.default_qos = tuple(default_qos)
        self._writer = _Writer(self.path, version=METADATA_VERSION, storage_plugin=storage_plugin(storage))
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, value)
        self._connections: dict[str, Connection] = {}
        self.summary = BagSummary(self.path, storage)
        self._open = False

    def open(self) -> BagWriter:
        self._writer.open()
        self._open = True
        return self

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a string in ``custom_data`` of the metadata (before ``close``)."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] | None = None) -> None:
        """Register a topic. ``qos``: the offered profiles (default: the writer's ``default_qos``)."""
        if topic in self._connections:
            known = self._connections[topic].msgtype
            if known != msgtype:
                raise ValueError(f"topic {topic} already has type {known}, not {msgtype}")
            return
        if msgtype not in self.store.fielddefs:
            raise KeyError(f"message type {msgtype} is not in the type store")
        self._connections[topic] = self._writer.add_connection(
            topic,
            msgtype,
            typestore=self.store,
            serialization_format="cdr",
            offered_qos_profiles=list(self.default_qos if qos is None else qos),
        )
        self.summary.counts.setdefault(topic, 0)
        self.summary.types[topic] = msgtype

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(
        self, topic: str, timestamp_ns: int, data: bytes | memoryview, msgtype: str | None = None
    ) -> None:
        if topic not in self._connections:
            if msgtype is None:
                raise KeyError(f"topic {topic} not added and no msgtype given")
            self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic], int(timestamp_ns), data)
        s = self.summary
        s.counts[topic] += 1
        s.start_ns = timestamp_ns if s.start_ns is None else min(s.start_ns, timestamp_ns)
        s.end_ns = timestamp_ns if s.end_ns is None else max(s.end_ns, timestamp_ns)

    def close(self) -> BagSummary:
        """Finish the storage file and write ``metadata.yaml``."""
        if self._open:
            self._writer.close()
            self._open = False
        return self.summary

    def abort(self) -> None:
        if self._open:
            self._writer.abort()
            self._open = False

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bag(
    path: Path | str,
    messages: Iterable[BagMessage],
    *,
    storage: str = "mcap",
    store: Typestore | None = None,
    qos: Mapping[str, Sequence[Qos]] | None = None,
    topics: Mapping[str, str] | None = None,
    custom_data: Mapping[str, str] | None = None,
) -> BagSummary:
    """Write ``messages`` (in any order; rosbag2 readers sort by log time) to a new bag at ``path``.

    ``qos``: offered profiles per topic (default sensor-data for ``sensor_msgs`` images, reliable
    otherwise). ``topics``: topic -> msgtype to register up front (so topics with no messages appear).
    """
    qos = dict(qos or {})

    def _qos_for(topic: str, msgtype: str) -> list[Qos]:
        if topic in qos:
            return list(qos[topic])
        return [SENSOR_DATA_QOS if msgtype.startswith("sensor_msgs/") else RELIABLE_QOS]

    with BagWriter(path, storage=storage, store=store, custom_data=custom_data) as writer:
        for topic, msgtype in (topics or {}).items():
            writer.add_topic(topic, msgtype, _qos_for(topic, msgtype))
        for msg in messages:
            if not writer.has_topic(msg.topic):
                writer.add_topic(msg.topic, msg.msgtype, _qos_for(msg.topic, msg.msgtype))
            writer.write(msg.topic, msg.timestamp_ns, msg.data)
    return writer.summary


def write_synthetic_bag(
    path: Path | str,
    config: SynthConfig,
    *,
    storage: str = "mcap",
    qos: Sequence[Qos] = (SENSOR_DATA_QOS,),
    store: Typestore | None = None,
) -> BagSummary:
    """Synthesise ``config`` into a new bag. The config is kept in ``custom_data`` as JSON under
    ``daris_ros.synth`` so a report can tell what the bag holds."""
    store = store or get_typestore()
    custom = {
        f"{CUSTOM_PREFIX}generator": "daris_ros.bags.synth",
        f"{CUSTOM_PREFIX}synth": json.dumps(config.to_dict(), sort_keys=True),
    }
    topics = {topic: config.msgtype for topic in config.topics()}
    return write_bag(
        path,
        generate(config, store),
        storage=storage,
        store=store,
        qos={topic: list(qos) for topic in topics},
        topics=topics,
        custom_data=custom,
    )
