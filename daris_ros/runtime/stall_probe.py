"""Where the engine's loop spends an iteration that runs too long: a sampling probe for diagnosis.

The loop marks when each iteration starts and when it goes to sleep (:attr:`LoopMark.busy_since`, 0 while asleep).
:class:`StallProbe` wakes every ``interval`` seconds; while the loop has been in one iteration for longer than
``threshold`` it reads the loop thread's stack (``sys._current_frames``) and counts it. Its report says how many
iterations ran longer than the threshold, how long the longest ran, which stacks the samples fell in (innermost frame
first), what every other thread of the process was doing at those samples (its name and innermost frames; a thread
waiting on a lock, a queue or an event shows its wait: the busy ones are the suspects when the loop is held inside
a CUDA call that another thread's device synchronisation blocks) and how often the probe itself woke late (the GIL
held by another thread, or the process descheduled: a stall that no stack of the loop explains).

It is off unless ``DARIS_STALL_PROBE`` names a JSON file (the report, rewritten every ``REPORT_PERIOD`` seconds and
at stop); ``DARIS_STALL_PROBE_MS`` sets the threshold (default 10 ms). It costs the loop two clock reads per
iteration whether on or off.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

#: Seconds between two rewrites of the report file.
REPORT_PERIOD = 2.0
#: Frames of the loop's stack kept per sample (innermost first).
STACK_DEPTH = 8
#: Stacks listed in the report (most samples first).
STACKS_REPORTED = 20
#: Frames kept per other thread's sample (innermost first).
OTHER_DEPTH = 4
#: Innermost frames (file name, function) of a thread that waits: left out of the other threads' counts.
WAITING = frozenset({("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("thread.py", "_worker"),
                     ("queue.py", "get"), ("selectors.py", "select"), ("executors.py", "_wait_for_ready_callbacks"),
                     ("stall_probe.py", "_run")})


@dataclass(slots=True)
class LoopMark:
    """Written by the loop thread only: ``time.perf_counter()`` when its current iteration started, 0 asleep."""

    busy_since: float = 0.0


def stack_key(frame: FrameType | None, depth: int = STACK_DEPTH) -> str:
    """``file:line function`` of the innermost ``depth`` frames, innermost first, joined by `` < ``."""
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(parts)


def is_waiting(frame: FrameType | None) -> bool:
    """Whether a thread's innermost frame is one of the waits of :data:`WAITING` (or it has no Python frame)."""
    if frame is None:
        return True
    return (Path(frame.f_code.co_filename).name, frame.f_code.co_name) in WAITING


class StallProbe:
    """Samples ``thread``'s stack while ``mark`` says one of its iterations has run longer than ``threshold``."""

    def __init__(self, mark: LoopMark, thread: threading.Thread, *, threshold: float = 0.010,
                 interval: float = 0.002, report_path: Path | None = None) -> None:
        if threshold <= 0 or interval <= 0:
            raise ValueError(f"stall probe: threshold {threshold} and interval {interval} must be > 0")
        self.mark = mark
        self.thread = thread
        self.threshold = threshold
        self.interval = interval
        self.report_path = report_path
        self.samples: collections.Counter[str] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()  # "thread name: stack" of busy other threads
        self.stalls = 0  # iterations seen running longer than the threshold
        self.longest = 0.0  # seconds, the longest such iteration seen (at its last sample)
        self.probe_late = 0  # wake-ups of the probe later than the threshold
        self.probe_late_longest = 0.0
        self._stall_start = 0.0
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="daris-stall-probe", daemon=True)

    @classmethod
    def from_environment(cls, mark: LoopMark, thread: threading.Thread) -> StallProbe | None:
        """The probe that ``DARIS_STALL_PROBE`` (report file) and ``DARIS_STALL_PROBE_MS`` ask for, or None."""
        path = os.environ.get("DARIS_STALL_PROBE", "")
        if not path:
            return None
        threshold_ms = os.environ.get("DARIS_STALL_PROBE_MS", "10")
        try:
            threshold = float(threshold_ms) * 1e-3
        except ValueError:
            raise ValueError(f"DARIS_STALL_PROBE_MS={threshold_ms!r} is not a number of milliseconds") from None
        return cls(mark, thread, threshold=threshold, report_path=Path(path))

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(1.0)
        self._write()

    def _run(self) -> None:
        last = time.perf_counter()
        next_report = last + REPORT_PERIOD
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            late = now - last - self.interval
            last = now
            if late > self.threshold:
                self.probe_late += 1
                self.probe_late_longest = max(self.probe_late_longest, late)
            self.sample(now)
            if now >= next_report:
                next_report = now + REPORT_PERIOD
                self._write()

    def sample(self, now: float) -> bool:
        """Count the loop's stack if its iteration has run longer than the threshold at ``now``; whether it did."""
        since = self.mark.busy_since
        if not since or now - since <= self.threshold:
            return False
        ident = self.thread.ident
        frames = sys._current_frames()
        frame = frames.get(ident) if ident is not None else None
        if since != self._stall_start:
            self._stall_start = since
            self.stalls += 1
        self.longest = max(self.longest, now - since)
        self.samples[stack_key(frame)] += 1
        names = {t.ident: t.name for t in threading.enumerate()}
        for other, other_frame in frames.items():
            if other == ident or other == threading.get_ident() or is_waiting(other_frame):
                continue
            self.others[f"{names.get(other, other)}: {stack_key(other_frame, OTHER_DEPTH)}"] += 1
        return True

    def report(self) -> dict[str, Any]:
        return {"threshold_ms": round(self.threshold * 1e3, 3), "interval_ms": round(self.interval * 1e3, 3),
                "stalls": self.stalls, "longest_ms": round(self.longest * 1e3, 2),
                "probe_late": self.probe_late, "probe_late_longest_ms": round(self.probe_late_longest * 1e3, 2),
                "samples": sum(self.samples.values()),
                "stacks": [{"samples": n, "stack": key} for key, n in self.samples.most_common(STACKS_REPORTED)],
                "other_threads": [{"samples": n, "thread": key}
                                  for key, n in self.others.most_common(STACKS_REPORTED)]}

    def _write(self) -> None:
        if self.report_path is None:
            return
        tmp = self.report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report(), indent=1) + "\n")
        tmp.replace(self.report_path)
