"""``daris-bench``: the paper's main experiments and baselines on this GPU, in one command.

    python -m daris_ros.bench.cli --quick                  # ResNet18, a few configurations (~2 min)
    python -m daris_ros.bench.cli --models resnet18,unet,inception_v3,mixed --full
    python -m daris_ros.bench.cli --mps                    # + every green configuration again on 'mps'
    python -m daris_ros.bench.cli --batching default       # cross-task batching + precision (issue 7)

Writes results.csv, <model>.png, summary.md and summary.json to ``--out`` (docs/benchmarks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from daris_ros.bench import baselines, batching
from daris_ros.bench.report import ModelBaselines, Row, best_row, environment, plot_model, write_csv, write_summary
from daris_ros.bench.runner import run_daris
from daris_ros.bench.runner_mps import run_daris_mps, run_daris_mps_local
from daris_ros.bench.workload import MIXED, TaskRate, make_taskset, parse_task_rate
from daris_ros.core import Policy, SchedulerConfig, effective_layout
from daris_ros.runtime.backends import BackendError, create_backend
from daris_ros.runtime.models import build_staged_model
from daris_ros.runtime.profiling import AfetCache, profile_afet

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
    p.add_argument("--baseline-seconds", type=float, default=2.0)
    p.add_argument("--task-rate", type=_task_rate_arg, default=30.0,
                   help="Hz per camera task (deadline = period), or 'paper' for the paper's per-model rates "
                        "(Table II: ResNet18 30 Hz, UNet and InceptionV3 24 Hz)")
    p.add_argument("--load-reference", choices=("ceiling", "upper"), default="ceiling",
                   help="150%% of the batch-1 ceiling (default) or of the batching upper baseline (the paper)")
    p.add_argument("--hp-admission", action="store_true", help="Overload+HPA: HP jobs pass the admission test too")
    p.add_argument("--no-graphs", action="store_true", help="eager stages instead of CUDA graphs")
    p.add_argument("--mret-source", choices=("events", "host"), default="events",
                   help="stage time fed to MRET: CUDA events (GPU time) or host-observed (launch to completion seen)")
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--afet-cache", default="", help="AFET cache file (default <out>/afet_cache.json)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--mps", action="store_true",
                   help="also run every green configuration on the mps backend (same task set, N_c x N_s, OS): "
                   "MPS client processes vs green contexts in one run")
    p.add_argument("--mps-mode", choices=("stage", "local", "both"), default="both",
                   help="mps runs: the core dispatches every stage through the workers (stage), the workers run "
                   "their contexts' stage queues with admission/migration here (local), or both from one start")
    p.add_argument("--mps-frames", choices=("shm", "resident"), default="shm",
                   help="mps runs: each job's frame goes through shared memory (default) or the worker's resident "
                   "example input is used (no transfer, like the in-process runs)")
    p.add_argument("--mps-pipe-dir", default="", help="MPS pipe directory (default: DARIS_MPS_PIPE_DIRECTORY, "
                   "CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps); a daemon is started there if none runs")
    batching.add_arguments(p)  # --batching MODES: the batching bench (daris_ros/bench/batching.py)
    return p.parse_args(argv)


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


def _harmonic(values: list[float]) -> float:
    return len(values) / sum(1.0 / v for v in values)


def measure_baselines(name: str, models: tuple[str, ...], dev: torch.device, args: argparse.Namespace
                      ) -> ModelBaselines:
    """Lower, upper, ceilings (harmonic mean over the models of a mixed set) and naive at the offered load."""
    secs = args.baseline_seconds
    lows, ups, ceils, staged = [], [], [], []
    for m in models:
        lows.append(baselines.lower_jps(m, dev, secs))
        ups.append(baselines.upper_batching(m, dev, seconds=secs / 2))
        ceils.append(baselines.b1_ceiling(m, dev, 8, secs))
        staged.append(baselines.b1_ceiling(m, dev, 8, secs, staged=True))
    lower, ceiling, ceiling_staged = _harmonic(lows), _harmonic(ceils), _harmonic(staged)
    upper = _harmonic([u.best_jps for u in ups])
    ref = ceiling if args.load_reference == "ceiling" else upper
    offered = 1.5 * ref
    tasks = make_taskset(models, offered, args.task_rate)
    nv = baselines.naive([t.model for t in tasks], dev, [t.period for t in tasks],
                         [t.priority.name == "HP" for t in tasks], seconds=secs)
    log.info("%s: lower %.0f, upper %.0f (bs %s), ceiling %.0f / staged %.0f, naive %.0f JPS (%d threads, "
             "their first jobs took %.1f s before the window)", name, lower, upper, [u.best_batch for u in ups],
             ceiling, ceiling_staged, nv.jps, nv.n_threads, nv.warmup_s)
    torch.cuda.empty_cache()
    by_batch = {bs: _harmonic([u.by_batch[bs] for u in ups]) for bs in ups[0].by_batch
                if all(bs in u.by_batch for u in ups)}  # a mixed set: the JPS of a 1:1:1 mix at each batch size
    return ModelBaselines(lower, upper, ups[0].best_batch, by_batch, nv.jps, nv.hp_dmr, nv.lp_dmr,
                          nv.n_threads, ceiling, ceiling_staged, args.load_reference, offered,
                          {"naive_warmup_s": nv.warmup_s})


def _runners(backend_name: str, args: argparse.Namespace) -> list[str]:
    """The runs one backend start serves: ``mps`` -> stage mode and/or worker-side mode (``--mps-mode``)."""
    if backend_name == "mps":
        return {"stage": ["mps"], "local": ["mps-local"], "both": ["mps", "mps-local"]}[args.mps_mode]
    return [backend_name]


def run_config(name: str, models: tuple[str, ...], cfg: Config, offered: float, args: argparse.Namespace,
               cache: AfetCache, kind: str = "daris", ablation: str = "") -> list[Row]:
    """One configuration (one backend start); ``mps`` may give two rows (stage mode, worker-side mode)."""
    backend_name, policy, nc, ns, os_ = cfg
    flags = {a: a == ablation for a in ABLATIONS}
    layout = effective_layout(SchedulerConfig(policy=Policy.parse(policy), n_contexts=nc, n_streams=ns,
                                              oversubscription=os_))
    create = "mps" if backend_name.startswith("mps") else backend_name
    try:
        backend = create_backend(create, n_contexts=layout.n_contexts, n_streams=layout.n_streams,
                                 device=args.device, oversubscription=layout.oversubscription,
                                 cuda_graphs=not args.no_graphs)
    except BackendError as exc:
        log.error("%s %s: %s", name, cfg, exc)
        return []
    results = []
    try:
        staged = {m: build_staged_model(m) for m in dict.fromkeys(models)}
        backend.start({m: (s.merged() if flags["no_staging"] else s) for m, s in staged.items()})
        key_suffix = ":merged" if flags["no_staging"] else ""
        profile = backend.profile_afet if create == "mps" else functools.partial(profile_afet, backend)
        afet = profile(list(staged), cache=cache) if not key_suffix else profile(list(staged))
        config = SchedulerConfig(policy=Policy.parse(policy), n_contexts=nc, n_streams=ns, oversubscription=os_,
                                 n_sm_max=backend.n_sm_max, sm_granularity=backend.sm_granularity,
                                 hp_admission=args.hp_admission, **flags)
        tasks = make_taskset(models, offered, args.task_rate)
        labels = _runners(backend_name, args) if not kind.startswith("ablation") else [backend_name]
        for label in labels:
            if label == "mps-local" and args.hp_admission:
                log.error("%s %s: the worker-side mode has no HP admission (Overload+HPA)", name, cfg)
                continue
            if label == "mps":
                res = run_daris_mps(backend, config, tasks, afet, seconds=args.seconds,
                                    mret_source=args.mret_source, frames=args.mps_frames)
            elif label == "mps-local":
                res = run_daris_mps_local(backend, config, tasks, afet, seconds=args.seconds,
                                          mret_source=args.mret_source, frames=args.mps_frames)
            else:
                res = run_daris(backend, config, tasks, afet, seconds=args.seconds, mret_source=args.mret_source)
            results.append((label, res))
        sms = backend.sm_counts() if hasattr(backend, "sm_counts") else [backend.n_sm_max] * layout.n_contexts
    except (BackendError, ValueError) as exc:
        log.error("%s %s: %s", name, cfg, exc)
        return []
    finally:
        backend.close()
        del backend
        gc.collect()
        torch.cuda.empty_cache()
    return [_row(name, kind, label, policy, layout, args, res, sms, afet) for label, res in results]


def _row(name: str, kind: str, label: str, policy: str, layout: Any, args: argparse.Namespace, res: Any,
         sms: list[int], afet: dict[str, tuple[float, ...]]) -> Row:
    lp_admit = res.admitted["LP"] / res.released["LP"] if res.released["LP"] else 0.0
    row = Row(name, kind, label, policy, layout.n_contexts, layout.n_streams, layout.oversubscription,
              not args.no_graphs, res.offered_jps, res.jps, res.dmr("HP"), res.dmr("LP"), res.p99_ms["HP"],
              res.p99_ms["LP"], lp_admit, res.released["HP"], res.released["LP"], res.migrations,
              res.cpu_us_per_job, res.core_us_per_job, res.launch_us_per_job,
              "/".join(str(s) for s in sorted(set(sms))),
              "; ".join(f"{m}: " + "/".join(f"{v * 1e3:.2f}" for v in st) for m, st in afet.items()),
              float(res.extra.get("worker_cpu_us_per_job", 0.0)), float(res.extra.get("rt_overhead_us_p50", 0.0)))
    if res.extra:
        log.info("%s %s %s: %s", name, label, row.config, {k: (round(v, 1) if isinstance(v, float) else v)
                                                           for k, v in res.extra.items()})
    log.info("%s %s %s %s: %.0f JPS, HP DMR %.3f, LP DMR %.3f, LP admitted %.2f, CPU %.0f us/job (core %.0f)",
             name, kind, f"{label}:{policy}", row.config, row.jps, row.hp_dmr, row.lp_dmr, lp_admit,
             row.cpu_us_per_job, row.core_us_per_job)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    if not torch.cuda.is_available():
        print("daris-bench needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    dev = torch.device(args.device if args.device != "cpu" else "cuda")
    torch.backends.cudnn.benchmark = True
    if args.batching:
        return batching.main_batching(args, argv, batching.command_line(argv, sys.argv[1:]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = AfetCache(args.afet_cache or out / "afet_cache.json")
    configs = parse_configs(args.configs) if args.configs else (full_configs() if args.full else QUICK)
    if args.mps:
        configs = with_mps(configs)
    if args.mps_pipe_dir:
        os.environ["DARIS_MPS_PIPE_DIRECTORY"] = args.mps_pipe_dir
    daemon = None
    if any(c[0].startswith("mps") for c in configs):  # one daemon for the whole run (each backend uses it)
        from daris_ros.runtime.backends.mps_daemon import MpsDaemon

        torch.zeros(1, device=dev)  # this process's own CUDA context exists before MPS starts: it is no MPS client
        daemon = MpsDaemon()
        try:
            daemon.ensure()
        except BackendError as exc:
            log.error("no mps runs: %s", exc)
            configs = [c for c in configs if not c[0].startswith("mps")]
            daemon = None
    command = "python -m daris_ros.bench.cli " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                     else sys.argv[1:]))
    try:
        return _run(args, configs, cache, out, dev, command)
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


def _run(args: argparse.Namespace, configs: list[Config], cache: AfetCache, out: Path, dev: torch.device,
         command: str) -> int:
    rows: list[Row] = []
    bases: dict[str, ModelBaselines] = {}
    for name in filter(None, (s.strip() for s in args.models.split(","))):
        models = MIXED if name == "mixed" else (name,)
        bases[name] = measure_baselines(name, models, dev, args)
        for cfg in configs:
            rows.extend(run_config(name, models, cfg, bases[name].offered_jps, args, cache))
        best, _ = best_row([r for r in rows if r.model == name])
        if best is not None and (args.ablations == "all" or name in args.ablations.split(",")):
            cfg = (best.backend, best.policy, best.n_contexts, best.n_streams, best.oversubscription)
            for ab in ABLATIONS:
                rows.extend(run_config(name, models, cfg, bases[name].offered_jps, args, cache, f"ablation:{ab}",
                                       ab))
        write_csv(out / "results.csv", rows)
        plot_model(out / f"{name}.png", name, rows, bases[name])
    notes = [
        "Inputs: one random frame per model at its default input size (224x224; InceptionV3 299x299), already on "
        "the GPU (preprocessing is not in the timed loop); "
        "random weights; fp32 (TF32 convolutions); per-stage CUDA graphs unless --no-graphs.",
        "DARIS runs: the policy core driven by one thread (daris_ros/bench/runner.py); JPS = finished jobs / "
        f"release window ({args.seconds:g} s); DMR = missed / finished admitted jobs; LP admitted = admitted / "
        "released LP jobs (the rest were rejected by the admission test, eq. 12).",
        "CPU us/job: the scheduling thread's CPU time per finished job (it spins while waiting, so at low load "
        "this includes idle polling); core = releases, completion polling and policy-core calls, launch = "
        "torch/CUDA stage launches (copy in, graph replay, copy out, CUDA events: two per stage with "
        "--mret-source events, one with host).",
        f"MRET source: {args.mret_source} "
        f"({'CUDA-event GPU time' if args.mret_source == 'events' else 'host-observed launch-to-completion time'}).",
        "mixed: tasks cycle over ResNet18, UNet, InceptionV3; its baselines are the harmonic means of the three "
        "models' (the JPS of a 1:1:1 job mix); naive runs each task's own model.",
        "green = SM-partitioned green contexts (driver API) in one process, the in-process counterpart of the "
        "paper's MPS contexts; str = plain CUDA streams (contexts are stream groups, no SM limit).",
    ]
    if any(c[0].startswith("mps") for c in configs):
        frames = ("each job copies its host frame (float32) into a shared-memory slot, the worker copies it to the "
                  "GPU" if args.mps_frames == "shm" else "the worker's resident example input, no transfer")
        notes.append(
            "mps = one MPS client process per context (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE from eq. 9; SMs/ctx as "
            "each worker's device properties report them), N_s streams and per-stage CUDA graphs in each; the core "
            "runs in the bench process (daris_ros/bench/runner_mps.py) and every stage is a request through shared "
            f"memory; frames: {frames}. mps-local = the same workers with each context's stage queue (the core's "
            "8 levels + EDF) inside its worker: this process only admits/migrates (daris_ros/bench/central.py) "
            "and sends whole jobs (one request and one completion per job). CPU us/job for mps: this process "
            "(core + requests; it blocks while idle), plus the workers' CPU (they spin while their stages run).")
    env = environment()
    write_summary(out, rows, bases, env, command, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), notes)
    write_csv(out / "results.csv", rows)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
