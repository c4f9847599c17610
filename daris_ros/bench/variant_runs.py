"""The micro-benches that time variants one after another (bench.decode_interference, bench.intake_cost): their
``--variants`` argument and the record of each variant's run."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def parse_variants(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str]) -> list[str]:
    """The comma-separated ``--variants``; an unknown one exits 2 naming it and the allowed ones."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in allowed]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return variants


def record_run(doc: dict[str, Any], run: dict[str, Any], out: Path, stem: str,
               render_md: Callable[[dict[str, Any]], str]) -> None:
    """Print one variant's figures as a JSON line, add them to ``doc["runs"]`` and rewrite ``<stem>.json`` and
    ``<stem>.md`` in ``out`` (a run cut short keeps every variant it finished)."""
    print(json.dumps(run), flush=True)
    doc["runs"].append(run)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{stem}.md").write_text(render_md(doc))
