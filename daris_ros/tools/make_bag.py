"""daris-make-bag: synthesise a rosbag2 bag of N moving-picture camera streams.

Example::

    daris-make-bag bags/cams4 --cameras 4 --width 640 --height 480 --encoding rgb8 --rate 30 \\
        --duration 10 --jitter-ms 2 --drop-prob 0.01 --seed 0

writes ``bags/cams4/`` (``metadata.yaml`` + ``cams4.mcap``) with topics
``/cameras/cam<i>/image_raw`` (``sensor_msgs/msg/Image``; ``.../image_raw/compressed`` with
``sensor_msgs/msg/CompressedImage`` for ``--encoding jpeg|png``). No ROS installation is needed.
"""

from __future__ import annotations

import argparse
import sys

from daris_ros.bags.qos import make_qos, write_qos_overrides
from daris_ros.bags.synth import DEFAULT_START_NS, ENCODINGS, SynthConfig
from daris_ros.bags.writer import STORAGES, write_synthetic_bag


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-make-bag", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output bag directory (must not exist)")
    ap.add_argument("--cameras", type=int, default=4, help="number of cameras (default 4)")
    ap.add_argument("--names", default=None, help="comma-separated camera names (default cam0,cam1,...)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--encoding", choices=ENCODINGS, default="rgb8", help="raw encoding, or jpeg/png")
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second per camera (default 30)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="uniform capture jitter +- ms (default 0)")
    ap.add_argument("--drop-prob", type=float, default=0.0, help="probability a frame is dropped (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", choices=STORAGES, default="mcap")
    ap.add_argument("--prefix", default="/cameras", help="topic prefix (default /cameras)")
    ap.add_argument(
        "--start-ns", type=int, default=DEFAULT_START_NS, help="capture time of frame 0, ns since the epoch"
    )
    ap.add_argument("--no-stagger", action="store_true", help="all cameras capture at the same instants")
    ap.add_argument(
        "--reliability",
        choices=("best_effort", "reliable"),
        default="best_effort",
        help="offered reliability recorded in the metadata (default best_effort, sensor data)",
    )
    ap.add_argument(
        "--qos-overrides",
        default=None,
        metavar="FILE",
        help="also write a `ros2 bag play --qos-profile-overrides-path` file for the camera topics",
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = SynthConfig(
            cameras=args.cameras,
            width=args.width,
            height=args.height,
            encoding=args.encoding,
            rate=args.rate,
            duration=args.duration,
            jitter_ms=args.jitter_ms,
            drop_prob=args.drop_prob,
            seed=args.seed,
            prefix=args.prefix,
            start_ns=args.start_ns,
            stagger=not args.no_stagger,
            jpeg_quality=args.jpeg_quality,
            names=tuple(args.names.split(",")) if args.names else None,
        )
        qos = make_qos(reliability=args.reliability)
        summary = write_synthetic_bag(args.out, config, storage=args.storage, qos=[qos])
        if args.qos_overrides:
            write_qos_overrides(args.qos_overrides, {topic: qos for topic in config.topics()})
    except KeyboardInterrupt:
        print("interrupted; the bag is incomplete", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"daris-make-bag: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # rosbags' WriterError (e.g. the output exists)
        print(f"daris-make-bag: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {summary.path} ({summary.storage}): {summary.message_count} messages")
        for topic, count in summary.counts.items():
            print(f"  {topic}  {summary.types[topic]}  {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
