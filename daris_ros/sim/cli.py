"""``daris-sim SCENARIO.yaml [--seed N] [--json OUT]``: run a scenario and print a metrics table."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from daris_ros.sim.engine import simulate
from daris_ros.sim.metrics import format_table, result_to_dict
from daris_ros.sim.scenario import load_scenario


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daris-sim",
        description="Run a DARIS scheduling scenario in the deterministic discrete-event simulator.",
    )
    p.add_argument("scenario", help="scenario YAML file (see docs/simulator.md)")
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the metrics as JSON to OUT")
    p.add_argument("--per-task", action="store_true", help="add one table row per task")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        type=_parse_override,
        default=[],
        help="override a scenario value by dotted key, e.g. --set scheduler.no_staging=true (repeatable)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, dict(args.set))
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        print(f"daris-sim: cannot load {args.scenario}: {exc}", file=sys.stderr)
        return 2
    result = simulate(scenario, seed=args.seed)
    print(format_table(result, per_task=args.per_task))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result_to_dict(result), fh, indent=2, sort_keys=True)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
