"""``daris-bench --batching``: cross-task stage batching and reduced precision against the batching upper
baseline of the same precision, measured in the same run (issue 7).

Per model: the upper baseline (whole-model CUDA graph, best batch size) at every precision the modes use,
NCHW and channels-last; the output difference of each reduced precision against fp32; then one DARIS run
per mode at 150% of that precision's upper baseline (best memory format), 2:1 LP:HP tasks. A mode is a
point on the mechanisms: batching on/off, staged or one stage per job, streams, precision, channels-last.
Every DARIS run goes through the scheduler node's engine (daris_ros/bench/engine_run.py: synthetic frames on the
GPU, a fresh engine per mode); a mode becomes the engine's parameters (:func:`mode_params`). Each run reports JPS,
its ratio to the upper baseline (same precision: best format, and same format), HP/LP DMR, the engine loop's CPU
time per job and per release, queueing delay, mean batch and padding.

Results go to ``<out>/batching.csv``, ``<out>/batching_results.md`` (tables) and the ``batching`` key of
``<out>/summary.json`` (the rest of that file is kept); ``--batch-tag T`` makes them ``batching_T``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import gc
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daris_ros.bench.baselines import graph_batching_jps
from daris_ros.bench.engine_run import BenchRun, bench_settings, describe, model_input_size, run_engine
from daris_ros.bench.report import environment, git_commit, merge_summary, write_csv
from daris_ros.bench.workload import describe_rate, make_taskset
from daris_ros.core.batching import DEFAULT_SIZES
from daris_ros.runtime.models import StagedModel, build_staged_model
from daris_ros.runtime.models.precision import apply_precision, model_input, output_difference

log = logging.getLogger("daris_ros.bench")


@dataclass(frozen=True, slots=True)
class Mode:
    """One point on the mechanisms (all on the ``str`` backend, STR policy: one queue, N_s streams)."""

    name: str
    batching: bool
    precision: str = "fp32"
    channels_last: bool = False
    staged: bool = False  # 4 stages per job (the paper's staging); False: one stage per job (No Staging)
    n_streams: int = 2
    lp_margin: float | None = 0.3
    margin_given: bool = False  # spelled in the name (``m0.5``): --lp-margin does not override it
    ahead_ms: float | None = None  # launch-ahead lead (ms): one dispatch may wait queued behind a stream's running one
    max_size: int | None = None  # only the captured sizes up to this one (``max<N>``)
    lp_max_ms: float | None = None  # LP-only batches' predicted run time cap (``lpmax<ms>``)
    pad_limit: float | None = None  # BatchingConfig.pad_limit (``pad<x>``; None: the core's default)

    @classmethod
    def parse(cls, name: str) -> Mode:
        """A named mode, or one spelled from its parts: ``batch`` or ``b1``, then any of ``staged``, ``fp16`` /
        ``bf16``, ``cl`` (channels-last), ``<N>s`` (N streams), ``m<x>`` (LP admission margin x) and ``ahead<ms>``
        (launch-ahead, ``SchedulerConfig.launch_ahead``: a stream's next dispatch is formed and queued ``ms``
        before its running one is predicted to finish; with batching on or off), ``max<N>`` (batch sizes up to N
        only), ``lpmax<ms>`` (LP-only batches predicted to run at most ``ms``) and ``pad<x>`` (padding limit: a
        batch pads up to the next captured size only while the padding is at most x of it, else it runs at the
        size below and the rest waits), joined by ``-``:
        ``batch-fp16-cl-3s-m0.5-ahead1``."""
        if name in MODES:
            return MODES[name]
        head, *parts = name.split("-")
        if head not in ("batch", "b1"):
            raise ValueError(f"unknown batching mode {name!r}: a mode starts with 'batch' or 'b1'; "
                             f"named modes: {', '.join(MODES)}")
        kw: dict[str, Any] = {"batching": head == "batch"}
        if head == "b1":
            kw["n_streams"] = 8
        for part in parts:
            if part == "staged":
                kw["staged"] = True
            elif part in ("fp16", "bf16"):
                kw["precision"] = part
            elif part == "cl":
                kw["channels_last"] = True
            elif part.endswith("s") and part[:-1].isdigit() and int(part[:-1]) >= 1:
                kw["n_streams"] = int(part[:-1])
            elif part.startswith("lpmax") and head == "batch" and _positive(part[5:]):
                kw["lp_max_ms"] = float(part[5:])
            elif part.startswith("max") and head == "batch" and part[3:].isdigit() and int(part[3:]) >= 1:
                kw["max_size"] = int(part[3:])
            elif part.startswith("pad") and head == "batch" and _non_negative(part[3:]) and float(part[3:]) < 1:
                kw["pad_limit"] = float(part[3:])
            elif part.startswith("ahead") and _non_negative(part[5:]):
                kw["ahead_ms"] = float(part[5:])
            elif part.startswith("m") and _positive(part[1:]):
                kw["lp_margin"], kw["margin_given"] = float(part[1:]), True
            else:
                raise ValueError(f"batching mode {name!r}: unknown part {part!r} "
                                 "(staged, fp16, bf16, cl, <N>s, m<margin>, ahead<ms>; with batch: max<N>, lpmax<ms>, "
                                 "pad<x> with 0 <= x < 1)")
        return cls(name, **kw)


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _non_negative(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("b1-staged", batching=False, staged=True, n_streams=8),  # the paper's approach: batch-1 stages
    Mode("batch-staged", batching=True, staged=True),
    Mode("batch-staged-cl", batching=True, staged=True, channels_last=True),
    Mode("batch", batching=True),
    Mode("batch-1s", batching=True, n_streams=1),
    Mode("batch-cl-1s", batching=True, channels_last=True, n_streams=1),
    Mode("batch-cl", batching=True, channels_last=True),
    Mode("batch-cl-3s", batching=True, channels_last=True, n_streams=3),
    Mode("batch-fp16", batching=True, precision="fp16"),
    Mode("batch-fp16-cl", batching=True, precision="fp16", channels_last=True),
    Mode("batch-bf16-cl", batching=True, precision="bf16", channels_last=True),
)}
DEFAULT_MODES = "b1-staged,batch,batch-cl,batch-staged-cl,batch-cl-1s,batch-fp16-cl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batching (issue 7)")
    g.add_argument("--batching", default="", metavar="MODES",
                   help=f"run the batching bench instead: comma list of modes or 'all' ({', '.join(MODES)}); "
                   f"'default' = {DEFAULT_MODES}")
    g.add_argument("--batch-models", default="resnet18,unet,inception_v3", help="models of the batching bench")
    g.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_SIZES)),
                   help="batch sizes with a captured CUDA graph")
    g.add_argument("--upper-sizes", default="64,128,256", help="batch sizes tried for the upper baseline")
    g.add_argument("--upper-streams", default="", metavar="N,...",
                   help="also measure batching on N streams at once (channels-last, each stream replaying its own "
                   "graph), reported next to the one-stream upper baseline, e.g. 2,3")
    g.add_argument("--lp-margin", type=float, default=None, help="override every mode's LP admission margin")
    g.add_argument("--model-modes", default="", help="per model mode lists, 'unet=batch,batch-cl;...' (overrides)")
    g.add_argument("--model-sizes", default="", help="per model batch sizes, 'unet=1,2,4,8,16;...' (overrides)")
    g.add_argument("--batch-tag", default="", help="suffix of the summary.json key and of the result files "
                   "(batching_<tag>), so that a second run does not replace the first")


# ------------------------------------------------------------------------------------------ baselines
def _prepared(name: str, precision: str, channels_last: bool, device: torch.device,
              input_size: tuple[int, int] | None = None) -> StagedModel:
    m = build_staged_model(name, input_size=input_size)
    apply_precision(m, precision, channels_last)
    m = m.to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _random_batch(m: StagedModel, device: torch.device, bs: int) -> torch.Tensor:
    h, w = m.input_size
    return model_input(m, torch.randn(bs, 3, h, w, device=device))


def upper(name: str, precision: str, channels_last: bool, device: torch.device, sizes: tuple[int, ...],
          seconds: float, input_size: tuple[int, int] | None = None) -> tuple[float, int, dict[int, float]]:
    """Batching with a whole-model CUDA graph at each size; (best JPS, its size, JPS by size)."""
    return upper_concurrent(name, precision, channels_last, device, sizes, 1, seconds, input_size)


def upper_concurrent(name: str, precision: str, channels_last: bool, device: torch.device, sizes: tuple[int, ...],
                     n_streams: int, seconds: float, input_size: tuple[int, int] | None = None
                     ) -> tuple[float, int, dict[int, float]]:
    """Batching on ``n_streams`` streams at once, each replaying its own whole-model graph of one size (one model
    copy): (best JPS, its size, JPS by size). Where this beats :func:`upper` (one stream), concurrent batches
    fill what one batch leaves idle, and a scheduler running batches on several streams can pass the one-stream
    upper baseline."""
    m = _prepared(name, precision, channels_last, device, input_size)
    make = functools.partial(_random_batch, m, device)
    by = graph_batching_jps(m, sizes, device, seconds, n_streams, make)
    del m, make
    torch.cuda.empty_cache()
    best = max(by, key=lambda b: by[b])
    return by[best], best, by


def precision_difference(name: str, precision: str, device: torch.device) -> dict[str, Any]:
    """The reduced-precision output (NHWC weights) against fp32 on the same 8 random inputs and weights."""
    torch.manual_seed(0)
    ref_m = build_staged_model(name).to(device).eval()
    state = {k: v.clone() for k, v in ref_m.state_dict().items()}
    h, w = ref_m.input_size
    x = torch.randn(8, 3, h, w, device=device)
    with torch.inference_mode():
        ref = ref_m(x)
    m = build_staged_model(name)
    m.load_state_dict(state)
    apply_precision(m, precision, channels_last=True)
    m = m.to(device).eval()
    with torch.inference_mode():
        out = m(model_input(m, x)).float()
    d = output_difference(ref, out, classification=ref_m.kind == "classification").as_dict()
    del ref_m, m
    torch.cuda.empty_cache()
    return d


# ------------------------------------------------------------------------------------------ one run
def mode_params(mode: Mode, sizes: tuple[int, ...], lp_margin: float | None = None) -> dict[str, Any]:
    """The engine's parameters (the node's, as in a parameter file) for ``mode`` on the ``str`` backend, STR
    policy: one queue, N_s streams. ``sizes``: the captured batch sizes (``max<N>`` keeps those up to N);
    ``lp_margin``: ``--lp-margin``, which overrides a margin the mode does not spell. Raises ValueError for a part
    the engine cannot run."""
    if mode.lp_max_ms is not None:
        raise ValueError(f"mode {mode.name}: lpmax<ms> (BatchingConfig.lp_max_time) has no engine parameter yet "
                         "(SchedulerSettings has no batch_lp_max_time)")
    if mode.max_size is not None:
        sizes = tuple(x for x in sizes if x <= mode.max_size)
    margin = lp_margin if lp_margin is not None and not mode.margin_given else mode.lp_margin
    params: dict[str, Any] = {
        "policy": "STR", "backend": "str", "n_contexts": 1, "n_streams": mode.n_streams,
        "no_staging": not mode.staged, "batching": mode.batching, "batch_sizes": sizes,
        "batch_lp_admit_margin": margin or 0.0,
        "launch_ahead": int(mode.ahead_ms is not None), "ahead_lead": (mode.ahead_ms or 0.0) * 1e-3,
    }
    if mode.pad_limit is not None:
        params["batch_pad_limit"] = mode.pad_limit
    return params


def efficient_size(times: dict[tuple[int, int], float], sizes: tuple[int, ...], factor: float = 2.0) -> int:
    """The smallest size whose per-job time (summed over the stages) is within ``factor`` of the best: below
    it a batch costs too much throughput to be worth saving a nearly-late stage (``BatchingConfig.min_size``)."""
    stages = {j for j, _ in times}
    per_job = {s: sum(times[(j, s)] for j in stages) / s for s in sizes}
    best = min(per_job.values())
    return min(s for s in sizes if per_job[s] <= factor * best)


def set_min_size(engine: Any) -> int:
    """Before the engine starts: its ``batch_min_size`` from the batch times of its (one) model, measured with the
    engine's own profiling function (:func:`~daris_ros.runtime.profiling.batch_times`, isolated runs); returns it.

    ENGINE GAP: the engine profiles these times itself in ``profile()`` but keeps them private; with an accessor
    (or ``batch_min_size: auto``) this second measurement goes."""
    from daris_ros.runtime.models.precision import model_input
    from daris_ros.runtime.preprocess import preprocess
    from daris_ros.runtime.profiling import batch_times

    s = engine.settings
    (key,) = engine.models
    model = engine.models[key]
    h, w = s.tasks[0].input_size
    x0 = model_input(model, preprocess(np.zeros((h, w, 3), dtype=np.uint8), (h, w), device=engine.backend.device))
    times = batch_times(engine.backend, key, x0, model.num_stages, tuple(s.batch_sizes), s.profile_runs)
    size = efficient_size({(j, n): v for (_k, j, n), v in times.items()}, tuple(s.batch_sizes))
    engine.settings = dataclasses.replace(s, batch_min_size=size)
    return size


@dataclass(slots=True)
class ModeRow:
    model: str
    mode: str
    batching: bool
    precision: str
    channels_last: bool
    staged: bool
    n_streams: int
    offered_jps: float
    jps: float
    upper_jps: float  # same precision, best memory format
    upper_same_format_jps: float
    x_upper: float
    x_upper_same_format: float
    hp_dmr: float
    lp_dmr: float
    lp_admit_rate: float
    hp_p99_ms: float
    lp_p99_ms: float
    cpu_us_per_job: float  # the engine loop thread's CPU time per finished job
    release_us_per_job: float  # of which releases (take frames, admission, preprocessing)
    host_us_per_release: float
    loop_busy: float
    hp_queue_ms: float
    lp_queue_ms: float
    mean_batch: float
    padding: float
    batches: int
    setup_s: float  # engine start-up: models, graph capture, AFET and batch-time profiling
    min_size: int
    by_size: str
    jps_window: float = 0.0
    lp_margin: float | None = None
    releases_skipped: int = 0

    def meets(self) -> bool:
        return self.hp_dmr == 0.0 and self.lp_dmr <= 0.01


def run_mode(name: str, mode: Mode, offered: float, up_best: float, up_same: float, args: argparse.Namespace,
             sizes: tuple[int, ...]) -> ModeRow | None:
    """One mode on a fresh engine at ``offered`` JPS (``None``: the mode cannot run, logged)."""
    tasks = make_taskset((name,), offered, args.task_rate)
    min_size = [1]

    def prepare(engine: Any) -> None:
        if mode.batching:
            min_size[0] = set_min_size(engine)

    size = args.input_size or None
    try:
        params = mode_params(mode, sizes, args.lp_margin)
        params.update(device=args.device, cuda_graphs=not args.no_graphs, reprobe_after=args.reprobe_after,
                      skip_late=args.skip_late,
                      afet_profile="auto")
        if args.device == "cpu":  # the same path on the cpu backend (tests; the upper baselines need a GPU)
            params["backend"] = "cpu"
        settings = bench_settings(params, tasks, lambda m: size or model_input_size(m), precision=mode.precision,
                                  channels_last=mode.channels_last)
        res: BenchRun = run_engine(settings, seconds=args.seconds, warmup=args.warmup, prepare=prepare,
                                   phases={t.name: t.phase for t in tasks} if args.releases == "spread" else None)
    except Exception:  # noqa: BLE001 - a mode that cannot run ends only itself
        log.exception("%s %s: failed", name, mode.name)
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    bs = res.batch
    row = ModeRow(name, mode.name, mode.batching, mode.precision, mode.channels_last, mode.staged, mode.n_streams,
                  res.offered_jps, res.jps, up_best, up_same, res.jps / up_best, res.jps / up_same, res.dmr("HP"),
                  res.dmr("LP"), res.lp_admit_rate, res.p99_ms["HP"], res.p99_ms["LP"], res.cpu_us_per_job,
                  res.release_us_per_job, res.host_us_per_release, res.loop_busy, bs.mean_queue_delay("HP") * 1e3,
                  bs.mean_queue_delay("LP") * 1e3, bs.mean_batch, bs.padding, bs.batches, res.setup_s, min_size[0],
                  " ".join(f"{k}:{v}" for k, v in sorted(bs.by_size.items())), res.jps_window,
                  params["batch_lp_admit_margin"] or None, res.releases_skipped)
    log.info("%s %s: %.0f JPS = %.3fx upper %s (%.0f); %s; min size %d", name, mode.name, row.jps, row.x_upper,
             mode.precision, up_best, describe(res), min_size[0])
    return row


# ------------------------------------------------------------------------------------------ driver
def _per_model(spec: str, name: str, default: str) -> str:
    for item in filter(None, spec.split(";")):
        model, _, lst = item.partition("=")
        if model.strip() == name:
            return lst
    return default


def modes_for(name: str, args: argparse.Namespace) -> list[Mode]:
    text = _per_model(args.model_modes, name, args.batching)
    if text == "default":
        text = DEFAULT_MODES
    names = list(MODES) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    try:
        return [Mode.parse(n) for n in names]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def main_batching(args: argparse.Namespace, argv: list[str] | None, command: str) -> int:
    dev = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    up_sizes = tuple(int(s) for s in args.upper_sizes.split(","))
    up_streams = tuple(int(s) for s in args.upper_streams.split(",") if s.strip())
    if any(n < 2 for n in up_streams):
        raise SystemExit(f"--upper-streams: stream counts must be >= 2 (1 is the upper baseline), got "
                         f"{args.upper_streams!r}")
    suffix = f"_{args.batch_tag}" if args.batch_tag else ""
    rows: list[ModeRow] = []
    models: dict[str, Any] = {}
    for name in filter(None, (s.strip() for s in args.batch_models.split(","))):
        modes = modes_for(name, args)
        sizes = tuple(sorted({int(s) for s in _per_model(args.model_sizes, name, args.batch_sizes).split(",")}))
        uppers: dict[str, dict[str, Any]] = {}
        for prec in dict.fromkeys(m.precision for m in modes):
            entry: dict[str, Any] = {}
            for cl in (False, True):
                jps, bs, by = upper(name, prec, cl, dev, up_sizes, args.baseline_seconds / len(up_sizes),
                                    args.input_size)
                entry["channels_last" if cl else "nchw"] = {"jps": round(jps, 1), "batch": bs,
                                                             "by_batch": {k: round(v, 1) for k, v in by.items()}}
            entry["best_jps"] = max(entry["nchw"]["jps"], entry["channels_last"]["jps"])
            for n in up_streams:
                jps, bs, by = upper_concurrent(name, prec, True, dev, up_sizes, n,
                                               args.baseline_seconds / len(up_sizes), args.input_size)
                entry.setdefault("concurrent", {})[str(n)] = {
                    "jps": round(jps, 1), "batch": bs, "by_batch": {k: round(v, 1) for k, v in by.items()}}
                log.info("%s concurrent batching %s, %d streams, channels-last: %.0f JPS (bs %d per stream)", name,
                         prec, n, jps, bs)
            uppers[prec] = entry
            log.info("%s upper %s: NCHW %.0f JPS (bs %d), channels-last %.0f JPS (bs %d)", name, prec,
                     entry["nchw"]["jps"], entry["nchw"]["batch"], entry["channels_last"]["jps"],
                     entry["channels_last"]["batch"])
        diffs = {p: precision_difference(name, p, dev) for p in ("fp16", "bf16")}
        log.info("%s output difference vs fp32: %s", name, diffs)
        mrows = []
        for mode in modes:
            up = uppers[mode.precision]
            up_same = up["channels_last" if mode.channels_last else "nchw"]["jps"]
            row = run_mode(name, mode, 1.5 * up["best_jps"], up["best_jps"], up_same, args, sizes)
            if row is not None:
                rows.append(row)
                mrows.append(row)
            if rows:
                write_csv(out / f"batching{suffix}.csv", rows, ModeRow)
        ok = [r for r in mrows if r.meets()]
        best = max(ok, key=lambda r: r.x_upper) if ok else None
        models[name] = {
            "upper": uppers, "precision_vs_fp32": diffs,
            "batch_sizes": list(sizes), "runs": {r.mode: _summary_of(r) for r in mrows},
            "best": None if best is None else {"mode": best.mode, **_summary_of(best)},
        }
    env = environment()
    if dev.type == "cpu":
        env["device"] = "cpu"
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = git_commit()
    section = {"command": command, "date": date, "device": env["device"], "driver": env["driver"],
               "torch": env["torch"], "commit": commit["commit"], "dirty": commit["dirty"], "path": "engine",
               "load": "150% of the upper baseline of the mode's precision (best format), "
               f"2:1 LP:HP, {describe_rate(args.task_rate, tuple(models))} tasks, deadline = period, releases "
               f"{'phased over each period' if args.releases == 'spread' else 'together (a rig)'}",
               "frames": "synthetic uint8 frames at the model's input size, on the GPU, set once per task "
                         "(Engine.set_frame); the engine preprocesses every release burst as a batch",
               "mret_source": args.mret_source, "seconds": args.seconds,
               "jps": f"jobs finished in the steady part of the release window, [{args.warmup:g} s, "
                      f"{args.seconds:g} s], per second (jps_window: the whole window)",
               "models": models}
    merge_summary(out / "summary.json", {f"batching{suffix}": section})
    write_markdown(out / f"batching_results{suffix}.md", rows, models, section)
    print((out / f"batching_results{suffix}.md").read_text())
    return 0


def _summary_of(r: ModeRow) -> dict[str, Any]:
    return {"jps": round(r.jps, 1), "jps_window": round(r.jps_window, 1), "lp_margin": r.lp_margin,
            "x_upper": round(r.x_upper, 3),
            "x_upper_same_format": round(r.x_upper_same_format, 3), "upper_jps": r.upper_jps,
            "precision": r.precision, "channels_last": r.channels_last,
            "staged": r.staged, "n_streams": r.n_streams, "batching": r.batching,
            "hp_dmr": round(r.hp_dmr, 5), "lp_dmr": round(r.lp_dmr, 5), "lp_admit_rate": round(r.lp_admit_rate, 3),
            "hp_p99_ms": round(r.hp_p99_ms, 2), "lp_p99_ms": round(r.lp_p99_ms, 2),
            "cpu_us_per_job": round(r.cpu_us_per_job, 1), "release_us_per_job": round(r.release_us_per_job, 1),
            "host_us_per_release": round(r.host_us_per_release, 2), "loop_busy": round(r.loop_busy, 3),
            "min_size": r.min_size, "setup_s": round(r.setup_s, 1), "releases_skipped": r.releases_skipped,
            "queue_delay_ms": {"HP": round(r.hp_queue_ms, 3), "LP": round(r.lp_queue_ms, 3)},
            "mean_batch": round(r.mean_batch, 1), "padding": round(r.padding, 3), "meets_dmr_targets": r.meets()}


def write_markdown(path: Path, rows: list[ModeRow], models: dict[str, Any], section: dict[str, Any]) -> None:
    lines = [f"# daris-bench --batching ({section['date']})", "",
             f"Device: **{section['device']}**, driver {section['driver']}, torch {section['torch']}. Commit "
             f"`{section['commit']}`" + (" (with uncommitted changes)" if section["dirty"] else "") + ".", "",
             f"```\n{section['command']}\n```", "", f"Load: {section['load']}.", "",
             "Every mode runs through the scheduler node's engine (daris_ros/runtime/engine.py) on the str "
             f"backend; frames: {section['frames']}. CPU us/job: the engine loop thread's CPU time per finished "
             "job (its release part: taking frames, admission, preprocessing); host us/release: per release.", ""]
    for name, m in models.items():
        lines += [f"## {name}", "", "| upper baseline | NCHW | channels-last |", "| --- | ---: | ---: |"]
        for prec, u in m["upper"].items():
            lines.append(f"| {prec} | {u['nchw']['jps']:,.0f} (bs {u['nchw']['batch']}) | "
                         f"{u['channels_last']['jps']:,.0f} (bs {u['channels_last']['batch']}) |")
        conc = [(prec, n, c) for prec, u in m["upper"].items() for n, c in u.get("concurrent", {}).items()]
        if conc:
            lines += ["", "Concurrent batching (channels-last, N streams each replaying its own graph; not the upper "
                      "baseline, which is one stream):", "", "| precision | streams | best JPS (bs per stream) | "
                      "x one-stream upper | by batch size |", "| --- | ---: | ---: | ---: | --- |"]
            for prec, n, c in conc:
                one = m["upper"][prec]["best_jps"]
                lines.append(f"| {prec} | {n} | {c['jps']:,.0f} (bs {c['batch']}) | {c['jps'] / one:.3f} | "
                             + ", ".join(f"{b}: {v:,.0f}" for b, v in c["by_batch"].items()) + " |")
        lines += ["", "Output vs fp32 (channels-last weights, 8 random inputs): " + "; ".join(
            f"{p}: max abs {d['max_abs']:.3g}, rel L2 {d['rel_l2']:.3g}"
            + (f", top-1 agree {100 * d['top1_agree']:.0f}%" if d["top1_agree"] is not None else "")
            for p, d in m["precision_vs_fp32"].items()), "",
            "| mode | prec | CL | staged | N_s | LP margin | JPS (whole window) | x upper (best fmt) "
            "| x upper (same fmt) | HP DMR | LP DMR "
            "| LP admitted | HP p99 ms | LP p99 ms | CPU us/job (release) | host us/release | loop busy "
            "| queue HP / LP ms | mean batch | padding |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: | ---: | ---: | ---: |"]
        for r in (r for r in rows if r.model == name):
            lines.append(
                f"| {r.mode} | {r.precision} | {'y' if r.channels_last else '-'} | {'y' if r.staged else '-'} | "
                f"{r.n_streams} | {r.lp_margin if r.lp_margin is not None else '-'} | "
                f"{r.jps:,.0f} ({r.jps_window:,.0f}) | {r.x_upper:.3f} | {r.x_upper_same_format:.3f} | "
                f"{100 * r.hp_dmr:.2f}% | {100 * r.lp_dmr:.2f}% | {100 * r.lp_admit_rate:.0f}% | {r.hp_p99_ms:.1f} | "
                f"{r.lp_p99_ms:.1f} | {r.cpu_us_per_job:.0f} ({r.release_us_per_job:.0f}) | "
                f"{r.host_us_per_release:.1f} | {100 * r.loop_busy:.0f}% | {r.hp_queue_ms:.2f} / {r.lp_queue_ms:.2f} | "
                f"{r.mean_batch:.1f} | "
                f"{100 * r.padding:.1f}% |")
        best = m["best"]
        lines += ["", "Best (0 HP misses, LP DMR <= 1%): " + (
            f"**{best['mode']}**, {best['jps']:,.0f} JPS = {best['x_upper']:.3f}x the {best['precision']} upper "
            "baseline" if best else "none met the DMR targets"), ""]
    path.write_text("\n".join(lines) + "\n")


def command_line(argv: list[str] | None, argv_default: list[str]) -> str:
    return "python -m daris_ros.bench.cli " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                 else argv_default))
