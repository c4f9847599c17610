"""``daris-bench``: the paper's main experiments and baselines on this GPU, in one command.

    python -m daris_ros.bench.cli --quick                  # ResNet18, a few configurations (~2 min)
    python -m daris_ros.bench.cli --models resnet18,unet,inception_v3,mixed --full
    python -m daris_ros.bench.cli --mps                    # + every green configuration again on 'mps'
    python -m daris_ros.bench.cli --batching default       # cross-task batching + precision (issue 7)
    python -m daris_ros.bench.cli --device cpu --configs cpu:STR:1x2:1 --offered 20 --no-baselines  # no GPU
    python -m daris_ros.bench.cli --params-file config/vehicle.yaml --device cuda:0  # the node's file, its config

Every DARIS configuration runs through the scheduler node's engine (daris_ros/bench/engine_run.py) with synthetic
frames; the baselines are plain torch references (daris_ros/bench/baselines.py). ``--params-file`` takes the node's
own parameter file, validated by the node's code (daris_ros/settings.py), as the base of every configuration.
Writes results.csv, <model>.png, summary.md and summary.json to ``--out`` (docs/benchmarks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from daris_ros.bench import baselines, batching
from daris_ros.bench.engine_run import (
    BenchRun,
    bench_settings,
    describe,
    model_input_size,
    node_scheduler_parameters,
    run_engine,
)
from daris_ros.bench.report import (
    ModelBaselines,
    Row,
    best_row,
    environment,
    git_commit,
    plot_model,
    write_csv,
    write_summary,
)
from daris_ros.bench.workload import MIXED, BenchTask, TaskRate, make_taskset, parse_task_rate
from daris_ros.core import effective_layout
from daris_ros.runtime.engine import to_scheduler_config
from daris_ros.settings import ConfigError, validate_settings

log = logging.getLogger("daris_ros.bench")

Config = tuple[str, str, int, int, float]  # backend, policy, N_c, N_s, OS

QUICK: list[Config] = [
    ("str", "STR", 1, 8, 1.0), ("str", "MPS+STR", 2, 4, 1.0), ("green", "MPS", 4, 1, 2.0),
    ("green", "MPS", 4, 1, 4.0), ("green", "MPS+STR", 4, 2, 2.0), ("green", "MPS+STR", 3, 3, 2.0),
]
ABLATIONS = ("no_staging", "no_last", "no_prior", "no_fixed")


def full_configs() -> list[Config]:
    out: list[Config] = [("str", "STR", 1, n, 1.0) for n in range(2, 11)]
    for nc in range(2, 11):
        for os_ in sorted({1.0, 1.5, 2.0, float(nc)}):
            out.append(("green", "MPS", nc, 1, os_))
    for nc in range(2, 6):
        for os_ in sorted({1.0, 1.5, 2.0, float(nc)}):
            out.append(("green", "MPS+STR", nc, 2, os_))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="daris-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18", help="comma list of resnet18, unet, inception_v3, mixed")
    p.add_argument("--quick", action="store_true", help="a short sweep (the default)")
    p.add_argument("--full", action="store_true", help="N_p = 2..10 under STR / MPS / MPS+STR, OS in {1,1.5,2,N_c}")
    p.add_argument("--configs", default="", help="explicit configs 'backend:policy:NcxNs:OS,...' (overrides)")
    p.add_argument("--ablations", default="", help="comma list of models (or 'all') that get No Staging / No Last / "
                   "No Prior / No Fixed runs at their best configuration")
    p.add_argument("--seconds", type=float, default=3.0, help="release window per run")
    p.add_argument("--warmup", type=float, default=0.5,
                   help="seconds at the start of the release window not counted in JPS (pipeline fill); the "
                   "whole-window rate is reported as jps_window")
    p.add_argument("--releases", choices=("spread", "rig"), default="spread",
                   help="spread: each task's releases phased over its period (the paper's task sets); rig: every "
                   "task released at the same instants (a hardware-triggered camera rig)")
    p.add_argument("--baseline-seconds", type=float, default=2.0)
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the baselines (give the load with --offered)")
    p.add_argument("--offered", type=float, default=0.0, metavar="JPS",
                   help="offered load in jobs/s (default: 150%% of --load-reference, measured in the run)")
    p.add_argument("--task-rate", type=_task_rate_arg, default=30.0,
                   help="Hz per camera task (deadline = period), or 'paper' for the paper's per-model rates "
                        "(Table II: ResNet18 30 Hz, UNet and InceptionV3 24 Hz)")
    p.add_argument("--input-size", type=_size_arg, default=None, metavar="HxW",
                   help="frame and model input size of every task (default: each model's own, 224x224; "
                   "InceptionV3 299x299)")
    p.add_argument("--load-reference", choices=("ceiling", "upper"), default="ceiling",
                   help="150%% of the batch-1 ceiling (default) or of the batching upper baseline (the paper)")
    p.add_argument("--hp-admission", action="store_true", help="Overload+HPA: HP jobs pass the admission test too")
    p.add_argument("--reprobe-after", type=int, default=0,
                   help="the engine's reprobe_after (forget a task's MRET after N rejections in a row); 0, the "
                   "paper's rule, by default (the node's default is 100)")
    p.add_argument("--skip-late", type=float, default=0.0,
                   help="the engine's skip_late (skip a job not started within this many deadlines of its release; "
                   "docs/policy.md); 0, the paper's rule (every admitted job runs), by default (the node's default is "
                   "2)")
    p.add_argument("--no-graphs", action="store_true", help="eager stages instead of CUDA graphs")
    p.add_argument("--mret-source", choices=("events",), default="events",
                   help="kept for old command lines: the engine feeds MRET the backend's measured stage time "
                   "(CUDA events on a GPU); the old bench loop's host-observed times are gone")
    p.add_argument("--params-file", default="", metavar="YAML",
                   help="the scheduler node's parameter file (its 'daris_scheduler' or '/**' ros__parameters), checked "
                        "as the node checks it (exit 2 naming the parameter): its scheduler parameters are the base of "
                        "every configuration instead of the bench's paper defaults; a configuration sets backend, "
                        "policy, N_c, N_s and OS (without --configs: one configuration, the file's), --device sets the "
                        "device, and the options above win where they differ from their defaults. The tasks are the "
                        "bench's (--models, --offered), not the file's")
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--afet-cache", default="", help="AFET cache file (default <out>/afet_cache.json)")
    p.add_argument("--device", default="cuda", help="cuda[:N], or cpu (cpu backend configurations only)")
    p.add_argument("--mps", action="store_true",
                   help="also run every green configuration on the mps backend (same task set, N_c x N_s, OS): "
                   "MPS client processes vs green contexts in one run")
    p.add_argument("--mps-pipe-dir", default="", help="MPS pipe directory (default: DARIS_MPS_PIPE_DIRECTORY, "
                   "CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps); a daemon is started there if none runs")
    batching.add_arguments(p)  # --batching MODES: the batching bench (daris_ros/bench/batching.py)
    args = p.parse_args(argv)
    if not 0.0 <= args.warmup < args.seconds:
        p.error(f"--warmup must be within [0, --seconds) (got {args.warmup:g} and {args.seconds:g})")
    if args.no_baselines and args.offered <= 0 and not args.batching:
        p.error("--no-baselines needs --offered JPS (the baselines set the load otherwise)")
    return args


def parse_configs(text: str) -> list[Config]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        backend, policy, layout, os_ = item.split(":")
        nc, ns = (int(v) for v in layout.lower().split("x"))
        out.append((backend, policy.upper(), nc, ns, float(os_)))
    return out


def _task_rate_arg(text: str) -> TaskRate:
    try:
        return parse_task_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--task-rate: ")) from None


def _size_arg(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 16:
        raise argparse.ArgumentTypeError(f"expected HxW or N with sides >= 16, got {text!r}")
    return parts[0], parts[1]


def input_size_of(args: argparse.Namespace) -> Any:
    """model -> the frame size of its tasks: ``--input-size``, else the model's own."""
    return (lambda _model: args.input_size) if args.input_size else model_input_size


def phases_of(tasks: list[BenchTask], args: argparse.Namespace) -> dict[str, float] | None:
    """Each task's first release after the window opens (``--releases spread``), or None (a rig)."""
    return {t.name: t.phase for t in tasks} if args.releases == "spread" else None


def _harmonic(values: list[float]) -> float:
    return len(values) / sum(1.0 / v for v in values) if values and all(values) else 0.0


def measure_baselines(name: str, models: tuple[str, ...], dev: torch.device, args: argparse.Namespace
                      ) -> ModelBaselines:
    """Lower, upper, ceilings (harmonic mean over the models of a mixed set) and naive at the offered load. On the
    CPU only lower and naive (upper and the ceilings are CUDA graphs); with ``--no-baselines`` none."""
    size = args.input_size
    ref_name = "offered" if args.offered > 0 else args.load_reference
    if args.no_baselines:
        return ModelBaselines(0.0, 0.0, 0, {}, 0.0, 0.0, 0.0, 0, 0.0, 0.0, ref_name, args.offered)
    secs = args.baseline_seconds
    gpu = dev.type == "cuda"
    lows, ups, ceils, staged = [], [], [], []
    for m in models:
        lows.append(baselines.lower_jps(m, dev, secs, input_size=size))
        if gpu:
            ups.append(baselines.upper_batching(m, dev, seconds=secs / 2, input_size=size))
            ceils.append(baselines.b1_ceiling(m, dev, 8, secs, input_size=size))
            staged.append(baselines.b1_ceiling(m, dev, 8, secs, staged=True, input_size=size))
    lower, ceiling, ceiling_staged = _harmonic(lows), _harmonic(ceils), _harmonic(staged)
    upper = _harmonic([u.best_jps for u in ups])
    if args.offered > 0:
        offered = args.offered
    else:
        ref = ceiling if args.load_reference == "ceiling" else upper
        if not ref:
            raise SystemExit(f"the {args.load_reference} baseline needs a CUDA GPU: give the load with --offered JPS")
        offered = 1.5 * ref
    tasks = make_taskset(models, offered, args.task_rate)
    nv = baselines.naive([t.model for t in tasks], dev, [t.period for t in tasks],
                         [t.priority.name == "HP" for t in tasks], seconds=secs, input_size=size)
    log.info("%s: lower %.0f, upper %.0f (bs %s), ceiling %.0f / staged %.0f, naive %.0f JPS (%d threads, "
             "their first jobs took %.1f s before the window)", name, lower, upper, [u.best_batch for u in ups],
             ceiling, ceiling_staged, nv.jps, nv.n_threads, nv.warmup_s)
    if gpu:
        torch.cuda.empty_cache()
    by_batch = {bs: _harmonic([u.by_batch[bs] for u in ups]) for bs in ups[0].by_batch
                if all(bs in u.by_batch for u in ups)} if ups else {}  # a mixed set: the JPS of a 1:1:1 job mix
    return ModelBaselines(lower, upper, ups[0].best_batch if ups else 0, by_batch, nv.jps, nv.hp_dmr, nv.lp_dmr,
                          nv.n_threads, ceiling, ceiling_staged, ref_name, offered, {"naive_warmup_s": nv.warmup_s})


def bench_option_params(args: argparse.Namespace) -> dict[str, Any]:
    """The scheduler parameters the bench's options set (``--hp-admission`` ... ``--mps-pipe-dir``): all of them
    without ``--params-file``; with it, only those that differ from the option's default (the file's values stand)."""
    options = {"hp_admission": (args.hp_admission, False), "cuda_graphs": (not args.no_graphs, True),
               "reprobe_after": (args.reprobe_after, 0), "skip_late": (args.skip_late, 0.0),
               "mps_pipe_directory": (args.mps_pipe_dir, "")}
    from_file = bool(getattr(args, "params_file", ""))
    return {name: value for name, (value, default) in options.items() if not from_file or value != default}


def base_params(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters every configuration starts from: the ``--params-file``'s scheduler parameters (read by
    :func:`main` into ``args.file_params``), else the bench's (the paper's behaviour: no re-probe, no skipping)."""
    if getattr(args, "params_file", ""):
        return dict(args.file_params)
    return {"afet_profile": "auto", "afet_cache": args.afet_cache or str(Path(args.out) / "afet_cache.json")}


def config_params(cfg: Config, args: argparse.Namespace, ablation: str = "") -> dict[str, Any]:
    """The engine's parameters (the node's, as in a parameter file) for one bench configuration."""
    backend, policy, nc, ns, os_ = cfg
    params = {**base_params(args), **bench_option_params(args), "policy": policy, "backend": backend,
              "device": args.device, "n_contexts": nc, "n_streams": ns, "oversubscription": os_}
    if args.afet_cache:
        params["afet_cache"] = args.afet_cache
    if ablation or not getattr(args, "params_file", ""):
        params.update({a: a == ablation for a in ABLATIONS})
    if params.get("no_staging"):  # the cache is keyed by model, not by staging: a merged model is profiled every time
        params["afet_cache"] = ""
    return params


def file_config(args: argparse.Namespace) -> Config:
    """The configuration of the ``--params-file`` (its backend, policy, N_c, N_s, OS)."""
    s = validate_settings(args.file_params, ())
    return s.backend, s.policy, s.n_contexts, s.n_streams, s.oversubscription


def run_config(name: str, models: tuple[str, ...], cfg: Config, offered: float, args: argparse.Namespace,
               kind: str = "daris", ablation: str = "") -> list[Row]:
    """One configuration: a fresh engine with the task set at ``offered`` JPS."""
    tasks = make_taskset(models, offered, args.task_rate)
    try:
        settings = bench_settings(config_params(cfg, args, ablation), tasks, input_size_of(args))
        run = run_engine(settings, seconds=args.seconds, warmup=args.warmup, phases=phases_of(tasks, args))
    except Exception:  # noqa: BLE001 - one configuration that cannot run (no GPU feature, OOM...) ends only itself
        log.exception("%s %s %s: failed", name, kind, cfg)
        return []
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    layout = effective_layout(to_scheduler_config(settings))
    return [_row(name, kind, cfg, layout, settings.cuda_graphs and cfg[0] != "cpu", run)]


def _row(name: str, kind: str, cfg: Config, layout: Any, graphs: bool, run: BenchRun) -> Row:
    backend, policy = cfg[0], cfg[1]
    row = Row(name, kind, backend, policy, layout.n_contexts, layout.n_streams, layout.oversubscription, graphs,
              run.offered_jps, run.jps, run.dmr("HP"), run.dmr("LP"), run.p99_ms["HP"], run.p99_ms["LP"],
              run.lp_admit_rate, run.released["HP"], run.released["LP"], run.migrations, run.cpu_us_per_job,
              run.release_us_per_job, run.cpu_us_per_job - run.release_us_per_job,
              "/".join(str(s) for s in sorted(set(run.sm_counts))),
              "; ".join(f"{m}: " + "/".join(f"{v * 1e3:.2f}" for v in st) for m, st in run.afet.items()),
              run.host_us_per_release, run.jps_window)
    log.info("%s %s %s %s: %s", name, kind, f"{backend}:{policy}", row.config, describe(run))
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    if args.params_file:
        try:
            args.file_params = node_scheduler_parameters(args.params_file)
        except (ConfigError, OSError) as exc:
            print(f"daris-bench: invalid parameter file {args.params_file}: {exc}", file=sys.stderr)
            return 2
    on_cpu = args.device == "cpu"
    if not on_cpu and not torch.cuda.is_available():
        print("daris-bench needs a CUDA GPU (torch.cuda.is_available() is False); for the cpu backend give "
              "--device cpu --configs cpu:...", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if not on_cpu:
        torch.backends.cudnn.benchmark = True
    command = batching.command_line(argv, sys.argv[1:])
    if args.batching:
        if args.params_file:
            print("daris-bench --batching runs its own modes: it takes no --params-file", file=sys.stderr)
            return 2
        if on_cpu:
            print("daris-bench --batching needs a CUDA GPU (its upper baselines are CUDA graphs)", file=sys.stderr)
            return 2
        return batching.main_batching(args, argv, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.configs:
        configs = parse_configs(args.configs)
    elif args.params_file:
        configs = [file_config(args)]
    else:
        configs = full_configs() if args.full else QUICK
    if args.mps:
        configs = with_mps(configs)
    if on_cpu and any(c[0] != "cpu" for c in configs):
        print("--device cpu runs the cpu backend only: give --configs cpu:POLICY:NcxNs:OS,...", file=sys.stderr)
        return 2
    if args.mps_pipe_dir:
        os.environ["DARIS_MPS_PIPE_DIRECTORY"] = args.mps_pipe_dir
    daemon = None
    if any(c[0] == "mps" for c in configs):  # one daemon for the whole run (each backend uses it)
        from daris_ros.runtime.backends import BackendError
        from daris_ros.runtime.backends.mps_daemon import MpsDaemon

        torch.zeros(1, device=dev)  # this process's own CUDA context exists before MPS starts: it is no MPS client
        daemon = MpsDaemon()
        try:
            daemon.ensure()
        except BackendError as exc:
            log.error("no mps runs: %s", exc)
            configs = [c for c in configs if c[0] != "mps"]
            daemon = None
    try:
        return _run(args, configs, out, dev, command)
    finally:
        if daemon is not None:
            daemon.stop()


def with_mps(configs: list[Config]) -> list[Config]:
    """``configs`` with each green configuration followed by the same one on ``mps``."""
    out: list[Config] = []
    for c in configs:
        out.append(c)
        if c[0] == "green" and ("mps", *c[1:]) not in configs:
            out.append(("mps", *c[1:]))
    return out


def _run(args: argparse.Namespace, configs: list[Config], out: Path, dev: torch.device, command: str) -> int:
    rows: list[Row] = []
    bases: dict[str, ModelBaselines] = {}
    for name in filter(None, (s.strip() for s in args.models.split(","))):
        models = MIXED if name == "mixed" else (name,)
        bases[name] = measure_baselines(name, models, dev, args)
        for cfg in configs:
            rows.extend(run_config(name, models, cfg, bases[name].offered_jps, args))
        best, _ = best_row([r for r in rows if r.model == name])
        if best is not None and (args.ablations == "all" or name in args.ablations.split(",")):
            cfg = (best.backend, best.policy, best.n_contexts, best.n_streams, best.oversubscription)
            for ab in ABLATIONS:
                rows.extend(run_config(name, models, cfg, bases[name].offered_jps, args, f"ablation:{ab}", ab))
        write_csv(out / "results.csv", rows)
        plot_model(out / f"{name}.png", name, rows, bases[name])
    size = (f"{args.input_size[0]}x{args.input_size[1]}" if args.input_size
            else "each model's default input size (224x224; InceptionV3 299x299)")
    notes = [
        "DARIS runs: the scheduler node's engine (daris_ros/runtime/engine.py, through daris_ros/bench/engine_run.py), "
        "a fresh one per configuration: its loop thread releases every task from its own clock, takes the task's "
        "frame, preprocesses each release burst as a batch, asks the policy core to admit, dispatch and complete, "
        "launches on the backend and post-processes every result.",
        f"Frames: synthetic uint8 RGB frames at {size}, one per size, set once per task (a camera that always has a "
        "new frame); already on the GPU for str and green (decoding and the host-to-device copy of real cameras "
        "are not measured), host arrays for cpu and mps (mps workers preprocess them); random weights; fp32 (TF32 "
        "convolutions); per-stage CUDA graphs unless --no-graphs.",
        f"Releases: {'phased over each period (golden-ratio phases)' if args.releases == 'spread' else 'a rig'}; "
        f"JPS = jobs finished in [{args.warmup:g} s, {args.seconds:g} s] of the release window over its length "
        "(jps_window in results.csv: the whole window); DMR = missed / finished admitted jobs; LP admitted = admitted "
        "/ released LP jobs (the rest were rejected by the admission test, eq. 12); AFET profiled by the engine "
        "(full load on a GPU), MRET fed with the backend's measured stage times (CUDA events).",
        "CPU us/job: the engine loop thread's CPU time per finished job, split into releases (take frames, "
        "decode, admission, preprocessing) + the rest (completions, dispatches, launches, post-processing); host "
        "us/release: the same per release (EngineSnapshot.loop). Python's garbage collector is paused in the window.",
        "mixed: tasks cycle over ResNet18, UNet, InceptionV3; its baselines are the harmonic means of the three "
        "models' (the JPS of a 1:1:1 job mix); naive runs each task's own model.",
        "green = SM-partitioned green contexts (driver API) in one process, the in-process counterpart of the "
        "paper's MPS contexts; str = plain CUDA streams (contexts are stream groups, no SM limit).",
    ]
    if any(c[0] == "mps" for c in configs):
        notes.append("mps = one MPS client process per context (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE from eq. 9; "
                     "SMs/ctx as each worker's device properties report them), N_s streams and per-stage CUDA graphs "
                     "in each, driven by the same engine through the backend's launch/poll.")
    env = environment()
    if dev.type == "cpu":
        env["device"] = "cpu"
    write_summary(out, rows, bases, env, command, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), notes,
                  git_commit())
    write_csv(out / "results.csv", rows)
    print((out / "summary.md").read_text())
    if configs and not rows:
        log.error("no configuration ran (see the errors above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
