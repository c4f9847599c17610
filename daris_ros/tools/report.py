"""daris-report: the report of a recorded run, from its output bag.

Example::

    daris-report runs/demo/output --out runs/demo

writes ``report.md``, ``report.html``, ``report.json`` and the PNG figures into ``--out``. The bag may
come from ``daris-replay``, ``daris-record`` or ``ros2 bag record`` (result topics, /daris/stats,
/diagnostics and optionally the camera topics, detections, masks and labels). With camera frames (recorded
in the bag, ``--frames INPUT_BAG``, or the replay's input bag) it also draws ``--pictures`` sampled jobs on
their frames: boxes or masks, response time vs deadline, MET / MISSED (``frame_<task>_<job>.png``, section
"Frames"). Needs no ROS: rosbags, numpy, matplotlib and Pillow.
Exit code 0, or 1 when a consistency check of the report failed (``--strict``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daris_ros.report.pictures import DEFAULT_PICTURES
from daris_ros.report.render import report_bag
from daris_ros.report.tables import fmt


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path, help="output bag of a run")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: the bag's parent)")
    ap.add_argument("--title", default="daris_ros replay report")
    ap.add_argument("--zoom", type=float, default=1.0, help="seconds shown by the zoomed timeline (0: none)")
    ap.add_argument("--pictures", type=int, default=DEFAULT_PICTURES, metavar="N",
                    help=f"jobs drawn on their camera frames (default {DEFAULT_PICTURES}; HP misses first; 0: none)")
    ap.add_argument("--frames", type=Path, default=None, metavar="INPUT_BAG",
                    help="bag with the camera frames, when the output bag has none (default: the replay's input "
                         "bag, where it exists)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a consistency check failed")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.bag.resolve().parent
    try:
        if args.pictures < 0:
            raise ValueError(f"--pictures must be >= 0, got {args.pictures}")
        if args.frames is not None and not (args.frames / "metadata.yaml").is_file():
            raise ValueError(f"--frames {args.frames}: not a rosbag2 bag (no metadata.yaml)")
        figures, files = report_bag(args.bag, out, title=args.title, zoom_s=args.zoom, pictures=args.pictures,
                                    frames_bag=args.frames)
    except KeyboardInterrupt:
        print("daris-report: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as exc:  # not a bag, unreadable, unknown types
        print(f"daris-report: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for name, f in figures.tasks.items():
            print(f"{name:<16} {f.priority}  completed {f.completed:>5}  missed {f.missed:>4}  "
                  f"rejected {fmt(f.rejected):>4}  DMR {fmt(f.dmr, 1, pct=True):>6}  "
                  f"p99 {fmt(f.response.p99, 1, 1e3):>7} ms")
        failed = [c for c in figures.checks if c.ok is False]
        print(f"checks: {len(figures.checks) - len(failed)} ok, {len(failed)} failed")
        for c in failed:
            print(f"  FAILED {c.task}: {c.name}: {c.detail}")
        print(f"wrote {files.markdown}, {files.html.name}, {files.json.name}, {len(files.plots)} figures and "
              f"{len(files.pictures)} pictures")
    return 1 if args.strict and not figures.ok else 0


if __name__ == "__main__":
    sys.exit(main())
