"""Replay a rosbag2 bag into a running ROS graph: raw CDR bytes, recorded timing, optional /clock.

``BagPlayer`` reads the bag with rosbags and publishes each stored message unchanged
(``publisher.publish(bytes)``) on its topic, from a caller-supplied rclpy node, so it runs inside
another program (tests, the demo) as well as from the ``daris-play`` CLI.

Timing modes
------------
*Wall clock* (default): message ``m`` of bag log time ``t`` is published at
``wall_start + (t - t0) / rate``, where ``t0`` is the bag start plus ``start_offset``. With ``clock``
the player also publishes ``rosgraph_msgs/Clock`` on ``/clock`` at ``clock_hz`` (wall rate) with the
bag time ``t0 + elapsed * rate``, and once more just before every message with that message's log time,
so a node with ``use_sim_time`` sees the recorded timeline, sped up or slowed down by ``rate``.

*Fast* (``fast=True``, as fast as possible, sim time): no sleeping. Before each message the player
advances /clock in steps of ``1 / clock_hz`` bag seconds up to the message's log time, then publishes
the message. The publishers are reliable (unless ``reliable=False``) and after each message the
player waits until every reliable subscriber has acknowledged it (``wait_for_all_acked``), which is
the back-pressure that keeps it from running ahead of its subscribers; ``fast_min_period`` adds a
fixed wall pause per message for best-effort subscribers, which give no acknowledgements.

Determinism: in both modes the node receives the same messages, with the same bytes (hence the same
``header.stamp``), in the same order, and - with ``clock`` - a /clock that is monotonic and never
ahead of the next message. Two runs of two configurations therefore see identical input and sim-time
stamps. What is *not* deterministic: how much wall time the node's own work takes relative to the
replay (GPU execution times are real), so in fast mode a node whose decisions depend on wall-clock
execution time versus sim-time deadlines can differ run to run; a reliable subscriber with a small
keep-last depth can still lose messages it has acknowledged but not yet taken; rclpy's TimeSource
subscribes to /clock best effort with depth 1, so intermediate ticks may be coalesced (the clock
never goes backwards). Compare configurations on counts and sim-time quantities, not wall times.

Loops: each pass is shifted forward by the pass length (``duration`` if given, else the played span
plus one frame period), /clock keeps increasing, and with ``restamp_loops`` the ``header.stamp`` of
messages whose first field is a Header is shifted by the same amount (8 bytes patched in the CDR), so
stamps stay consistent with /clock.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from .qos import effective_offer, to_rclpy
from .rostypes import import_message_class, shift_header_stamp, starts_with_header
from .typestore import get_typestore

CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"


@dataclass
class PlayOptions:
    """How to play a bag (see the module docstring)."""

    rate: float = 1.0
    loop: bool = False
    #: number of passes when looping (None: until stopped)
    max_loops: int | None = None
    #: seconds after the bag start where playback begins
    start_offset: float = 0.0
    #: seconds of bag time to play per pass (None: to the end)
    duration: float | None = None
    #: output topic names {bag topic: published topic}
    remap: Mapping[str, str] = field(default_factory=dict)
    #: play only these bag topics (None: all)
    topics: Sequence[str] | None = None
    clock: bool = False
    clock_hz: float = 100.0
    fast: bool = False
    #: force publisher reliability (None: as recorded; reliable in fast mode)
    reliable: bool | None = None
    #: publisher keep-last depth (None: recorded depth, at least 10; reliable: at least qos.RELIABLE_REPLAY_DEPTH)
    depth: int | None = None
    #: wall seconds to wait before the first message (after waiting for subscribers)
    delay: float = 0.0
    #: wait until every topic has this many subscribers before playing (0: do not wait)
    wait_for_subscribers: int = 0
    #: also wait until /clock has this many subscribers (nodes with use_sim_time subscribe to it)
    wait_for_clock_subscribers: int = 0
    wait_timeout: float = 10.0
    #: fast mode: longest wait for acknowledgements of one message (seconds)
    fast_ack_timeout: float = 5.0
    #: fast mode: wall pause after each message (seconds)
    fast_min_period: float = 0.0
    #: shift header.stamp by the loop offset on later passes
    restamp_loops: bool = True
    #: at the end, wait up to this long for reliable subscribers to acknowledge everything (seconds)
    flush_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.clock_hz <= 0:
            raise ValueError(f"clock_hz must be > 0, got {self.clock_hz}")
        if self.start_offset < 0:
            raise ValueError(f"start_offset must be >= 0, got {self.start_offset}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be > 0, got {self.duration}")


@dataclass
class PlayStats:
    """What a ``play`` did."""

    published: dict[str, int] = field(default_factory=dict)  # output topic -> messages
    clock_messages: int = 0
    passes: int = 0  # passes started
    first_clock_ns: int | None = None
    last_clock_ns: int | None = None
    wall_time: float = 0.0  # whole call, including waiting for subscribers and the delay
    play_time: float = 0.0  # from the start of playback (after waiting) to the end
    # wall mode: play_time == schedule_time + overrun + flush_time
    schedule_time: float = 0.0  # when the last message was due, from the start (bag time / rate) (s)
    overrun: float = 0.0  # from the last message's due time to the end of playing, before the flush (s)
    max_lateness: float = 0.0  # wall mode: worst delay behind schedule (s)
    median_lateness: float = 0.0  # wall mode: median delay behind schedule over the messages (s)
    flush_time: float = 0.0  # waiting at the end for reliable subscribers to acknowledge (s)
    ack_timeouts: int = 0  # fast mode: messages not acknowledged within fast_ack_timeout
    stopped: bool = False  # ended by stop() / shutdown rather than by running out of messages
    wait_timed_out: bool = False  # played although not every subscriber showed up in time

    @property
    def message_count(self) -> int:
        return sum(self.published.values())


@dataclass
class _Topic:
    out: str
    msgtype: str
    publisher: Publisher[Any]
    restamp: bool


def clock_qos() -> QoSProfile:
    """Reliable keep-last /clock offer (compatible with rclpy's best-effort TimeSource subscription)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


class BagPlayer:
    """Publishes a bag's messages from ``node``. Create, optionally ``wait_for_subscribers``, then
    ``play()`` (blocking) or ``start()``/``stop()``/``join()`` (background thread); ``close()`` at the
    end destroys the publishers."""

    # set when playback starts (play): its monotonic start, and the next /clock tick in monotonic and in bag time
    _wall_start: float
    _last_due: float | None  # wall mode: when the last message played was due (monotonic)
    _next_tick: float
    _next_tick_ns: int

    def __init__(
        self,
        node: Node,
        bag: Path | str,
        options: PlayOptions | None = None,
        *,
        store: Typestore | None = None,
    ) -> None:
        self.node = node
        self.path = Path(bag)
        self.options = options or PlayOptions()
        self.store = store or get_typestore()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: PlayStats | None = None
        self._error: BaseException | None = None
        self.stats = PlayStats()

        self._topics: dict[str, _Topic] = {}  # bag topic -> output
        self._clock_pub: Publisher[Any] | None = None
        # the bag is only inspected here; play() opens it again in the playing thread (sqlite3
        # connections cannot be shared between threads)
        try:
            with Reader(self.path) as reader:
                self._setup(reader)
        except BaseException:
            self._destroy_publishers()
            raise

    # -- setup ------------------------------------------------------------------------------------
    def _setup(self, reader: Reader) -> None:
        opts = self.options
        wanted = set(opts.topics) if opts.topics is not None else None
        if wanted is not None:
            missing = wanted - {c.topic for c in reader.connections}
            if missing:
                raise KeyError(f"topics not in bag {self.path}: {sorted(missing)}")
        by_topic: dict[str, list[Connection]] = {}
        for conn in reader.connections:
            if wanted is None or conn.topic in wanted:
                by_topic.setdefault(conn.topic, []).append(conn)
        reliable = opts.reliable
        if reliable is None and opts.fast:
            reliable = True
        for topic, conns in by_topic.items():
            msgtype = conns[0].msgtype
            if any(c.msgtype != msgtype for c in conns):
                raise ValueError(f"topic {topic} has several types in {self.path}")
            out = opts.remap.get(topic, topic)
            profiles = [q for c in conns for q in getattr(c.ext, "offered_qos_profiles", [])]
            qos = to_rclpy(effective_offer(profiles), depth=opts.depth, reliable=reliable)
            publisher = self.node.create_publisher(import_message_class(msgtype), out, qos)
            self._topics[topic] = _Topic(out, msgtype, publisher, starts_with_header(msgtype, self.store))
        if opts.clock:
            self._clock_cls = import_message_class(CLOCK_TYPE)
            self._time_cls = import_message_class("builtin_interfaces/msg/Time")
            self._clock_pub = self.node.create_publisher(self._clock_cls, CLOCK_TOPIC, clock_qos())
        self._t0 = reader.start_time + int(round(opts.start_offset * 1e9))
        self._t1 = None if opts.duration is None else self._t0 + int(round(opts.duration * 1e9))

    # -- introspection ----------------------------------------------------------------------------
    @property
    def topics(self) -> dict[str, str]:
        """Published topic -> message type."""
        return {t.out: t.msgtype for t in self._topics.values()}

    @property
    def publishers(self) -> dict[str, Publisher[Any]]:
        """Published topic -> rclpy publisher."""
        return {t.out: t.publisher for t in self._topics.values()}

    @property
    def start_time_ns(self) -> int:
        """Bag time where playback starts (bag start + start_offset)."""
        return self._t0

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0, clock_count: int = 0) -> bool:
        """Block until every published topic has at least ``count`` matched subscriptions and /clock
        (when published) at least ``clock_count``, or ``timeout`` seconds pass. True if all matched."""
        deadline = time.monotonic() + timeout
        wanted = [(t.publisher, count) for t in self._topics.values()]
        if self._clock_pub is not None and clock_count > 0:
            wanted.append((self._clock_pub, clock_count))
        while not self._stop.is_set():
            if all(p.get_subscription_count() >= n for p, n in wanted):
                return True
            if time.monotonic() >= deadline:
                return False
            self._stop.wait(0.02)
        return False

    # -- clock ------------------------------------------------------------------------------------
    def _publish_clock(self, t_ns: int) -> None:
        if self._clock_pub is None:
            return
        last = self.stats.last_clock_ns
        if last is not None and t_ns <= last:
            return
        msg = self._clock_cls()
        msg.clock = self._time_cls(sec=t_ns // 10**9, nanosec=t_ns % 10**9)
        self._clock_pub.publish(msg)
        self.stats.clock_messages += 1
        if self.stats.first_clock_ns is None:
            self.stats.first_clock_ns = t_ns
        self.stats.last_clock_ns = t_ns

    def _sim_now(self) -> int:
        return self._t0 + int((time.monotonic() - self._wall_start) * self.options.rate * 1e9)

    def _sleep_until(self, due: float) -> bool:
        """Wall mode: wait until ``due`` (monotonic), ticking /clock. False if stopped."""
        period = 1.0 / self.options.clock_hz
        while True:
            if self._stop.is_set():
                return False
            now = time.monotonic()
            if self._clock_pub is not None and now >= self._next_tick:
                self._publish_clock(self._sim_now())
                self._next_tick = max(self._next_tick + period, now)
                continue
            if now >= due:
                return True
            until = min(due, self._next_tick) if self._clock_pub is not None else due
            self._stop.wait(max(0.0, until - now))

    def _advance_clock(self, t_ns: int) -> None:
        """Fast mode: tick /clock in clock_hz steps of bag time up to ``t_ns``."""
        if self._clock_pub is None:
            return
        step = int(round(1e9 / self.options.clock_hz))
        if (t_ns - self._next_tick_ns) // step > 100_000:  # a long gap: do not tick through it
            self._next_tick_ns = t_ns - t_ns % step
        ticks = 0
        while self._next_tick_ns < t_ns and not self._stop.is_set():
            self._publish_clock(self._next_tick_ns)
            self._next_tick_ns += step
            ticks += 1
            if ticks % 50 == 0:  # stay within the clock publisher's history depth
                self._wait_clock_acked()
        self._publish_clock(t_ns)
        self._wait_clock_acked()

    def _wait_clock_acked(self) -> None:
        """Fast mode: lockstep with reliable /clock subscribers (best-effort ones do not ack)."""
        if self._clock_pub is not None and not self._clock_pub.wait_for_all_acked(
            Duration(seconds=self.options.fast_ack_timeout)
        ):
            self.stats.ack_timeouts += 1

    # -- playback ---------------------------------------------------------------------------------
    def play(self) -> PlayStats:
        """Play (blocking) and return the statistics. Stops early on ``stop()`` or shutdown."""
        opts = self.options
        self.stats = stats = PlayStats(published={t.out: 0 for t in self._topics.values()})
        started = time.monotonic()
        if opts.wait_for_subscribers > 0 or opts.wait_for_clock_subscribers > 0:
            matched = self.wait_for_subscribers(
                opts.wait_for_subscribers, opts.wait_timeout, opts.wait_for_clock_subscribers
            )
            stats.wait_timed_out = not matched and not self._stop.is_set()
        if opts.delay > 0 and self._stop.wait(opts.delay):
            stats.stopped = True
            return stats
        offset = 0
        with Reader(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in self._topics]
            self._wall_start = time.monotonic()
            self._last_due = None
            self._next_tick = self._wall_start
            self._next_tick_ns = self._t0
            self._publish_clock(self._t0)
            while True:
                stats.passes += 1
                completed, last_ts, gaps = self._play_pass(reader, connections, offset)
                if not completed:
                    stats.stopped = True
                    break
                if not opts.loop or (opts.max_loops is not None and stats.passes >= opts.max_loops):
                    break
                if last_ts is None:  # nothing in the window: looping would spin
                    break
                if self._t1 is not None:
                    span = self._t1 - self._t0
                else:
                    period = int(statistics.median(gaps)) if gaps else 0
                    span = max(1, last_ts - self._t0 + period)
                offset += span
        flushed = time.monotonic()
        self.flush(opts.flush_timeout)
        end = time.monotonic()
        stats.flush_time = end - flushed
        stats.wall_time = end - started
        stats.play_time = end - self._wall_start
        if self._last_due is not None:
            stats.schedule_time = self._last_due - self._wall_start
            stats.overrun = flushed - self._last_due
        return stats

    def _play_pass(
        self, reader: Reader, connections: list[Connection], offset: int
    ) -> tuple[bool, int | None, list[int]]:
        """One pass over the window; returns (completed, last log time, per-topic frame gaps)."""
        opts = self.options
        stats = self.stats
        previous: dict[str, int] = {}
        gaps: list[int] = []
        last_ts: int | None = None
        rclpy_ok = self.node.context.ok
        lateness: list[float] = []
        for conn, ts, data in reader.messages(connections, start=self._t0, stop=self._t1):
            if stats.passes == 1 and last_ts is None and not opts.fast:
                # the timeline starts when the first message is in hand: opening a cold bag (page cache,
                # decompression) is not playback delay
                self._wall_start = self._next_tick = time.monotonic()
            if self._stop.is_set() or not rclpy_ok():
                return False, last_ts, gaps
            topic = self._topics[conn.topic]
            if conn.topic in previous:
                gaps.append(ts - previous[conn.topic])
            previous[conn.topic] = ts
            last_ts = ts
            t_sim = ts + offset
            if opts.fast:
                self._advance_clock(t_sim)
            else:
                due = self._wall_start + (t_sim - self._t0) / opts.rate / 1e9
                self._last_due = due
                if not self._sleep_until(due):
                    return False, last_ts, gaps
                lateness.append(time.monotonic() - due)
                stats.max_lateness = max(stats.max_lateness, lateness[-1])
                self._publish_clock(t_sim)
            payload: bytes | memoryview = data
            if offset and opts.restamp_loops and topic.restamp:
                payload = shift_header_stamp(data, offset)
            topic.publisher.publish(bytes(payload))
            stats.published[topic.out] += 1
            if opts.fast:
                if not topic.publisher.wait_for_all_acked(Duration(seconds=opts.fast_ack_timeout)):
                    stats.ack_timeouts += 1
                if opts.fast_min_period > 0 and self._stop.wait(opts.fast_min_period):
                    return False, last_ts, gaps
        if lateness:
            stats.median_lateness = statistics.median(lateness)
        return True, last_ts, gaps

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until reliable subscribers have acknowledged everything published (so a message lost
        on the wire is resent before the publishers go away). True if all were acknowledged."""
        deadline = time.monotonic() + timeout
        pubs = [t.publisher for t in self._topics.values()]
        if self._clock_pub is not None:
            pubs.append(self._clock_pub)
        ok = True
        for pub in pubs:
            left = max(0.0, deadline - time.monotonic())
            ok = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        return ok

    # -- background use ---------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Play in a background thread; ``join()`` returns the statistics."""
        if self._thread is not None:
            raise RuntimeError("player already started")

        def _run() -> None:
            try:
                self._result = self.play()
            except BaseException as exc:  # handed to join()
                self._error = exc

        self._thread = threading.Thread(target=_run, name="daris_bag_player", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask a running ``play`` to return (thread-safe)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> PlayStats:
        """Wait for the background ``play``; re-raises its exception."""
        if self._thread is None:
            raise RuntimeError("player not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("player still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def close(self) -> None:
        """Stop, destroy the publishers and close the bag."""
        self.stop()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5.0)
        self._destroy_publishers()

    def _destroy_publishers(self) -> None:
        for topic in self._topics.values():
            with contextlib.suppress(Exception):  # e.g. the context is already shut down
                self.node.destroy_publisher(topic.publisher)
        self._topics.clear()
        if self._clock_pub is not None:
            with contextlib.suppress(Exception):
                self.node.destroy_publisher(self._clock_pub)
            self._clock_pub = None

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_remap(items: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}`` (the ``ros2 bag play --remap`` syntax)."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise ValueError(f"bad remap {item!r}; expected /old:=/new")
        out[old] = new
    return out


#: environment variables Fast DDS reads its XML profiles from (3.x, 2.x)
FASTDDS_PROFILE_VARS: tuple[str, ...] = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def use_fast_acks(directory: Path | str, heartbeat_ms: float = 2.0) -> Path | None:
    """Make fast mode fast when the subscribers are in other processes (Fast DDS).

    A reliable Fast DDS writer sends a HEARTBEAT every 3 s by default, and the acknowledgement that
    ``wait_for_all_acked`` waits for answers a heartbeat: measured here, each acknowledgement from
    another process took 3.0 s (6 ms with this profile), so a fast replay ran at one message per 3 s.
    This writes a Fast DDS XML profile with a ``heartbeat_ms`` heartbeat period for the data writers of
    this process into ``directory`` and sets ``FASTDDS_DEFAULT_PROFILES_FILE`` to it (the one variable
    name of ``FASTDDS_PROFILE_VARS`` that is set). Call it before this process creates its first
    participant (the first ``rclpy.init``); Fast DDS reads the file once per process. Returns the file,
    or None (and changes nothing) when a profiles file is already configured or another RMW is selected.
    """
    import os

    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not rmw.startswith("rmw_fastrtps") or any(os.environ.get(v) for v in FASTDDS_PROFILE_VARS):
        return None
    nanosec = int(heartbeat_ms * 1e6)
    path = Path(directory) / "fastdds_fast_acks.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<dds xmlns="http://www.eprosima.com">\n  <profiles>\n'
        '    <data_writer profile_name="daris_fast_acks" is_default_profile="true">\n'
        f"      <times><heartbeat_period><sec>0</sec><nanosec>{nanosec}</nanosec></heartbeat_period></times>\n"
        "    </data_writer>\n  </profiles>\n</dds>\n",
        encoding="utf-8",
    )
    os.environ[FASTDDS_PROFILE_VARS[0]] = str(path)
    return path
