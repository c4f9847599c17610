"""Baselines measured in the same run as DARIS (section VI): lower, upper (batching), naive, and the
batch-1 concurrency ceiling of this GPU.

These are references, not schedulers: plain torch timing loops over a model (lower, upper, ceiling) and one thread
per camera (naive). DARIS itself runs only through the engine (daris_ros/bench/engine_run.py). ``input_size``
(default: the model's own) sets the frame size; lower and naive also run on the CPU, upper and the ceilings need
CUDA graphs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from daris_ros.runtime.models import StagedModel, StageIO, build_staged_model

Size = tuple[int, int] | None


def _model(name: str, device: torch.device, input_size: Size = None) -> StagedModel:
    m = build_staged_model(name, input_size=input_size).to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _input(model: StagedModel, batch: int, device: torch.device) -> torch.Tensor:
    h, w = model.input_size
    return torch.randn(batch, 3, h, w, device=device)


def lower_jps(name: str, device: torch.device, seconds: float = 2.0, input_size: Size = None) -> float:
    """One DNN, one stream, batch 1, eager, each job finished before the next (the paper's lower line)."""
    m = _model(name, device, input_size)
    x = _input(m, 1, device)
    with torch.inference_mode():
        for _ in range(10):
            m(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            m(x)
            _sync(device)
            n += 1
    return n / (time.perf_counter() - t0)


def _graph(m: torch.nn.Module, x: StageIO, stream: torch.cuda.Stream) -> tuple[torch.cuda.CUDAGraph, StageIO]:
    """A graph of ``m(x)`` and its static output (the caller keeps ``x`` and the output alive)."""
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(3):
            m(x)
    stream.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g, stream=stream):
        y = m(x)
    torch.cuda.synchronize()
    return g, y


@dataclass(frozen=True, slots=True)
class Upper:
    best_jps: float
    best_batch: int
    by_batch: dict[int, float]


def graph_batching_jps(m: StagedModel, sizes: tuple[int, ...], device: torch.device, seconds: float,
                       n_streams: int = 1, make_input: Callable[[int], torch.Tensor] | None = None
                       ) -> dict[int, float]:
    """JPS of pure batching with whole-model CUDA graphs, per batch size: ``n_streams`` streams each replay their
    own graph of that size, all at once, for ``seconds``. Sizes past the first that runs out of memory are skipped.
    ``make_input(bs)`` builds a graph's input (default: a random fp32 batch at the model's input size)."""
    streams = [torch.cuda.Stream(device) for _ in range(n_streams)]
    make = make_input or (lambda bs: _input(m, bs, device))
    by: dict[int, float] = {}
    for bs in sizes:
        try:
            kept = [(x, *_graph(m, x, st)) for st in streams for x in (make(bs),)]
        except torch.OutOfMemoryError:
            break
        pairs = [(g, st) for (_, g, _), st in zip(kept, streams, strict=True)]
        _replay_all(pairs)
        torch.cuda.synchronize(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(3):
                _replay_all(pairs)
            torch.cuda.synchronize(device)
            n += 3
        by[bs] = n * bs * n_streams / (time.perf_counter() - t0)
        del kept, pairs
        torch.cuda.empty_cache()
    return by


def _replay_all(pairs: list[tuple[torch.cuda.CUDAGraph, torch.cuda.Stream]]) -> None:
    for g, st in pairs:
        with torch.cuda.stream(st):  # a graph replays on the current stream
            g.replay()


def upper_batching(name: str, device: torch.device, batches: tuple[int, ...] = (1, 8, 32, 64, 128, 256),
                   seconds: float = 1.0, input_size: Size = None) -> Upper:
    """Pure batching with a CUDA graph of the whole model; the best batch size wins (the paper's upper line)."""
    by = graph_batching_jps(_model(name, device, input_size), batches, device, seconds)
    torch.cuda.empty_cache()
    best = max(by, key=lambda b: by[b])
    return Upper(by[best], best, by)


def b1_ceiling(name: str, device: torch.device, n_streams: int = 8, seconds: float = 2.0,
               staged: bool = False, input_size: Size = None) -> float:
    """Batch-1 concurrency ceiling: a CUDA graph per stream (whole model, or 4 stage graphs), every stream
    kept busy from one thread, no scheduler. What batch-1 concurrency can give on this GPU."""
    m = _model(name, device, input_size)
    streams = [torch.cuda.Stream(device) for _ in range(n_streams)]
    fns: list[torch.nn.Module] = list(m.stages) if staged else [m]
    graphs: list[list[torch.cuda.CUDAGraph]] = []
    keep: list[StageIO] = []
    for s in streams:
        row: list[torch.cuda.CUDAGraph] = []
        x: StageIO = _input(m, 1, device)
        keep.append(x)
        for fn in fns:  # stage j+1 reads stage j's static output: a real chain
            g, x = _graph(fn, x, s)
            row.append(g)
            keep.append(x)
        graphs.append(row)
    done = [torch.cuda.Event() for _ in streams]
    n, t0 = 0, time.perf_counter()
    for i, s in enumerate(streams):
        with torch.cuda.stream(s):
            for g in graphs[i]:
                g.replay()
            done[i].record(s)
    while time.perf_counter() - t0 < seconds:
        for i, s in enumerate(streams):
            if done[i].query():
                n += 1
                torch.cuda.set_stream(s)
                for g in graphs[i]:
                    g.replay()
                done[i].record(s)
    torch.cuda.synchronize(device)
    torch.cuda.set_stream(torch.cuda.default_stream(device))
    return n / (time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class Naive:
    jps: float
    hp_dmr: float
    lp_dmr: float
    n_threads: int
    warmup_s: float = 0.0  # until every thread had run its first job (its cuDNN/cuBLAS handles), before the window


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive(names: list[str], device: torch.device, periods: list[float], hp: list[bool], seconds: float = 3.0,
          input_size: Size = None) -> Naive:
    """One thread per task on the default stream, eager, no scheduler: what per-camera ROS nodes do.

    Each thread wakes at its period, runs the whole model on the latest frame and reads the result back
    (a synchronisation, as a node publishing its result does); a late thread skips the frames it missed.
    Every thread first runs one job outside the window (a thread's first CUDA call creates its cuDNN and
    cuBLAS handles: on the H200 with 1,088 threads that took minutes, and it had been every thread's only
    job in the window); the window opens when all have. JPS counts the jobs finished inside the window;
    the miss rates count every job released inside it.
    """
    nets = {n: _model(n, device, input_size) for n in dict.fromkeys(names)}
    inputs = {n: _input(m, 1, device) for n, m in nets.items()}
    with torch.inference_mode():
        for n, m in nets.items():
            m(inputs[n])
    _sync(device)
    n_threads = len(periods)
    warmed = threading.Barrier(n_threads + 1)
    go = threading.Event()
    window = [0.0, 0.0]  # start, stop: set by this thread once every worker has warmed up
    counts = [[0, 0, 0] for _ in periods]  # finished inside the window, finished (released inside it), missed

    def worker(i: int) -> None:
        period = periods[i]
        m, x = nets[names[i]], inputs[names[i]]
        with torch.inference_mode():
            try:
                m(x).argmax().item()
            except BaseException:
                warmed.abort()  # the others and the main thread stop waiting
                raise
            warmed.wait()
            go.wait()
            t_start, stop = window
            nxt = t_start + (i * 0.618034 % 1.0) * period
            while True:
                now = time.perf_counter()
                if nxt > now:
                    time.sleep(nxt - now)
                release = nxt
                if release >= stop:
                    return
                m(x).argmax().item()
                fin = time.perf_counter()
                c = counts[i]
                c[0] += int(fin <= stop)
                c[1] += 1
                c[2] += int(fin > release + period)
                nxt += period
                while nxt < fin:  # frames that arrived meanwhile are dropped (queue depth 1)
                    nxt += period

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    try:
        warmed.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError("naive baseline: a worker thread failed its first job") from None
    warmup = time.perf_counter() - t0
    window[0] = time.perf_counter() + 0.05
    window[1] = window[0] + seconds
    go.set()
    for t in threads:
        t.join()
    in_window = sum(c[0] for c in counts)
    hp_done = sum(c[1] for c, h in zip(counts, hp, strict=True) if h)
    lp_done = sum(c[1] for c, h in zip(counts, hp, strict=True) if not h)
    hp_miss = sum(c[2] for c, h in zip(counts, hp, strict=True) if h)
    lp_miss = sum(c[2] for c, h in zip(counts, hp, strict=True) if not h)
    return Naive(in_window / seconds, hp_miss / max(hp_done, 1), lp_miss / max(lp_done, 1), n_threads, warmup)
