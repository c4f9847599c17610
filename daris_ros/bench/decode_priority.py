"""``python -m daris_ros.bench.decode_priority``: HP cameras on a host that cannot decode every frame in time.

The scheduler node's engine (cpu backend, the node's default release trigger and ``skip_late``) and the node's own
camera decoder (:class:`~daris_ros.ros.cdr_frames.RosFrameDecoder`, here Pillow on the CPU, in the engine's decode
pool) are fed JPEG frames (1280x720 by default) from ``--hp`` HP and ``--lp`` LP cameras at ``--rate`` Hz, each
camera at its own phase, by one feeder thread; no ROS transport is involved (the frames are handed to
``Engine.offer`` as the node's subscriptions do). With more cameras than the decode threads can decode, the question
is which frames wait: an HP frame counts as **served** when its result came within two periods of its image stamp
(the same rule as ``daris-node-e2e``). Also reported: what the core counted (HP missed and skipped, LP completed),
the frames the engine released undecoded (past their skip time, ``frames_undecoded``) and the CPU time used.

It imports ``daris_ros`` from ``sys.path``, so the same file measures an older tree (``PYTHONPATH=<tree>``,
``python <this file>``) in the same session: ``scripts/cpu_decode_priority.sh`` runs both trees in turn and
writes ``docs/benchmarks/decode_priority/``. Figures are the machine's: what matters is the pair from one run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(slots=True)
class Sent:
    hp: int = 0
    lp: int = 0


def jpeg_frame(width: int, height: int, seed: int) -> bytes:
    """A camera-like JPEG (smooth gradients with texture, quality 85): decoding costs what a real frame costs."""
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                     ((x + y) * 127 // max(1, width + height))], axis=-1).astype(np.int16)
    noise = rng.integers(-24, 24, size=(height, width, 3), dtype=np.int16)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    out = BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from daris_ros.ros.cdr_frames import RawFrame, RosFrameDecoder, StampHeader
    from daris_ros.runtime.driver import drain
    from daris_ros.runtime.engine import Engine, JobResult
    from daris_ros.settings import SchedulerSettings, TaskSettings

    period = 1.0 / args.rate
    tasks = tuple(TaskSettings(f"{prio.lower()}{i:02d}", f"/cam/{prio.lower()}{i:02d}", prio, period, period,
                               args.model, input_size=(args.input, args.input))
                  for prio, n in (("HP", args.hp), ("LP", args.lp)) for i in range(n))
    settings = SchedulerSettings(policy="STR", n_contexts=1, n_streams=args.streams, profile_runs=2, tasks=tasks,
                                 backend="cpu", device="cpu", decode_threads=args.decode_threads)
    jpeg = jpeg_frame(args.width, args.height, args.seed)
    decoder = RosFrameDecoder(args.width * args.height, "cpu", threads=args.decode_threads)
    hp_results: list[tuple[float, float, bool]] = []  # (stamp, finish, met)
    lp_done = [0]

    def on_result(r: JobResult) -> None:
        if r.priority == "HP":
            hp_results.append((r.stamp if r.stamp is not None else r.receive_time, r.finish_time, r.met))
        else:
            lp_done[0] += 1

    engine = Engine(settings, on_result=on_result, decoder=decoder)
    engine.load_models()
    engine.profile()
    engine.start()
    clock = time.monotonic
    rng = random.Random(args.seed)
    start = clock() + 0.2
    next_at = {t.name: start + rng.random() * period for t in tasks}
    end = start + args.seconds
    window_from = start + args.warmup
    sent = Sent()
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            name, at = min(next_at.items(), key=lambda kv: kv[1])
            if at >= end:
                return
            delay = at - clock()
            if delay > 0:
                time.sleep(delay)
            now = clock()
            frame = RawFrame(jpeg, StampHeader(0, 0, name), True, format="jpeg", data_offset=0,
                             data_length=len(jpeg))
            engine.offer(name, frame, stamp=now)
            if now >= window_from:
                if name.startswith("hp"):
                    sent.hp += 1
                else:
                    sent.lp += 1
            next_at[name] = at + period

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    feeder = threading.Thread(target=feed, name="cameras", daemon=True)
    feeder.start()
    feeder.join(args.seconds + 30.0)
    stop.set()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    drain(engine, 30.0)
    stats = engine.call(lambda core: core.task_stats())
    undecoded = getattr(engine.counters, "frames_undecoded", 0)
    engine.close()
    in_window = [(s, f, m) for s, f, m in hp_results if s >= window_from]
    served = sum(1 for s, f, _ in in_window if f - s <= 2 * period)
    latencies = sorted(f - s for s, f, _ in in_window)
    hp_stats = [s for name, s in stats.items() if name.startswith("hp")]
    lp_stats = [s for name, s in stats.items() if name.startswith("lp")]
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {
        "cameras": {"hp": args.hp, "lp": args.lp, "rate_hz": args.rate, "size": f"{args.width}x{args.height}"},
        "decode_threads": args.decode_threads,
        "hp_sent": sent.hp,
        "hp_served": served,
        "hp_served_share": served / sent.hp if sent.hp else 0.0,
        "hp_e2e_p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else None,
        "hp_e2e_p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3 if latencies else None,
        "hp_missed": sum(s.missed for s in hp_stats),
        "hp_skipped": sum(s.skipped for s in hp_stats),
        "hp_released": sum(s.released for s in hp_stats),
        "lp_sent": sent.lp,
        "lp_released": sum(s.released for s in lp_stats),
        "lp_completed": sum(s.completed for s in lp_stats),
        "lp_skipped": sum(s.skipped for s in lp_stats),
        "lp_rejected": sum(s.rejected for s in lp_stats),
        "frames_undecoded": undecoded,
        "cpu_cores": cpu / args.seconds,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="decode_priority", description=__doc__.split("\n\n")[0])
    p.add_argument("--hp", type=int, default=2, help="HP cameras")
    p.add_argument("--lp", type=int, default=10, help="LP cameras")
    p.add_argument("--rate", type=float, default=30.0, help="Hz per camera (deadline = period)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0, help="seconds at the start not counted")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--input", type=int, default=32, help="model input size (square): small, decoding is the load")
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--decode-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="stored with the figures (e.g. the tree's commit)")
    p.add_argument("--json", default="", help="append the figures as one JSON line to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    args = parse(argv)
    import os

    figures = {"label": args.label, "argv": sys.argv[1:], "loadavg_1m_before": os.getloadavg()[0], **run(args)}
    line = json.dumps(figures)
    print(line)
    if args.json:
        with Path(args.json).open("a") as out:
            out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
