"""daris-compare: replay one bag with two parameter files and compare the runs side by side.

Examples::

    daris-compare bags/cams4 config/a.yaml config/b.yaml --out runs/a_vs_b --remap ...
    daris-compare --outputs runs/a/output runs/b/output --out runs/a_vs_b    # two existing output bags

Runs ``daris-replay`` twice, one after the other, with the same replay options (``DIR/a``, ``DIR/b``:
output bag, report and figures of each run), then writes ``DIR/compare.md``, ``compare.html``,
``compare.json``, ``compare_bars.png`` and ``compare_cdf.png``: the parameters that differ and, per task
and per priority, released / admitted / rejected / completed / missed / stale, DMR, JPS and response
p50 / p99 / max of both runs with their difference.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from daris_ros.report.compare import write_comparison
from daris_ros.report.extract import read_run
from daris_ros.report.render import write_report

Log = Callable[[str], None]


def build_parser() -> argparse.ArgumentParser:
    from daris_ros.tools.replay import add_replay_arguments

    ap = argparse.ArgumentParser(prog="daris-compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="BAG CONFIG_A CONFIG_B",
                    help="input bag and two parameter files (with --outputs: two output bags)")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--labels", nargs=2, default=None, metavar=("A", "B"),
                    help="names of the two runs (default: the config file names)")
    ap.add_argument("--outputs", action="store_true", help="compare two existing output bags, do not replay")
    add_replay_arguments(ap)
    return ap


def _labels(args: argparse.Namespace, a: str, b: str) -> tuple[str, str]:
    if args.labels:
        return args.labels[0], args.labels[1]
    la, lb = Path(a).stem, Path(b).stem
    if la == lb:
        la, lb = f"A ({la})", f"B ({lb})"
    return la, lb


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: Log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    want = 2 if args.outputs else 3
    if len(args.inputs) != want:
        print(f"daris-compare: error: expected {'OUTPUT_A OUTPUT_B' if args.outputs else 'BAG CONFIG_A CONFIG_B'}"
              f", got {len(args.inputs)} argument(s)", file=sys.stderr)
        return 2
    try:
        if args.outputs:
            bags = (Path(args.inputs[0]), Path(args.inputs[1]))
            labels = _labels(args, str(bags[0].parent), str(bags[1].parent))
        else:
            bags, labels = _replay_both(args, log)
        runs = [read_run(bag) for bag in bags]
        reports = []
        figures = []
        for run, label, sub in zip(runs, labels, ("a", "b"), strict=True):
            out = run.path.resolve().parent if args.outputs else args.out / sub
            fig, report_files = write_report(run, out, title=f"daris_ros replay report: {label}", zoom_s=args.zoom)
            figures.append(fig)
            reports.append(str(report_files.markdown))
        rows, files = write_comparison(runs[0], figures[0], runs[1], figures[1], args.out, labels,
                                       (reports[0], reports[1]))
    except KeyboardInterrupt:
        print("daris-compare: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError) as exc:
        print(f"daris-compare: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ReplayError
        print(f"daris-compare: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(files.markdown.read_text(encoding="utf-8").split("## Figures")[0].rstrip())
        print(f"\nwrote {files.markdown}, {files.json.name}, " + ", ".join(p.name for p in files.plots.values()))
    return 0 if all(f.ok for f in figures) else 1


def _labelled(log: Log, label: str) -> Log:
    """``log`` with each message prefixed by ``[label]``."""
    return lambda msg: log(f"[{label}] {msg}")


def _replay_both(args: argparse.Namespace, log: Log) -> tuple[tuple[Path, Path], tuple[str, str]]:
    from daris_ros.tools.replay import Replay, ReplayError, options_from_args

    bag, config_a, config_b = args.inputs
    labels = _labels(args, config_a, config_b)
    outputs = []
    for label, config, sub in ((labels[0], config_a, "a"), (labels[1], config_b, "b")):
        opts = options_from_args(args, bag, config, args.out / sub)
        opts.report = False  # written below, with the run's label
        log(f"[compare] run {label}: {config}")
        result = Replay(opts, _labelled(log, label)).run()
        if result.interrupted:
            raise KeyboardInterrupt
        if not result.drained:
            log(f"[compare] warning: run {label} did not drain; its numbers may be incomplete")
        if not opts.output_bag.is_dir():
            raise ReplayError(f"run {label} wrote no output bag")
        outputs.append(opts.output_bag)
    return (outputs[0], outputs[1]), labels


if __name__ == "__main__":
    sys.exit(main())
