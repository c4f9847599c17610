"""Load on the scheduler node's own path: the :class:`~daris_ros.runtime.engine.Engine` (its loop releases every
task from its own clock, preprocesses the release burst as a batch, runs the core, launches on the backend, polls
completions, post-processes), without DDS.

``n_tasks`` camera tasks of one model at ``rate`` Hz (1 in 3 HP), released together every period (a
hardware-triggered camera rig), each with its own frame (``--frames host``: a distinct HxWx3 uint8 numpy frame per
camera, uploaded at every release, as a decoded camera image would be; ``device``: already on the GPU). Each
configuration runs batch-1 and batched (``batching: true``) in the same call (``--modes``); JPS counts the jobs that
finished inside the window, DMR = missed / finished, releases/s the engine's releases in the window, and the host
CPU per release is the engine loop's thread CPU time over its releases. Writes ``engine_load.json`` and
``engine_load.md`` to ``--out``.

    python -m daris_ros.bench.engine_load --tasks 150 --rate 30 --precision fp16 --channels-last --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_once(args: argparse.Namespace, batching: bool) -> dict[str, Any]:
    import torch

    from daris_ros.runtime.driver import FreeRunningCameras, drain
    from daris_ros.runtime.engine import Engine, JobResult
    from daris_ros.settings import SchedulerSettings, TaskSettings

    period = 1.0 / args.rate
    tasks = tuple(TaskSettings(f"t{i}", f"/cam{i}", "HP" if i % 3 == 0 else "LP", period, period, args.model,
                               precision=args.precision, channels_last=args.channels_last)
                  for i in range(args.tasks))
    if args.input_size is not None:
        tasks = tuple(dataclasses.replace(t, input_size=(args.input_size, args.input_size)) for t in tasks)
    instant = args.backend == "instant"
    s = SchedulerSettings(policy="STR", backend="cpu" if instant else args.backend,
                          device="cpu" if instant else args.device, n_contexts=1,
                          n_streams=args.streams, profile_runs=3, tasks=tasks, batching=batching,
                          batch_sizes=tuple(int(v) for v in args.sizes.split(",")), batch_pad_limit=args.pad_limit,
                          batch_lp_admit_margin=args.lp_margin, launch_ahead=args.launch_ahead,
                          ahead_lead=args.ahead_lead_ms * 1e-3, lp_host_busy_limit=args.lp_host_busy_limit,
                          release_trigger=args.trigger, release_window=args.release_window)
    done: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            done.append(r)

    torch.manual_seed(0)
    backend = None
    if instant:
        from daris_ros.bench.instant_backend import InstantBackend

        backend = InstantBackend(n_contexts=1, n_streams=args.streams)
    e = Engine(s, on_result=on_result, backend=backend)
    try:
        t_start = time.perf_counter()
        e.load_models()
        e.profile()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        frames: dict[str, Any] = {}
        for i, t in enumerate(tasks):  # a distinct frame per camera
            frame: Any = np.roll(base, i, axis=1)
            if args.frames == "device":
                frame = torch.from_numpy(frame).to(args.device)
            frames[t.name] = frame
            if args.trigger == "clock":
                e.set_frame(t.name, frame)
        cameras = FreeRunningCameras(e, frames, period) if args.trigger == "frame" else None
        setup = time.perf_counter() - t_start
        t0 = time.monotonic() + 0.05
        e.start(origin=t0)
        if cameras is not None:
            cameras.start()
        warm = t0 + args.warmup
        time.sleep(max(0.0, warm - time.monotonic()))
        snap0 = e.snapshot()
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
        snap1 = e.snapshot()
        t1 = snap1.time
        if cameras is not None:
            cameras.stop()
        for t in tasks:
            e.inbox.clear(t.name)
        drain(e, 30.0)
        stats = e.scheduler.task_stats() if not e.running else e.call(lambda core: core.task_stats())
        bstats = e.call(lambda core: core.batch_stats())
    finally:
        e.close()
    window = [r for r in done if snap0.time <= r.finish_time <= t1]
    span = t1 - snap0.time
    loop0, loop1 = snap0.loop, snap1.loop
    releases = loop1.releases - loop0.releases
    out: dict[str, Any] = {"batching": batching, "setup_s": round(setup, 1),
                           "jps": round(len(window) / span, 1),
                           "releases_per_s": round(releases / span, 1),
                           "host_us_per_release": round((loop1.busy_cpu - loop0.busy_cpu) / max(releases, 1) * 1e6, 1),
                           "loop_cpu_share": round((loop1.busy_cpu - loop0.busy_cpu) / span, 3),
                           "loop_busy_share": round(loop1.busy_share, 3),
                           "lp_rejected_host": sum(v.rejected_host for v in stats.values()),
                           "released": sum(v.released for v in stats.values()),
                           "admitted": sum(v.admitted for v in stats.values()),
                           "skipped_releases": sum(c.releases_skipped for c, _ in snap1.intake.values())}
    for prio in ("HP", "LP"):
        rs = [r for r in done if r.priority == prio]
        out[f"{prio.lower()}_missed"] = sum(not r.met for r in rs)
        out[f"{prio.lower()}_dmr"] = round(sum(not r.met for r in rs) / len(rs), 5) if rs else None
        resp = sorted(r.response_time for r in rs)
        out[f"{prio.lower()}_p99_ms"] = round(resp[int(0.99 * (len(resp) - 1))] * 1e3, 2) if resp else None
    if batching:
        out.update(batches=bstats.batches, mean_batch=round(bstats.mean_batch, 1), padding=round(bstats.padding, 4),
                   by_size=dict(sorted(bstats.by_size.items())))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="daris-engine-load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--tasks", type=int, default=150)
    p.add_argument("--rate", type=float, default=30.0, help="Hz per task (deadline = period)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds at the start of the window not counted")
    p.add_argument("--backend", default="str",
                   help="str, green, mps, cpu; or instant: no device, every stage finishes at once (the engine's "
                        "host cost alone, daris_ros/bench/instant_backend.py)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--sizes", default="1,2,4,8,16,32,64,128")
    p.add_argument("--pad-limit", type=float, default=0.1)
    p.add_argument("--lp-margin", type=float, default=0.3)
    p.add_argument("--launch-ahead", type=int, default=1, help="dispatches a stream may hold behind its running one")
    p.add_argument("--ahead-lead-ms", type=float, default=1.0)
    p.add_argument("--frames", choices=("host", "device"), default="host",
                   help="host: numpy frames uploaded at each release (a decoded camera image); device: on the GPU")
    p.add_argument("--modes", default="off,on", help="batching off and/or on, in this order")
    p.add_argument("--lp-host-busy-limit", type=float, default=1.0,
                   help="the lp_host_busy_limit parameter: LP releases rejected while the loop is busier (1: off)")
    p.add_argument("--input-size", type=int, default=None, help="the model's square input (default: the model's)")
    p.add_argument("--trigger", choices=("clock", "frame"), default="clock",
                   help="clock: every camera's frame always there, released together (a rig); frame: cameras that "
                        "are not synchronised, phases spread over the period, released by release_trigger frame")
    p.add_argument("--release-window", type=float, default=0.0,
                   help="the release_window parameter (--trigger frame): frames released together on this grid, s")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--out", default="docs/benchmarks/engine")
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.seconds:
        p.error("--warmup must be within [0, --seconds)")
    if args.backend == "instant" and args.frames == "device":
        p.error("--backend instant has no device: --frames host")
    if not 0.0 <= args.release_window <= 1.0 or (args.release_window and args.trigger != "frame"):
        p.error("--release-window must be within [0, 1] s, like the release_window parameter, and needs --trigger "
                "frame")
    if not 0.05 <= args.lp_host_busy_limit <= 1.0:
        p.error("--lp-host-busy-limit must be within [0.05, 1] (1: off), like the lp_host_busy_limit parameter")
    import torch

    rows = [run_once(args, mode == "on") for mode in args.modes.split(",")]
    env = {"device": "none (instant backend)" if args.backend == "instant"
           else torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    cmd = "python -m daris_ros.bench.engine_load " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {"command": cmd, **env, "config": {k: v for k, v in vars(args).items() if k != "out"},
           "offered_jps": args.tasks * args.rate, "runs": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_load.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Engine load ({env['date']}, {env['device']}, torch {env['torch']})", "", f"```\n{cmd}\n```", "",
             f"{args.tasks} tasks of {args.model} ({args.precision}{', channels-last' if args.channels_last else ''}) "
             f"at {args.rate:g} Hz released together, offered {args.tasks * args.rate:,.0f} JPS; {args.backend} "
             f"STR 1x{args.streams}, launch-ahead {args.launch_ahead}, {args.frames} frames "
             f"{args.width}x{args.height}"
             + (", released together by the engine's clock." if args.trigger == "clock" else
                f", cameras not synchronised (phases spread over the period), release_trigger frame, release_window "
                f"{args.release_window:g} s."),
             "",
             "| batching | releases/s | host us/release | JPS | HP missed (DMR) | LP DMR | HP p99 ms | LP p99 ms | "
             "admitted / released | skipped | mean batch | loop busy | LP rejected (host) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {'on' if r['batching'] else 'off'} | {r['releases_per_s']:,.0f} | "
                     f"{r['host_us_per_release']} | {r['jps']:,.0f} | {r['hp_missed']} ({r['hp_dmr']}) | "
                     f"{r['lp_dmr']} | {r['hp_p99_ms']} | "
                     f"{r['lp_p99_ms']} | {r['admitted']} / {r['released']} | {r['skipped_releases']} | "
                     f"{r.get('mean_batch', 1)} | {r['loop_busy_share']:.0%} | {r['lp_rejected_host']} |")
    (out / "engine_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
