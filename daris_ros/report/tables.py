"""Small document model shared by the report and the comparison: tables and paragraphs rendered to
markdown and to self-contained HTML, and JSON that has no NaN (NaN and infinities become null)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Cell = str | int | float | None


def fmt(value: Cell, digits: int = 1, scale: float = 1.0, pct: bool = False) -> str:
    """A cell: ``-`` for None/NaN, ints as is, floats with ``digits`` (times ``scale``; ``pct``: as %)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if pct:
            return f"{value * 100:.{digits}f}%"
        return f"{value * scale:.{digits}f}"
    return str(value)


@dataclass(slots=True)
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        out = [line(self.headers), "|" + "|".join("---" for _ in self.headers) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(slots=True)
class Image:
    path: str  # relative to the document
    caption: str


@dataclass(slots=True)
class Section:
    title: str
    blocks: list[str | Table | Image] = field(default_factory=list)


@dataclass(slots=True)
class Document:
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for p in self.intro:
            out += [p, ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for b in s.blocks:
                if isinstance(b, Table):
                    out.append(b.markdown())
                elif isinstance(b, Image):
                    out.append(f"![{b.caption}]({b.path})")
                else:
                    out.append(b)
                out.append("")
        return "\n".join(out)

    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        parts += [f"<p>{html.escape(p)}</p>" for p in self.intro]
        for s in self.sections:
            parts.append(f"<h2>{html.escape(s.title)}</h2>")
            for b in s.blocks:
                if isinstance(b, Table):
                    parts.append(b.html())
                elif isinstance(b, Image):
                    parts.append(f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.caption)}">'
                                 f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
                else:
                    parts.append(f"<p>{html.escape(b)}</p>")
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (recursively), tuples as lists, keys as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, sort_keys=False, allow_nan=False) + "\n"
