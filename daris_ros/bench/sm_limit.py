"""The 12-camera vehicle set on the scheduler node's engine, on the whole GPU and confined to ``sm_limit`` SMs.

    python -m daris_ros.bench.sm_limit --limits 0,16 --configs green:MPS:2x1:1,str:STR:1x3:1 --out DIR

``sm_limit = 16`` (a Jetson AGX Orin's SM count) makes the node on an H100 a stand-in for an edge GPU: a node
that shares its GPU with lidar, planning and display (docs/gpu_runtime.md, "A node that shares its GPU"). The
camera set is daris-node-e2e's group of 12 (:data:`~daris_ros.bench.node_e2e.DEFAULT_GROUP`: 4 HP front cameras
on ResNet50, 4 LP side cameras on ResNet18, 4 LP rear cameras on UNet), HP at ``--rate`` and LP at ``--lp-rate``,
deadline = period, each camera on its own phase. Each (configuration, limit) is one run of
:func:`~daris_ros.bench.engine_run.run_engine`: the node's engine (profiling, the policy core, the backend, the
loop) with a frame always ready per camera, no DDS. Writes ``sm_limit.json`` (every run's figures, the AFETs
profiled under the limit, the SMs per context the backend reports) and ``sm_limit.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from daris_ros.bench.node_e2e import DEFAULT_GROUP, Camera, git_commit, make_cameras, parse_group


def vehicle_tasks(cams: list[Camera], precision: str, channels_last: bool) -> tuple[Any, ...]:
    """The cameras as the node's tasks (deadline = period; the group's input size, else the model's own)."""
    from daris_ros.bench.engine_run import model_input_size
    from daris_ros.settings import TaskSettings

    return tuple(TaskSettings(name=c.task, topic=c.topic, priority=c.priority, period=c.period, deadline=c.period,
                              model=c.model, input_size=c.input_size or model_input_size(c.model),
                              output_topic=c.result_topic,
                              precision=precision, channels_last=channels_last) for c in cams)


def parse_config(text: str) -> dict[str, Any]:
    """``backend:policy:NcxNs:OS`` -> the node's parameters for it."""
    try:
        backend, policy, layout, os_text = text.split(":")
        n_c, n_s = (int(v) for v in layout.lower().split("x"))
        return {"backend": backend, "policy": policy.upper(), "n_contexts": n_c, "n_streams": n_s,
                "oversubscription": float(os_text)}
    except ValueError:
        raise ValueError(f"configuration {text!r}: expected backend:policy:NcxNs:OS, e.g. green:MPS:2x1:1") from None


def run_one(args: argparse.Namespace, config: dict[str, Any], sm_limit: int, cams: list[Camera]) -> dict[str, Any]:
    from daris_ros.bench.engine_run import describe, run_engine
    from daris_ros.settings import validate_settings

    params = {**config, "device": args.device, "sm_limit": sm_limit, "profile_runs": args.profile_runs,
              "launch_ahead": args.launch_ahead}
    settings = validate_settings(params, vehicle_tasks(cams, args.precision, args.channels_last))
    phases = {c.task: c.period * i / len(cams) for i, c in enumerate(cams)}  # each camera on its own phase
    label = f"{config['backend']}:{config['policy']}:{config['n_contexts']}x{config['n_streams']}:" \
            f"{config['oversubscription']:g} sm_limit={sm_limit or 'none'}"
    try:
        run = run_engine(settings, seconds=args.seconds, warmup=args.warmup, phases=phases)
    except Exception as exc:  # noqa: BLE001 - one failed configuration is reported, the others still run
        print(f"{label}: FAILED {type(exc).__name__}: {exc}", flush=True)
        return {"config": config, "sm_limit": sm_limit, "error": f"{type(exc).__name__}: {exc}"}
    print(f"{label}: SMs per context {run.sm_counts}: {describe(run)}", flush=True)
    return {"config": config, "sm_limit": sm_limit, "sm_counts": run.sm_counts, "offered_jps": run.offered_jps,
            "jps": run.jps, "released": run.released, "admitted": run.admitted, "completed": run.completed,
            "missed": run.missed, "dmr": {p: run.dmr(p) for p in ("HP", "LP")}, "p99_ms": run.p99_ms,
            "lp_admit_rate": run.lp_admit_rate, "errors": run.errors, "undrained": run.undrained,
            "migrations": run.migrations, "setup_s": run.setup_s,
            "afet_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in run.afet.items()}}


def render_md(doc: dict[str, Any]) -> str:
    lines = [f"# {doc['n_cameras']} cameras with and without sm_limit ({doc['date']}, {doc['device']})", "",
             f"```bash\n{doc['command']}\n```", "", f"Commit {doc['commit']}. {doc['cameras']}", "",
             "| configuration | sm_limit | SMs per context | offered JPS | JPS | HP DMR | LP DMR | LP admitted | "
             "HP p99 ms | LP p99 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        c = r["config"]
        name = f"{c['backend']}:{c['policy']}:{c['n_contexts']}x{c['n_streams']}:OS {c['oversubscription']:g}"
        limit = r["sm_limit"] or "none"
        if "error" in r:
            lines.append(f"| {name} | {limit} | failed: {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {name} | {limit} | {r['sm_counts']} | {r['offered_jps']:.0f} | {r['jps']:.1f} | "
                     f"{r['dmr']['HP']:.4f} | {r['dmr']['LP']:.4f} | {r['lp_admit_rate']:.2f} | "
                     f"{r['p99_ms']['HP']:.1f} | {r['p99_ms']['LP']:.1f} |")
    lines += ["", "AFET per stage (ms), profiled by each run under its limit:", ""]
    for r in doc["runs"]:
        if "afet_ms" in r:
            c = r["config"]
            lines.append(f"- {c['backend']} sm_limit={r['sm_limit'] or 'none'}: "
                         + "; ".join(f"{k}: {v}" for k, v in r["afet_ms"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.bench.sm_limit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limits", default="0,16", help="sm_limit values (0: the whole device)")
    p.add_argument("--configs", default="green:MPS:2x1:1,str:STR:1x3:1",
                   help="backend:policy:NcxNs:OS, comma-separated")
    p.add_argument("--group", default=DEFAULT_GROUP, help="the 12 cameras: PRIORITY:MODEL:COUNT,...")
    p.add_argument("--rate", type=float, default=30.0, help="HP cameras' rate (Hz)")
    p.add_argument("--lp-rate", type=float, default=15.0, help="LP cameras' rate (Hz)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--profile-runs", type=int, default=5)
    p.add_argument("--launch-ahead", type=int, default=0)
    p.add_argument("--commit", default="", help="the commit measured (default: git's HEAD)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/sm_limit"))
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.seconds:
        p.error("--warmup must be within [0, --seconds)")
    try:
        configs = [parse_config(c) for c in args.configs.split(",")]
        cams = make_cameras(sum(g.cameras for g in parse_group(args.group)), parse_group(args.group), args.rate,
                            args.lp_rate, prefix="/vehicle")
    except ValueError as exc:
        p.error(str(exc))
    limits = [int(v) for v in args.limits.split(",")]
    import torch

    hp = sum(c.priority == "HP" for c in cams)
    described = (f"{len(cams)} cameras ({args.group}): {hp} HP at {args.rate:g} Hz, {len(cams) - hp} LP at "
                 f"{args.lp_rate:g} Hz, deadline = period, {args.precision}"
                 f"{', channels-last' if args.channels_last else ''}; {args.seconds:g} s window, the first "
                 f"{args.warmup:g} s not counted.")
    doc = {"command": "python -m daris_ros.bench.sm_limit " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "device": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
           else "cpu", "device_sms": torch.cuda.get_device_properties(torch.device(args.device)).multi_processor_count
           if args.device.startswith("cuda") else None, "torch": torch.__version__,
           "commit": args.commit or git_commit(Path(__file__).resolve().parents[2]),
           "n_cameras": len(cams), "cameras": described}
    runs: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for config in configs:
        for limit in limits:
            runs.append(run_one(args, config, limit, cams))
            doc["runs"] = runs  # (rewritten after every run: a time limit keeps the runs that finished)
            (args.out / "sm_limit.json").write_text(json.dumps(doc, indent=2) + "\n")
            (args.out / "sm_limit.md").write_text(render_md(doc))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
