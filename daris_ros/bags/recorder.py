"""Record topics of a running ROS graph into a rosbag2 bag (mcap by default).

``BagRecorder`` subscribes with ``raw=True`` (the callback gets the CDR bytes, nothing is
deserialised) and writes each message with its receive time as the bag's log time. It needs the
node to be spun (by the caller's executor, or by the ``daris-record`` CLI).

Output bag, designed so that a report can recompute everything from it:

- every recorded topic keeps its real type (``daris_ros/msg/InferenceResult``,
  ``daris_ros/msg/SchedulerStats``, ``diagnostic_msgs/msg/DiagnosticArray``, images, ...), whose
  definitions and hashes come from the daris_ros type store, so rosbags can deserialise them; a topic of
  a type that store lacks (``vision_msgs``, a team's own package) is recorded when the type's ``.msg`` files
  are installed under ``AMENT_PREFIX_PATH`` (:mod:`.ament_types`), else listed in ``untypable``;
- log time = the recorder node's clock at reception (ROS time: sim time when the node has
  ``use_sim_time``, which makes replays in fast mode comparable); ``timestamp="receive"`` uses the
  middleware's wall-clock receive timestamp instead;
- the offered QoS of the publishers seen at subscription time is stored per topic, as rosbag2 does;
- ``custom_data`` holds ``daris_ros.recorder`` (JSON: requested topics, start/stop times on the log
  clock, the node name) so a report knows the recording window, including topics that got nothing.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from rosbags.interfaces import Qos
from rosbags.typesys.store import Typestore

from .ament_types import UnknownTypeError, learn_type
from .qos import from_rclpy
from .rostypes import import_message_class
from .typestore import make_typestore
from .writer import CUSTOM_PREFIX, BagSummary, BagWriter

Timestamp = Literal["node", "receive"]


@dataclass
class RecordStats:
    """What a recording got."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)  # topic -> messages
    types: dict[str, str] = field(default_factory=dict)  # topic -> msgtype
    missing: list[str] = field(default_factory=list)  # requested topics never subscribed

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


def default_record_qos(offered: Sequence[Qos], depth: int = 1000) -> QoSProfile:
    """Subscription QoS adapted to the offers, like rosbag2: reliable only if every publisher offers
    reliable, transient-local only if every publisher offers it; a deep keep-last queue."""
    reliable = bool(offered) and all(q.reliability.name == "RELIABLE" for q in offered)
    transient = bool(offered) and all(q.durability.name == "TRANSIENT_LOCAL" for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


class BagRecorder:
    """Record ``topics`` from ``node`` into a new bag at ``path``.

    Args:
        node: the node that owns the subscriptions; the caller spins it.
        path: output bag directory (must not exist).
        topics: topic names (types discovered from the graph) or {topic: msgtype or None}.
        storage: ``mcap`` or ``sqlite3``.
        qos: subscription QoS for every topic (default: adapted to the publishers' offers, reliable
            when they all are, depth ``depth``).
        timestamp: ``node`` (the node's clock, sim time aware) or ``receive`` (middleware receive
            time, wall clock).
        discovery_period: how often topics whose type is still unknown are looked up again.
        accept: requested topic -> ``f(serialized bytes, rclpy MessageInfo) -> bool``; messages it
            refuses (e.g. from another node than the one under test) are not written, only counted
            (``ignored``).
    """

    def __init__(
        self,
        node: Node,
        path: Path | str,
        topics: Sequence[str] | Mapping[str, str | None],
        *,
        storage: str = "mcap",
        qos: QoSProfile | None = None,
        depth: int = 1000,
        timestamp: Timestamp = "node",
        store: Typestore | None = None,
        discovery_period: float = 0.2,
        accept: Mapping[str, Callable[[bytes, Any], bool]] | None = None,
    ) -> None:
        if timestamp not in ("node", "receive"):
            raise ValueError(f"timestamp must be 'node' or 'receive', got {timestamp!r}")
        self.node = node
        self.path = Path(path)
        self.store = store or make_typestore()  # (its own: types learnt from the ament index are added to it)
        if isinstance(topics, Mapping):
            self._requested: dict[str, str | None] = {t: ty for t, ty in topics.items()}
        else:
            self._requested = {t: None for t in topics}
        for topic, msgtype in self._requested.items():
            if msgtype is not None and msgtype not in self.store.fielddefs:
                try:
                    learn_type(self.store, msgtype)
                except (UnknownTypeError, ValueError) as exc:
                    raise KeyError(f"type {msgtype} of {topic} is not in the type store: {exc}") from exc
        self.qos = qos
        self.depth = depth
        self.timestamp = timestamp
        self.discovery_period = discovery_period
        self.accept = dict(accept or {})
        self._ignored: dict[str, int] = {}
        self._untypable: dict[str, str] = {}  # topic -> why none of its graph types can be recorded
        self._unlearnable: dict[str, str] = {}  # message type -> why learn_type failed (not looked up again)
        self._writer = BagWriter(self.path, storage=storage, store=self.store, default_qos=())
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writer_error: BaseException | None = None
        self._counts: dict[str, int] = {}
        self._summary: BagSummary | None = None
        self._subs: dict[str, Subscription[Any]] = {}
        self._timer: Timer | None = None
        self._started = False
        self._closed = False
        self._start_ns: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> BagRecorder:
        """Open the bag and subscribe to the topics.

        Without an explicit ``qos``, a topic is subscribed once a publisher of it is visible (now, or
        later through a discovery timer: the node must be spun), so that the subscription can match
        the publishers' offer (reliable when they all are), as ``ros2 bag record`` does; a topic
        without a given type also takes its type from the graph then. With ``qos`` given, topics of
        known type are subscribed at once.

        The bag is written by a thread of its own (sqlite3 connections are bound to the thread that
        opened them, and disk writes should not hold up the executor); callbacks only queue bytes.
        """
        if self._started:
            raise RuntimeError("recorder already started")
        self._thread = threading.Thread(target=self._writer_main, name="daris_bag_recorder", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._writer_error is not None:
            raise self._writer_error
        self._started = True
        self._start_ns = self._now_ns()
        self._try_subscribe()
        with self._lock:
            if len(self._subs) < len(self._requested) and not self._closed:
                # a steady clock: with use_sim_time the node's clock stands still until /clock runs
                self._timer = self.node.create_timer(self.discovery_period, self._try_subscribe,
                                                     clock=Clock(clock_type=ClockType.STEADY_TIME))
        return self

    def stop(self) -> RecordStats:
        """Unsubscribe, write the metadata and close the bag. Safe to call twice."""
        with self._lock:
            if self._closed:
                return self._stats()
            self._closed = True  # from here on, callbacks drop what they get
            timer, self._timer = self._timer, None
        # after Ctrl-C the context may already be shut down: failures to destroy do not matter
        if timer is not None:
            with contextlib.suppress(Exception):
                self.node.destroy_timer(timer)
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                self.node.destroy_subscription(sub)
        if self._thread is not None:
            info = {
                "node": self.node.get_fully_qualified_name(),
                "topics": sorted(self._requested),
                "timestamp": self.timestamp,
                "start_ns": self._start_ns,
                "stop_ns": self._safe_now_ns(),
            }
            self._queue.put(("close", json.dumps(info, sort_keys=True)))
            self._thread.join()
        if self._writer_error is not None:
            raise self._writer_error
        return self._stats()

    def __enter__(self) -> BagRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_custom_data(self, key: str, value: str) -> None:
        """Store ``value`` under ``custom_data[key]`` of the bag's metadata (any time before ``stop``)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("recorder already stopped")
            self._queue.put(("custom", key, value))

    # -- the writer thread ------------------------------------------------------------------------
    def _writer_main(self) -> None:
        try:
            self._writer.open()
        except BaseException as exc:
            self._writer_error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            item = self._queue.get()
            try:
                if item[0] == "msg":
                    _, topic, timestamp_ns, data = item
                    self._writer.write(topic, timestamp_ns, data)
                    with self._lock:
                        self._counts[topic] = self._counts.get(topic, 0) + 1
                elif item[0] == "topic":
                    _, topic, msgtype, offered = item
                    self._writer.add_topic(topic, msgtype, offered)
                    with self._lock:
                        self._counts.setdefault(topic, 0)
                elif item[0] == "custom":
                    self._writer.set_custom_data(item[1], item[2])
                else:  # close
                    self._writer.set_custom_data(f"{CUSTOM_PREFIX}recorder", item[1])
                    self._summary = self._writer.close()
                    return
            except Exception as exc:  # keep recording; report the first failure from stop()
                if self._writer_error is None:
                    self._writer_error = exc
                if item[0] == "close":
                    with contextlib.suppress(Exception):
                        self._writer.abort()
                    return

    # -- state ------------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Messages written so far, per topic."""
        with self._lock:
            return dict(self._counts)

    @property
    def ignored(self) -> dict[str, int]:
        """Messages refused by ``accept`` so far, per topic."""
        with self._lock:
            return dict(self._ignored)

    @property
    def subscribed(self) -> list[str]:
        with self._lock:
            return sorted(self._subs)

    def publisher_counts(self) -> dict[str, int]:
        """Requested topic -> publishers matched by its subscription (0 for topics not subscribed yet).

        A count of at least 1 means messages published from now on reach this recorder (a graph
        query only says that the publisher exists)."""
        with self._lock:
            subs = dict(self._subs)
        out = {topic: 0 for topic in self._requested}
        for topic, sub in subs.items():
            with contextlib.suppress(Exception):  # the subscription may be destroyed concurrently
                out[topic] = int(sub.get_publisher_count())
        return out

    def _stats(self) -> RecordStats:
        summary = self._summary or self._writer.summary
        return RecordStats(
            self.path,
            dict(summary.counts),
            dict(summary.types),
            sorted(set(self._requested) - set(self._subs)),
        )

    def _now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def _safe_now_ns(self) -> int | None:
        try:
            return self._now_ns()
        except Exception:
            return None

    # -- subscriptions ----------------------------------------------------------------------------
    def _try_subscribe(self) -> None:
        with self._lock:
            if self._closed:
                return
            graph: dict[str, list[str]] | None = None
            for topic, msgtype in self._requested.items():
                if topic in self._subs:
                    continue
                resolved = self.node.resolve_topic_name(topic)
                if msgtype is None:
                    if graph is None:
                        graph = dict(self.node.get_topic_names_and_types())
                    msgtype = self._recordable_type(resolved, graph.get(resolved, []))
                    if msgtype is None:
                        continue
                publishers = self.node.get_publishers_info_by_topic(resolved)
                if not publishers and self.qos is None:
                    continue  # wait for a publisher, to adapt the QoS to its offer
                self._subscribe(topic, resolved, msgtype, publishers)
            if len(self._subs) == len(self._requested) and self._timer is not None:
                self._timer.cancel()

    def _recordable_type(self, topic: str, graph_types: list[str]) -> str | None:
        """The first of a topic's types on the graph that the store knows, or can learn from the ``.msg`` files
        of the installed packages (:func:`~.ament_types.learn_type`); None when there is none yet (why is kept in
        :attr:`untypable`)."""
        known = [t for t in graph_types if t in self.store.fielddefs]
        if known:
            return known[0]
        reasons = []
        for msgtype in graph_types:
            if msgtype in self._unlearnable:  # (discovery ticks every 0.2 s: the files are read once)
                reasons.append(self._unlearnable[msgtype])
                continue
            try:
                learn_type(self.store, msgtype)
            except (UnknownTypeError, ValueError) as exc:
                self._unlearnable[msgtype] = str(exc)
                reasons.append(str(exc))
                continue
            self._untypable.pop(topic, None)
            return msgtype
        if reasons:
            self._untypable[topic] = "; ".join(reasons)
        return None

    @property
    def untypable(self) -> dict[str, str]:
        """Topic -> why it is not recorded although it has publishers: none of its types is known to the store
        or defined under ``AMENT_PREFIX_PATH``."""
        with self._lock:
            return dict(self._untypable)

    def _subscribe(self, requested: str, topic: str, msgtype: str, publishers: list[Any]) -> None:
        """Subscribe to ``topic`` (the resolved name of ``requested``)."""
        offered = [from_rclpy(info.qos_profile) for info in publishers]
        qos = self.qos or default_record_qos(offered, self.depth)
        cls = import_message_class(msgtype)
        self._queue.put(("topic", topic, msgtype, offered))
        accept = self.accept.get(requested)
        receive_time = self.timestamp == "receive"

        def callback(data: bytes, info: Any) -> None:
            if accept is not None and not accept(data, info):
                with self._lock:
                    self._ignored[topic] = self._ignored.get(topic, 0) + 1
                return
            self._write(topic, int(info["received_timestamp"]) if receive_time else self._now_ns(), data)

        self._subs[requested] = self.node.create_subscription(cls, topic, callback, qos, raw=True)

    def _write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(("msg", topic, timestamp_ns, data))
