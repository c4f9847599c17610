"""daris-replay: replay a camera bag into the scheduler node, record its outputs and write a report.

Examples::

    daris-replay bags/cams4 --config config/demo.yaml --out runs/demo \\
        --remap /cameras/cam0/image_raw:=/demo/front_left/image_raw /cameras/cam1/image_raw:=/demo/left/image_raw
    daris-replay bags/cams4 --config my.yaml --out runs/fast --fast      # as fast as possible, sim time
    daris-replay bags/cams4 --config my.yaml --out runs/half --rate 0.5 --clock

Steps: start ``lib/daris_ros/scheduler_node`` from the install space with the parameter file (log in
``DIR/scheduler.log``; ``-p use_sim_time:=true`` with ``--clock``/``--fast``) -> wait until it is ready
(its camera subscriptions and result publishers are matched and, on the wall clock, its first
/daris/stats message arrived) -> record the result topics, the detections / mask / labels topics the node
publishes, the stats topic, /diagnostics and (when the bag is small, ``--record-inputs``) the camera topics
into ``DIR/output`` -> play the bag (reliable
publishers by default, so no frame is lost) -> wait until every published frame was received and every
job has finished (read from the node's stats) -> stop the node and the recorder -> write
``DIR/replay.json`` and the report (``DIR/report.{md,html,json}`` and PNG figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daris_ros.report.extract import DIAGNOSTICS_TYPE, RESULT_TYPE, STATS_TYPE
from daris_ros.settings import ConfigError, SchedulerSettings, TaskSettings, load_parameter_file, settings_from_mapping

OUTPUT_BAG = "output"
REPLAY_KEY = "daris_ros.replay"
DIAGNOSTICS_TOPIC = "/diagnostics"
#: ``--record-inputs auto`` records the camera topics when the input bag is at most this large
AUTO_RECORD_INPUT_BYTES = 64 * 1024 * 1024

Log = Callable[[str], None]


class ReplayError(RuntimeError):
    """The replay could not run (bad input, the node failed to start, ...)."""


@dataclass(slots=True)
class ReplayOptions:
    bag: Path
    config: Path
    out: Path
    rate: float = 1.0
    fast: bool = False
    use_sim_time: bool = False
    clock_hz: float = 100.0
    remap: dict[str, str] = field(default_factory=dict)
    duration: float | None = None
    start_offset: float = 0.0
    reliable: bool = True
    record_inputs: str = "auto"  # auto | yes | no
    namespace: str = ""
    ready_timeout: float = 180.0
    discovery_wait: float = 1.0  # s to discover the publishers on the node's topics before starting it
    drain_timeout: float | None = None  # None: from the task deadlines and the stats period
    settle: float = 0.5
    storage: str = "mcap"
    report: bool = True
    zoom_s: float = 1.0
    overwrite: bool = False
    fast_min_period: float = 0.0

    @property
    def sim_time(self) -> bool:
        return self.use_sim_time or self.fast

    @property
    def output_bag(self) -> Path:
        return self.out / OUTPUT_BAG


@dataclass(slots=True)
class ReplayResult:
    output_bag: Path
    info: dict[str, Any]
    drained: bool
    interrupted: bool
    scheduler_rc: int | None
    report_ok: bool | None = None


# -- topics ---------------------------------------------------------------------------------------------
def resolve(topic: str, namespace: str) -> str:
    """Absolute name of ``topic`` for a node in ``namespace`` (no ``~`` or substitutions)."""
    if topic.startswith("/"):
        return topic
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{topic}"


@dataclass(slots=True)
class TopicPlan:
    """Which bag topics feed which task, and what is recorded."""

    task_topics: dict[str, str]  # task -> resolved camera topic
    result_topics: dict[str, str]  # task -> resolved result topic
    stats_topic: str
    play: list[str]  # bag topics to play
    published: dict[str, str]  # bag topic -> published topic
    types: dict[str, str]  # published topic -> msgtype
    node: str = "/daris_scheduler"  # fully qualified name of the node under test
    #: task -> its resolved detections and mask topics (the node publishes the one of its model's kind)
    payload_topics: dict[str, list[str]] = field(default_factory=dict)
    labels_topics: dict[str, str] = field(default_factory=dict)  # task -> resolved labels topic (latched)

    def perception_topics(self) -> list[str]:
        """The detections, mask and labels topics: recorded where the node publishes them (their types come from
        the graph: a detections topic is daris_ros's or vision_msgs' Detection2DArray)."""
        return [*(t for topics in self.payload_topics.values() for t in topics), *self.labels_topics.values()]

    def output_topics(self) -> list[str]:
        """What the node under test publishes (and only it should, on these topics)."""
        return [*self.result_topics.values(), *self.perception_topics(), self.stats_topic, DIAGNOSTICS_TOPIC]

    def record_topics(self, inputs: bool) -> dict[str, str | None]:
        topics: dict[str, str | None] = {t: RESULT_TYPE for t in self.result_topics.values()}
        topics.update(dict.fromkeys(self.perception_topics()))
        topics[self.stats_topic] = STATS_TYPE
        topics[DIAGNOSTICS_TOPIC] = DIAGNOSTICS_TYPE
        if inputs:
            topics.update(self.types)
        return topics


def plan_topics(settings: SchedulerSettings, bag_topics: dict[str, str], remap: dict[str, str],
                namespace: str) -> TopicPlan:
    """Match the bag's topics (after ``remap``) with the tasks' camera topics."""
    task_topics = {t.name: resolve(t.topic, namespace) for t in settings.tasks}
    wanted = set(task_topics.values())
    play = [b for b in sorted(bag_topics) if remap.get(b, b) in wanted]
    published = {b: remap.get(b, b) for b in play}
    return TopicPlan(
        task_topics=task_topics,
        result_topics={t.name: resolve(t.output_topic, namespace) for t in settings.tasks},
        payload_topics={t.name: [resolve(t.detections_topic, namespace), resolve(t.mask_topic, namespace)]
                        for t in settings.tasks},
        labels_topics={t.name: resolve(t.labels_topic, namespace) for t in settings.tasks},
        stats_topic=resolve("daris/stats", namespace),
        play=play,
        published=published,
        types={published[b]: bag_topics[b] for b in play},
        node=resolve(NODE_NAME, namespace),
    )


def bag_size(bag: Path) -> int:
    return sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())


def bag_topics(bag: Path) -> dict[str, str]:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


NODE_NAME = "daris_scheduler"


def parameter_node_name(config: Path, namespace: str) -> str:
    """The node name under which the node in ``namespace`` finds its section of ``config`` (for
    ``load_parameter_file``); a file whose top keys do not match that node (e.g. ``daris_scheduler:`` with
    a namespace) is refused here rather than leaving the node without tasks."""
    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    keys = set(doc) if isinstance(doc, dict) else set()
    fq = resolve(NODE_NAME, namespace)
    if keys & {fq, fq.lstrip("/")}:
        return fq.lstrip("/")
    if keys & {"/**", f"/**/{NODE_NAME}"}:
        return NODE_NAME
    raise ReplayError(f"{config}: no parameters for the node {fq}: the top key must be {fq.lstrip('/')!r}, "
                      f"'/**/{NODE_NAME}' or '/**' (found {sorted(map(str, keys))})")


# -- the node under test --------------------------------------------------------------------------------
def scheduler_ros_args(opts: ReplayOptions) -> list[str]:
    """The node's arguments after ``--ros-args --params-file CONFIG``."""
    args: list[str] = []
    if opts.sim_time:
        args += ["-p", "use_sim_time:=true"]
    if opts.namespace:
        args += ["-r", f"__ns:={resolve('', opts.namespace).rstrip('/') or '/'}"]
    return args


def start_scheduler_logged(opts: ReplayOptions) -> tuple[subprocess.Popen[bytes], Path]:
    """The scheduler node as its own process (own session), output to ``DIR/scheduler.log``."""
    from daris_ros.tools.demo import start_scheduler

    log_path = opts.out / "scheduler.log"
    with log_path.open("wb") as log_file:
        proc = start_scheduler(str(opts.config), scheduler_ros_args(opts), stdout=log_file)
    return proc, log_path


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _gid(info: Any) -> bytes | None:
    """The publisher GID of a message (rclpy MessageInfo), normalised like the graph's endpoint GIDs."""
    gid = info.get("publisher_gid") if isinstance(info, dict) else None
    data = gid.get("data") if isinstance(gid, dict) else None
    return bytes(data).rstrip(b"\0") if data else None


def another_node_named(fqn: str, how: str) -> ReplayError:
    domain = os.environ.get("ROS_DOMAIN_ID", "0")
    return ReplayError(f"another node named {fqn} runs on ROS_DOMAIN_ID={domain} ({how}): its outputs would mix "
                       "with those of the node under test; stop it, or replay with --namespace NS or another "
                       "ROS_DOMAIN_ID")


class OwnOutputs:
    """Tells the outputs of the node under test (``fqn``, e.g. ``/daris_scheduler``) from other nodes' messages
    on the same topics: ``/daris/stats`` of another scheduler in the namespace, ``/diagnostics`` of every node
    on the domain, results of a node with the same task names.

    Without the graph's node names (their discovery can lag or fail: a publisher of ``_NODE_NAME_UNKNOWN_``
    was seen here): a publisher (GID) that existed before the node under test started is another node's
    (``snapshot``, after waiting for discovery); a SchedulerStats must name the node (``node``), a
    DiagnosticArray's statuses must be the node's (``<fqn>: ...``). Stats that name the node but arrive before
    it was started, come from a publisher that existed before, report an ``uptime`` longer than the node has
    existed, or come from a second publisher, are another node's of the same name: ``namesake`` says how, and
    the replay stops."""

    def __init__(self, node: Any, fqn: str, stats_topic: str) -> None:
        self.node = node
        self.fqn = fqn
        self.stats_topic = stats_topic
        self._lock = threading.Lock()
        self.started = False  # the node under test was started: stats naming it may be its own
        self.started_at = 0.0  # (monotonic) just before it was started
        self.foreign: dict[bytes, str] = {}  # publishers that existed before it started -> their node
        self.stats_publishers: set[bytes] = set()  # publishers whose stats name the node
        self.namesake: str | None = None
        self.ignored: dict[str, dict[str, int]] = {}  # topic -> other node (or publisher) -> messages

    def snapshot(self, topics: list[str]) -> None:
        """Remember the publishers of ``topics`` that exist now: they are not the node under test's."""
        gids = {}
        for t in topics:
            for i in self.node.get_publishers_info_by_topic(t):
                gid = bytes(i.endpoint_gid).rstrip(b"\0")
                known = "UNKNOWN" not in i.node_name  # (_NODE_NAME_UNKNOWN_ when its discovery lags)
                gids[gid] = f"{i.node_namespace.rstrip('/')}/{i.node_name}" if known else f"publisher {gid.hex()}"
        with self._lock:
            self.foreign.update(gids)
            self.started = True
            self.started_at = time.monotonic()

    def _ignore(self, topic: str, who: str, count: bool = True) -> bool:
        if not count:
            return False
        with self._lock:
            per = self.ignored.setdefault(topic, {})
            per[who] = per.get(who, 0) + 1
        return False

    def accept_stats(self, msg: Any, info: Any, count: bool = True) -> bool:
        """``count``: an ignored message is counted (the recorder's filter; the monitor sees them too)."""
        if msg.node != self.fqn:
            return self._ignore(self.stats_topic, msg.node or "(unnamed)", count)
        gid = _gid(info)
        with self._lock:
            if not self.started:
                self.namesake = "its stats arrived before this replay started its node"
            elif gid is not None and gid in self.foreign:
                self.namesake = f"its {self.stats_topic} publisher existed before this replay started its node"
            elif msg.uptime > time.monotonic() - self.started_at + 1.0:
                self.namesake = (f"its stats say it has been running for {msg.uptime:.1f} s, this replay started its "
                                 f"node {time.monotonic() - self.started_at:.1f} s ago")
            elif gid is not None:
                self.stats_publishers.add(gid)
                if len(self.stats_publishers) > 1:
                    self.namesake = f"{len(self.stats_publishers)} publishers of {self.stats_topic} name it"
            return self.namesake is None

    def accept_diagnostics(self, msg: Any) -> bool:
        names = [st.name for st in msg.status]
        if names and all(n.startswith(self.fqn + ": ") for n in names):
            return True
        return self._ignore(DIAGNOSTICS_TOPIC, names[0].split(": ")[0] if names else "(empty)")

    def accept_from(self, topic: str, info: Any, count: bool = True) -> bool:
        gid = _gid(info)
        if gid is not None and gid in self.foreign:
            return self._ignore(topic, self.foreign[gid], count)
        return True

    def recorder_filter(self, topic: str) -> Callable[[bytes, Any], bool]:
        """The recorder's ``accept`` of one output topic of the node (serialized messages)."""
        from rclpy.serialization import deserialize_message

        if topic == self.stats_topic:
            from daris_ros.msg import SchedulerStats

            return lambda data, info: self.accept_stats(deserialize_message(data, SchedulerStats), info)
        if topic == DIAGNOSTICS_TOPIC:
            from diagnostic_msgs.msg import DiagnosticArray

            return lambda data, info: self.accept_diagnostics(deserialize_message(data, DiagnosticArray)) and \
                self.accept_from(topic, info)
        return lambda _data, info: self.accept_from(topic, info)

    def snapshot_ignored(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {t: dict(v) for t, v in self.ignored.items()}

    def check(self) -> None:
        if self.namesake is not None:
            raise another_node_named(self.fqn, self.namesake)


class StatsMonitor:
    """Keeps the latest SchedulerStats of the node under test (for readiness and draining): only the messages
    :class:`OwnOutputs` takes for its own."""

    def __init__(self, node: Any, topic: str, own: OwnOutputs) -> None:
        from daris_ros.msg import SchedulerStats

        self._lock = threading.Lock()
        self.count = 0
        self.last: Any = None
        self.topic = topic
        self.own = own
        self.sub = node.create_subscription(SchedulerStats, topic, self._on_stats, 10)

    def _on_stats(self, msg: Any, info: Any) -> None:
        if not self.own.accept_stats(msg, info, count=False):
            return
        with self._lock:
            self.last = msg
            self.count += 1

    def snapshot(self) -> tuple[int, Any]:
        with self._lock:
            return self.count, self.last


class ClockKeeper:
    """Keeps /clock running after the bag ended (sim time): from ``start_ns`` at ``rate`` x wall time, so
    the node's timers keep firing (its last releases, stats) while the replay drains."""

    def __init__(self, node: Any, start_ns: int, rate: float, hz: float) -> None:
        from rosgraph_msgs.msg import Clock

        from daris_ros.bags.player import CLOCK_TOPIC, clock_qos

        self._cls = Clock
        self._pub = node.create_publisher(Clock, CLOCK_TOPIC, clock_qos())
        self._node = node
        self._start_ns = start_ns
        self._rate = rate
        self._period = 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daris_replay_clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from builtin_interfaces.msg import Time

        t_wall = time.monotonic()
        while not self._stop.wait(self._period):
            ns = self._start_ns + int((time.monotonic() - t_wall) * self._rate * 1e9)
            msg = self._cls()
            msg.clock = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            try:
                self._pub.publish(msg)
            except Exception:  # the context went away
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._node.destroy_publisher(self._pub)
        except Exception:  # noqa: BLE001 - already shut down
            pass


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- waiting --------------------------------------------------------------------------------------------
def drained(stats: Any, expected: dict[str, int], recorded: dict[str, int], plan: TopicPlan) -> list[str]:
    """What is still outstanding according to one stats message (empty: everything is done)."""
    waiting = []
    rows = {t.task: t for t in stats.tasks}
    for task, n in expected.items():
        r = rows.get(task)
        if r is None:
            waiting.append(f"{task}: not in stats")
            continue
        if r.frames < n:
            waiting.append(f"{task}: received {r.frames} of {n} frames")
        if r.frames != r.released + r.superseded + r.dropped:
            waiting.append(f"{task}: a frame not released yet")
        skipped = getattr(r, "skipped", 0)  # skip_late: admitted, dropped unstarted (no result)
        if r.admitted != r.completed + skipped:
            waiting.append(f"{task}: {r.admitted - r.completed - skipped} job(s) in flight")
        if recorded.get(plan.result_topics[task], 0) < r.completed:
            waiting.append(f"{task}: {recorded.get(plan.result_topics[task], 0)} of {r.completed} results recorded")
    return waiting


#: The subscription depth docs/replay.md advises for exact counts (3.3 s of a 30 Hz camera).
ADVISED_QOS_DEPTH = 100


def loss_hint(task: TaskSettings) -> str:
    """Why ``task`` may have received fewer frames than were published, from its subscription's QoS ('' if none)."""
    if task.qos_reliability != "reliable":
        return (f"{task.name} subscribes best effort: frames may be lost (set qos_reliability: reliable and "
                f"qos_depth: {ADVISED_QOS_DEPTH})")
    if task.qos_depth < ADVISED_QOS_DEPTH:
        return (f"{task.name}'s reliable subscription keeps {task.qos_depth} frame(s) (qos_depth): a frame the node "
                f"did not take in time is lost; qos_depth: {ADVISED_QOS_DEPTH} covers 3.3 s of a 30 Hz camera")
    return ""


def default_drain_timeout(settings: SchedulerSettings, rate: float) -> float:
    longest = max((max(t.deadline, t.period) for t in settings.tasks), default=1.0)
    return 10.0 + (3 * longest + 3 * settings.stats_period) / max(rate, 1e-3)


# -- the run --------------------------------------------------------------------------------------------
class Replay:
    """One replay run (see the module docstring); ``run()`` returns a :class:`ReplayResult`."""

    def __init__(self, opts: ReplayOptions, log: Log = print) -> None:
        self.opts = opts
        self.log = log
        try:
            self.params = load_parameter_file(opts.config, parameter_node_name(opts.config, opts.namespace))
            self.settings = settings_from_mapping(self.params)
        except (ConfigError, OSError, yaml.YAMLError) as exc:
            raise ReplayError(f"{opts.config}: {exc}") from exc
        if not (opts.bag / "metadata.yaml").is_file():
            raise ReplayError(f"{opts.bag} is not a rosbag2 bag (no metadata.yaml)")
        try:
            topics = bag_topics(opts.bag)
        except Exception as exc:  # rosbags' ReaderError and friends: an unreadable bag
            raise ReplayError(f"cannot read {opts.bag}: {type(exc).__name__}: {exc}") from exc
        self.plan = plan_topics(self.settings, topics, opts.remap, opts.namespace)
        fed = {task for task, topic in self.plan.task_topics.items() if topic in self.plan.published.values()}
        if not fed:
            raise ReplayError("no topic of the bag feeds a task of the configuration (camera topics: "
                              f"{sorted(self.plan.task_topics.values())}); use --remap BAG_TOPIC:=TASK_TOPIC")
        for task in self.plan.task_topics:
            if task not in fed:
                log(f"[replay] warning: task {task} gets no input from the bag ({self.plan.task_topics[task]})")
        if opts.record_inputs == "auto":
            self.record_inputs = bag_size(opts.bag) <= AUTO_RECORD_INPUT_BYTES
        else:
            self.record_inputs = opts.record_inputs == "yes"
        for t in self.settings.tasks:
            if t.qos_reliability != "reliable" and t.name in fed:
                log(f"[replay] note: task {t.name} subscribes best effort (qos_reliability): frames may be lost; "
                    "set tasks.<name>.qos_reliability: reliable for exact counts")
        self.info: dict[str, Any] = {}

    def prepare_out(self) -> None:
        out = self.opts.out
        bag = self.opts.output_bag
        if bag.exists():
            if not self.opts.overwrite:
                raise ReplayError(f"{bag} exists (use --overwrite or another --out)")
            shutil.rmtree(bag)
        out.mkdir(parents=True, exist_ok=True)

    def run(self) -> ReplayResult:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.signals import SignalHandlerOptions

        from daris_ros.bags.player import FASTDDS_PROFILE_VARS, use_fast_acks

        try:
            import daris_ros.msg  # noqa: F401 - generated at build time, in the install space
        except ImportError as exc:
            raise ReplayError("the generated messages (daris_ros.msg) are not importable: build the package "
                              "(scripts/build.sh) and run with the install space sourced, e.g. "
                              "scripts/run_in_install.sh daris-replay ...") from exc
        self.prepare_out()
        opts = self.opts
        # acknowledgements within milliseconds (fast mode's pacing, the player's final flush): Fast DDS
        # reads the profile when this process's participant is created; the variable is removed again
        # so that the node under test (started below) keeps its defaults
        profile = use_fast_acks(opts.out)
        context = rclpy.Context()
        try:
            # SIGINT stays a KeyboardInterrupt in this thread: the clean-up below needs a live context
            rclpy.init(args=["daris-replay"], context=context, signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node("daris_replay", context=context)
        finally:
            if profile is not None:
                os.environ.pop(FASTDDS_PROFILE_VARS[0], None)
        if opts.sim_time:
            node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        executor = MultiThreadedExecutor(num_threads=2, context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=self._spin, args=(executor,), name="daris_replay_spin", daemon=True)
        spinner.start()
        proc = None
        player = recorder = clock = None
        interrupted = False
        is_drained = False
        rc: int | None = None
        try:
            self.own = OwnOutputs(node, self.plan.node, self.plan.stats_topic)
            monitor = StatsMonitor(node, self.plan.stats_topic, self.own)
            self._before_start()
            proc, log_path = start_scheduler_logged(opts)
            self.log(f"[replay] scheduler started (pid {proc.pid}), log {log_path}")
            player = self._make_player(node)
            recorder = self._make_recorder(node)
            self._wait_ready(proc, log_path, player, recorder, monitor)
            play_stats = self._play(player)
            if opts.sim_time:  # (the player's publishers stay until the executor has stopped, below)
                last = play_stats.last_clock_ns or player.start_time_ns
                clock = ClockKeeper(node, last, 1.0 if opts.fast else opts.rate, opts.clock_hz)
            is_drained = self._drain(proc, play_stats.published, recorder, monitor)
        except KeyboardInterrupt:
            interrupted = True
            self.log("[replay] interrupted: stopping the node and closing the bag")
        finally:
            # another Ctrl-C must not leave the node running (its own session) or the bag unfinished
            with sigint_ignored():
                if player is not None:
                    player.stop()
                if proc is not None:
                    from daris_ros.tools.demo import stop_process

                    rc = stop_process(proc)
                # the spin thread leaves rcl before any entity is destroyed: destroying a publisher or
                # subscription while another thread waits on it can fail in that thread (InvalidHandle)
                executor.shutdown(timeout_sec=2.0)
                spinner.join(5.0)
                if player is not None:
                    player.close()
                if clock is not None:
                    clock.close()
                if recorder is not None:
                    self.info.update(self._info(player, is_drained, interrupted, rc))
                    try:
                        recorder.set_custom_data(REPLAY_KEY, json.dumps(self.info, sort_keys=True, default=str))
                    finally:
                        record_stats = recorder.stop()
                    self.info["recorded"] = record_stats.counts
                node.destroy_node()
                rclpy.try_shutdown(context=context)
        (opts.out / "replay.json").write_text(json.dumps(self.info, indent=2, sort_keys=True, default=str) + "\n",
                                              encoding="utf-8")
        return ReplayResult(opts.output_bag, self.info, is_drained, interrupted, rc)

    @staticmethod
    def _spin(executor: Any) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    # -- parts of run() -------------------------------------------------------------------------------
    def _make_player(self, node: Any) -> Any:
        from daris_ros.bags.player import BagPlayer, PlayOptions

        o = self.opts
        options = PlayOptions(
            rate=1.0 if o.fast else o.rate, start_offset=o.start_offset, duration=o.duration,
            remap=self.plan.published, topics=self.plan.play, clock=o.sim_time, clock_hz=o.clock_hz,
            fast=o.fast, reliable=True if o.reliable else None, fast_min_period=o.fast_min_period)
        return BagPlayer(node, o.bag, options)

    def _make_recorder(self, node: Any) -> Any:
        from daris_ros.bags.recorder import BagRecorder

        topics = self.plan.record_topics(self.record_inputs)
        # the node's outputs only from the node under test (/diagnostics carries every node's statuses)
        accept = {t: self.own.recorder_filter(t) for t in self.plan.output_topics()}
        return BagRecorder(node, self.opts.output_bag, topics, storage=self.opts.storage, accept=accept).start()

    def _before_start(self) -> None:
        """Wait ``discovery_wait`` for the publishers already on the node's output topics (another node's) to
        be discovered and remember them; stats naming the node meanwhile: another node of its name runs."""
        time.sleep(self.opts.discovery_wait)
        self.own.check()
        self.own.snapshot(self.plan.output_topics())

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, player: Any, recorder: Any,
                    monitor: StatsMonitor) -> None:
        """The node subscribes to its cameras last (after loading and profiling the models): once the
        player's publishers are matched by it, and the recorder's subscriptions by the node's
        publishers, nothing published from now on is lost."""
        started = time.monotonic()
        need = 2 if self.record_inputs else 1  # the node (+ the recorder) on every camera topic
        while True:
            if proc.poll() is not None:
                raise ReplayError(f"the scheduler node exited with code {proc.returncode} before it was ready:\n"
                                  f"{log_tail(log_path)}")
            self.own.check()
            cams = {t: p.get_subscription_count() for t, p in player.publishers.items()}
            recorded = self._to_match(recorder)
            count, last = monitor.snapshot()
            if last is not None and {t.task for t in last.tasks} != set(self.plan.task_topics):
                raise ReplayError(f"the node runs the tasks {sorted(t.task for t in last.tasks)}, the parameter "
                                  f"file declares {sorted(self.plan.task_topics)}\n{log_tail(log_path)}")
            missing = [t for t, n in cams.items() if n < need] + [t for t, n in recorded.items() if n < 1]
            if not self.opts.sim_time and count == 0:
                missing.append(self.plan.stats_topic + " (first message)")
            if not self.opts.sim_time and recorder.counts.get(self.plan.stats_topic, 0) == 0:
                # A matched subscription says the recorder sees the node's publishers, not that the node has
                # matched the recorder's readers yet (on a loaded host that came up to 0.5 s later, and the
                # first results were lost): a stats message that reached the recorder shows it has.
                missing.append(self.plan.stats_topic + " (first message recorded)")
            if not missing:
                break
            if time.monotonic() - started > self.opts.ready_timeout:
                raise ReplayError(f"the scheduler node was not ready after {self.opts.ready_timeout:.0f} s; "
                                  f"waiting for {missing}\n{log_tail(log_path)}")
            time.sleep(0.1)
        time.sleep(self.opts.settle)  # let discovery settle in both directions
        self.info["ready_s"] = round(time.monotonic() - started, 3)
        self.info["node"] = self.plan.node
        others = sorted({n for per in self.own.snapshot_ignored().values() for n in per})
        self.log(f"[replay] following node {self.plan.node} (pid {proc.pid}, stats on {self.plan.stats_topic})"
                 + (f"; ignoring the outputs of {', '.join(others)}" if others else ""))
        self.log(f"[replay] node ready after {self.info['ready_s']:.1f} s; playing {len(self.plan.play)} topic(s)")
        untypable = recorder.untypable
        if untypable:
            self.info["not_recorded"] = untypable
        for topic, why in sorted(untypable.items()):
            self.log(f"[replay] WARNING: {topic} is not recorded: {why} (install the package that defines it, "
                     f"or set perception_msgs: daris_ros in the parameter file)")

    def _to_match(self, recorder: Any) -> dict[str, int]:
        """Recorded topic -> publishers its subscription matched: every topic but the perception topics, of which
        only those the node publishes (a detection task has no mask) and the recorder can record (vision_msgs:
        learnt from its ``.msg`` files under ``AMENT_PREFIX_PATH``, :mod:`~daris_ros.bags.ament_types`; a type found
        nowhere is in the recorder's ``untypable``, not recorded, and the replay says so)."""
        counts = recorder.publisher_counts()
        untypable = recorder.untypable
        for topic in self.plan.perception_topics():
            if topic in untypable or not recorder.node.get_publishers_info_by_topic(topic):
                counts.pop(topic, None)
        return counts

    def _play(self, player: Any) -> Any:
        player.start()
        try:
            while True:
                try:
                    return player.join(0.2)
                except TimeoutError:
                    continue
        except BaseException:
            player.stop()
            raise

    def expected_frames(self, published: dict[str, int]) -> dict[str, int]:
        return {task: int(published.get(topic, 0)) for task, topic in self.plan.task_topics.items()}

    def _drain(self, proc: subprocess.Popen[bytes], published: dict[str, int], recorder: Any,
               monitor: StatsMonitor) -> bool:
        """Wait until the node has received every frame, released or superseded each, finished every job
        and the recorder has every result; then for one more stats message to be recorded."""
        expected = self.expected_frames(published)
        timeout = self.opts.drain_timeout or default_drain_timeout(self.settings, 1.0 if self.opts.fast
                                                                   else self.opts.rate)
        started = time.monotonic()
        count0, _ = monitor.snapshot()
        waiting: list[str] = ["a stats message"]
        while time.monotonic() - started < timeout and proc.poll() is None:
            self.own.check()
            count, last = monitor.snapshot()
            if count > count0 and last is not None:
                waiting = drained(last, expected, recorder.counts, self.plan)
                if not waiting:
                    break
            time.sleep(0.05)
        else:
            self.log(f"[replay] warning: not drained after {time.monotonic() - started:.1f} s: {waiting}")
            short = {w.split(":", 1)[0] for w in waiting if " frames" in w and "received" in w}
            for t in self.settings.tasks:
                hint = loss_hint(t) if t.name in short else ""
                if hint:
                    self.log(f"[replay]   {hint}")
            self.info["drain_s"] = round(time.monotonic() - started, 3)
            self.info["outstanding"] = waiting
            return False
        # the last recorded stats message must come after this point, so it shows the final counts
        recorded0 = recorder.counts.get(self.plan.stats_topic, 0)
        limit = time.monotonic() + 3 * self.settings.stats_period / (1.0 if self.opts.fast else self.opts.rate) + 2
        while recorder.counts.get(self.plan.stats_topic, 0) <= recorded0 and time.monotonic() < limit:
            time.sleep(0.05)
        self.info["drain_s"] = round(time.monotonic() - started, 3)
        self.log(f"[replay] drained after {self.info['drain_s']:.1f} s")
        return True

    def _info(self, player: Any, is_drained: bool, interrupted: bool, rc: int | None) -> dict[str, Any]:
        o = self.opts
        stats = player.stats if player is not None else None
        published = dict(stats.published) if stats is not None else {}
        return {
            "tool": "daris-replay",
            "input_bag": str(o.bag.resolve()),
            "config": str(o.config.resolve()),
            "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
            "rate": 1.0 if o.fast else o.rate,
            "fast": o.fast,
            "use_sim_time": o.sim_time,
            "clock_hz": o.clock_hz,
            "remap": o.remap,
            "start_offset": o.start_offset,
            "duration": o.duration,
            "reliable_player": o.reliable,
            "namespace": o.namespace,
            "task_topics": self.plan.task_topics,
            "result_topics": self.plan.result_topics,
            "payload_topics": self.plan.payload_topics,
            "labels_topics": self.plan.labels_topics,
            "recorded_inputs": self.record_inputs,
            "published": published,
            "expected_frames": self.expected_frames(published),
            "play": None if stats is None else {
                "wall_time": stats.wall_time, "play_time": stats.play_time, "max_lateness": stats.max_lateness,
                "median_lateness": stats.median_lateness, "schedule_time": stats.schedule_time,
                "overrun": stats.overrun, "flush_time": stats.flush_time,
                "ack_timeouts": stats.ack_timeouts, "clock_messages": stats.clock_messages,
                "stopped": stats.stopped},
            "node": self.plan.node,
            "ignored_other_nodes": self.own.snapshot_ignored() if getattr(self, "own", None) else {},
            "drained": is_drained,
            "interrupted": interrupted,
            "scheduler_rc": rc,
        }


# -- command line ---------------------------------------------------------------------------------------
def add_replay_arguments(ap: argparse.ArgumentParser) -> None:
    """Options shared by daris-replay and daris-compare (everything but the bag, config and --out)."""
    from daris_ros.bags.writer import STORAGES

    speed = ap.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    speed.add_argument("--fast", action="store_true",
                       help="as fast as the node takes the frames, on sim time (implies --clock)")
    ap.add_argument("--clock", "--use-sim-time", dest="use_sim_time", action="store_true",
                    help="publish /clock with the bag's time and run the node with use_sim_time")
    ap.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate (default 100)")
    ap.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="bag topic -> camera topic")
    ap.add_argument("--duration", type=float, default=None, help="seconds of the bag to play (default: all)")
    ap.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start at")
    ap.add_argument("--best-effort", dest="reliable", action="store_false",
                    help="publish as the bag recorded (usually best effort) instead of reliable")
    ap.add_argument("--record-inputs", choices=("auto", "yes", "no"), default="auto",
                    help="also record the camera topics (auto: when the bag is at most 64 MiB)")
    ap.add_argument("--namespace", default="", help="namespace of the node (its relative topics move with it)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the node (180)")
    ap.add_argument("--drain-timeout", type=float, default=None,
                    help="seconds to wait for the last jobs after the bag ended (default: from the deadlines)")
    ap.add_argument("--storage", choices=STORAGES, default="mcap", help="output bag storage (default mcap)")
    ap.add_argument("--zoom", type=float, default=1.0, help="seconds shown by the zoomed timeline (0: none)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output bag in --out")
    ap.add_argument("-q", "--quiet", action="store_true")


def options_from_args(args: argparse.Namespace, bag: str, config: str, out: Path) -> ReplayOptions:
    from daris_ros.bags.player import parse_remap

    if args.rate <= 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    return ReplayOptions(
        bag=Path(bag), config=Path(config), out=out, rate=args.rate, fast=args.fast,
        use_sim_time=args.use_sim_time, clock_hz=args.clock_hz, remap=parse_remap(args.remap),
        duration=args.duration, start_offset=args.start_offset, reliable=args.reliable,
        record_inputs=args.record_inputs, namespace=args.namespace, ready_timeout=args.ready_timeout,
        drain_timeout=args.drain_timeout, storage=args.storage, report=not getattr(args, "no_report", False),
        zoom_s=args.zoom, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", help="input bag directory (camera topics)")
    ap.add_argument("--config", required=True, help="parameter file of the scheduler node (ros__parameters)")
    ap.add_argument("--out", required=True, type=Path, help="output directory (bag, report, figures)")
    ap.add_argument("--no-report", action="store_true", help="only record; run daris-report later")
    add_replay_arguments(ap)
    return ap


def replay_and_report(opts: ReplayOptions, log: Log = print, title: str = "daris_ros replay report"
                      ) -> ReplayResult:
    """Run the replay, then write the report of its output bag (unless ``opts.report`` is false)."""
    result = Replay(opts, log).run()
    if opts.report and opts.output_bag.is_dir():
        from daris_ros.report.render import report_bag

        figures, files = report_bag(opts.output_bag, opts.out, title=title, zoom_s=opts.zoom_s)
        result.report_ok = figures.ok
        log(f"[replay] report: {files.markdown}" + ("" if figures.ok else " (some checks FAILED)"))
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: Log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    try:
        opts = options_from_args(args, args.bag, args.config, args.out)
        result = replay_and_report(opts, log)
    except (ReplayError, ValueError) as exc:
        print(f"daris-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("daris-replay: interrupted", file=sys.stderr)
        return 130
    if result.interrupted:
        return 130
    if not result.drained or result.scheduler_rc not in (0, None) or result.report_ok is False:
        print(f"daris-replay: the run did not finish cleanly (drained: {result.drained}, scheduler exit code "
              f"{result.scheduler_rc}, report checks ok: {result.report_ok})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
