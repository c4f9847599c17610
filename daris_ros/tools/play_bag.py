"""daris-play: replay a rosbag2 bag into the ROS graph (raw messages, recorded timing).

Examples::

    daris-play bags/cams4                       # wall clock, recorded rate
    daris-play bags/cams4 --rate 0.5 --loop     # half speed, forever
    daris-play bags/cams4 --clock               # also /clock (run the node with use_sim_time)
    daris-play bags/cams4 --clock --fast        # as fast as the subscribers take it, sim time
    daris-play bags/cams4 --start-offset 2 --duration 5 --remap /cameras/cam0/image_raw:=/cam0/image

ROS arguments (``--ros-args ...``) are passed to rclpy.
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from daris_ros.bags.player import BagPlayer, PlayOptions, PlayStats, parse_remap
from daris_ros.ros.shutdown_race import stopped_by_signal
from daris_ros.tools._rosargs import split_ros_args


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-play", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", help="rosbag2 bag directory (mcap or sqlite3)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    ap.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    ap.add_argument("--loops", type=int, default=None, help="with --loop: number of passes")
    ap.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start at")
    ap.add_argument("--duration", type=float, default=None, help="seconds of bag time to play")
    ap.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="topic remappings")
    ap.add_argument("--topics", nargs="+", default=None, help="play only these bag topics")
    ap.add_argument("--clock", action="store_true", help="publish /clock (for use_sim_time)")
    ap.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate (default 100)")
    ap.add_argument("--fast", action="store_true", help="no sleeping: as fast as the subscribers allow")
    ap.add_argument(
        "--fast-min-period", type=float, default=0.0, help="fast mode: wall seconds between messages"
    )
    qos = ap.add_mutually_exclusive_group()
    qos.add_argument("--reliable", action="store_const", const=True, dest="reliable", default=None)
    qos.add_argument("--best-effort", action="store_const", const=False, dest="reliable")
    ap.add_argument("--depth", type=int, default=None, help="publisher queue depth")
    ap.add_argument(
        "--wait-subscribers", type=int, default=0, metavar="N", help="wait for N subscribers per topic"
    )
    ap.add_argument(
        "--wait-clock-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="with --clock: wait for N on /clock",
    )
    ap.add_argument("--wait-timeout", type=float, default=10.0, help="seconds (default 10)")
    ap.add_argument("--delay", type=float, default=0.0, help="wall seconds to wait before playing")
    ap.add_argument("--node-name", default="daris_bag_player")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def format_stats(stats: PlayStats) -> str:
    lines = [
        f"published {stats.message_count} messages in {stats.wall_time:.2f} s over {stats.passes} pass(es)"
        + (" (stopped)" if stats.stopped else "")
    ]
    if stats.wait_timed_out:
        lines.append("  warning: not every expected subscriber appeared within --wait-timeout")
    lines += [f"  {topic}  {count}" for topic, count in stats.published.items()]
    if stats.clock_messages:
        lines.append(f"  /clock  {stats.clock_messages}")
    if stats.ack_timeouts:
        lines.append(f"  acknowledgement timeouts: {stats.ack_timeouts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    try:
        options = PlayOptions(
            rate=args.rate,
            loop=args.loop,
            max_loops=args.loops,
            start_offset=args.start_offset,
            duration=args.duration,
            remap=parse_remap(args.remap),
            topics=args.topics,
            clock=args.clock,
            clock_hz=args.clock_hz,
            fast=args.fast,
            fast_min_period=args.fast_min_period,
            reliable=args.reliable,
            depth=args.depth,
            wait_for_subscribers=args.wait_subscribers,
            wait_for_clock_subscribers=args.wait_clock_subscribers,
            wait_timeout=args.wait_timeout,
            delay=args.delay,
        )
    except ValueError as exc:
        print(f"daris-play: error: {exc}", file=sys.stderr)
        return 2

    if args.fast:
        # reliable acknowledgements from other processes in ms, not Fast DDS's default 3 s heartbeat
        import tempfile

        from daris_ros.bags.player import use_fast_acks

        use_fast_acks(tempfile.mkdtemp(prefix="daris-play-"))
    rclpy.init(args=["daris-play", *ros_args])
    node = None
    player = None
    rc = 0
    try:
        node = rclpy.create_node(args.node_name)
        player = BagPlayer(node, args.bag, options)
        if not args.quiet:
            for topic, msgtype in player.topics.items():
                print(f"playing {topic} [{msgtype}]")
        stats = player.play()
        if not args.quiet:
            print(format_stats(stats))
    except (KeyboardInterrupt, ExternalShutdownException):
        if player is not None and not args.quiet:
            print(format_stats(player.stats))
    except Exception as exc:  # unreadable bag, unknown type, bad topic, ... (or Ctrl-C mid-publish: not an error)
        if not stopped_by_signal(exc):
            print(f"daris-play: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
    finally:
        if player is not None:
            player.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
