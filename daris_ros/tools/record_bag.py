"""daris-record: record topics (results, statistics, diagnostics, images) into a rosbag2 bag.

Examples::

    daris-record out/run1 /daris/results /daris/stats /diagnostics --duration 60
    daris-record out/run1 /daris/results=daris_ros/msg/InferenceResult --use-sim-time

A topic is ``NAME`` (its type is discovered from the graph once a publisher appears) or
``NAME=TYPE``. Log times are the recorder node's clock at reception (sim time with
``--use-sim-time``). Stops after ``--duration`` seconds or on Ctrl-C, and always closes the bag cleanly.
ROS arguments (``--ros-args ...``) are passed to rclpy.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from daris_ros.bags.recorder import BagRecorder, RecordStats
from daris_ros.bags.writer import STORAGES
from daris_ros.ros.shutdown_race import stopped_by_signal
from daris_ros.tools._rosargs import split_ros_args


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-record", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output bag directory (must not exist)")
    ap.add_argument("topics", nargs="+", metavar="TOPIC[=TYPE]")
    ap.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    ap.add_argument("--storage", choices=STORAGES, default="mcap")
    ap.add_argument(
        "--qos",
        choices=("auto", "reliable", "best_effort"),
        default="auto",
        help="subscription reliability (auto: reliable if every publisher is)",
    )
    ap.add_argument("--depth", type=int, default=1000, help="subscription queue depth (default 1000)")
    ap.add_argument(
        "--timestamp",
        choices=("node", "receive"),
        default="node",
        help="log time: the node clock (sim time aware) or the middleware receive time",
    )
    ap.add_argument("--use-sim-time", action="store_true", help="stamp with /clock time")
    ap.add_argument("--node-name", default="daris_bag_recorder")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def parse_topics(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        name, sep, msgtype = item.partition("=")
        out[name] = msgtype if sep else None
    return out


def format_stats(stats: RecordStats) -> str:
    lines = [f"recorded {stats.message_count} messages into {stats.path}"]
    lines += [f"  {topic}  {stats.types[topic]}  {count}" for topic, count in stats.counts.items()]
    if stats.missing:
        lines.append(f"  never seen: {', '.join(stats.missing)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    topics = parse_topics(args.topics)
    qos = None
    if args.qos != "auto":
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=args.depth,
            reliability=(
                ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
            ),
        )

    rclpy.init(args=["daris-record", *ros_args])
    node = None
    recorder = None
    executor = None
    rc = 0
    try:
        node = rclpy.create_node(args.node_name)
        if args.use_sim_time:
            node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        recorder = BagRecorder(
            node,
            args.out,
            topics,
            storage=args.storage,
            qos=qos,
            depth=args.depth,
            timestamp=args.timestamp,
        )
        recorder.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            executor.spin_once(timeout_sec=timeout)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # bad output path, unknown type, ... (or Ctrl-C under the wait set: not an error)
        if not stopped_by_signal(exc):
            print(f"daris-record: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
    finally:
        if recorder is not None:
            stats = recorder.stop()
            if not args.quiet:
                print(format_stats(stats))
            for topic, why in sorted(recorder.untypable.items()):  # (published, but in a type found nowhere)
                print(f"daris-record: {topic} not recorded: {why}", file=sys.stderr)
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
