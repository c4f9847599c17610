"""Who holds the interpreter lock (GIL): a summary of ``py-spy record --gil -f raw`` output; where one thread's
wall time goes: of ``py-spy record --idle -f raw`` output.

    python -m daris_ros.bench.gil_profile RAW [RAW ...] --rate 250 --seconds 12 [--thread "engine loop"] [--wall]
        [--out FILE.md]

py-spy's raw format is one line per distinct stack, ``frame;frame;...;leaf COUNT``, root first; with ``--gil`` only
the thread holding the GIL is sampled, so the samples over ``rate * seconds`` is the share of time the GIL was held.
Per file: that share, the share of the held samples per thread (by the function that started the thread: the
engine's loop, the decode pool, the intake readers, the result publisher, the executor), and the functions with
the largest inclusive share. ``--thread LABEL`` (e.g. ``engine loop``): that thread's samples by the functions it
spends them in (inclusive, as a share of the thread's samples); with ``--idle`` every thread is sampled at every
tick, so this is where its wall time goes, waits included. ``--out``: the same as Markdown.
"""

from __future__ import annotations

import argparse
import collections
from dataclasses import dataclass, field
from pathlib import Path

#: Functions that name a thread (the first of them on a stack, from the root).
THREAD_ROOTS = (
    ("Engine._loop", "engine loop"),
    ("DecodeQueue._work", "decode pool"),
    ("ProcessIntake._read", "intake readers"),
    ("SchedulerNode._publish_results", "result publisher"),
    ("FrameIntake._run", "intake thread"),
    ("spin_until_future_complete", "executor (main thread)"),
)


@dataclass
class GilProfile:
    samples: int = 0
    threads: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    #: thread label -> function -> samples of that thread whose stack holds the function below the thread's root
    by_thread: dict[str, collections.Counter[str]] = field(default_factory=dict)


def function_name(frame: str) -> str:
    """``Engine._loop (daris_ros/runtime/engine.py:620)`` -> ``Engine._loop``."""
    return frame.split(" (", 1)[0].strip()


def thread_of(names: list[str]) -> str:
    return _thread_root(names)[0]


def _thread_root(names: list[str]) -> tuple[str, int]:
    """The thread's label and where its root function is on the stack (-1: other)."""
    for i, name in enumerate(names):
        for root, label in THREAD_ROOTS:
            if name == root:
                return label, i
    return "other", -1


def parse_raw(text: str) -> GilProfile:
    profile = GilProfile()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        names = [function_name(f) for f in stack.split(";") if f.strip()]
        thread, root = _thread_root(names)
        profile.samples += n
        profile.threads[thread] += n
        for name in set(names):
            profile.inclusive[name] += n
        within = profile.by_thread.setdefault(thread, collections.Counter())
        for name in set(names[root + 1:]) or {"(the root function itself)"}:
            within[name] += n
    return profile


def render(name: str, profile: GilProfile, possible: float, top: int, focus: str = "", wall: bool = False
           ) -> list[str]:
    held = profile.samples
    if wall:  # (every thread sampled at every tick: a thread's samples over ``possible`` is 1)
        head = f"{held} samples of every thread" + (f", {possible:.0f} ticks" if possible else "")
    else:
        head = (f"GIL held in {held} of {possible:.0f} samples ({held / possible:.0%} of the time)" if possible
                else f"{held} samples")
    lines = [f"## {name}", "", head, "", f"| thread | share of the {'' if wall else 'GIL '}samples |", "|---|---:|"]
    for thread, n in profile.threads.most_common():
        lines.append(f"| {thread} | {n / held:.1%} |")
    lines += ["", f"Functions by inclusive share (top {top}):", "", "| function | share |", "|---|---:|"]
    for fn, n in profile.inclusive.most_common(top):
        lines.append(f"| `{fn}` | {n / held:.1%} |")
    if focus:
        own = profile.threads[focus]
        lines += ["", f"The {focus}'s {own} samples by function below its root (inclusive, top {top}):", "",
                  "| function | share of the thread's samples |", "|---|---:|"]
        for fn, n in profile.by_thread.get(focus, collections.Counter()).most_common(top):
            lines.append(f"| `{fn}` | {n / own:.1%} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.bench.gil_profile",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("raw", nargs="+", type=Path, help="py-spy record --gil -f raw outputs (.txt, or .gz)")
    p.add_argument("--rate", type=float, default=250.0, help="py-spy's sampling rate (-r)")
    p.add_argument("--seconds", type=float, default=0.0, help="the recording's duration (-d); 0: share not shown")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default="", help="a thread's label (e.g. 'engine loop'): its samples by function")
    p.add_argument("--wall", action="store_true", help="the raw files are of py-spy --idle (wall time), not --gil")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    lines: list[str] = ["# Where the threads spend their wall time (py-spy --idle)" if args.wall
                        else "# Who holds the GIL (py-spy --gil)", ""]
    for path in args.raw:
        if path.suffix == ".gz":
            import gzip

            text = gzip.decompress(path.read_bytes()).decode()
        else:
            text = path.read_text()
        lines += render(str(path), parse_raw(text), args.rate * args.seconds, args.top, args.thread, args.wall)
    out = "\n".join(lines)
    if args.out is not None:
        args.out.write_text(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
