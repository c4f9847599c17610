"""How JPEG decoding in other threads delays the engine loop's CUDA calls.

    python -m daris_ros.bench.decode_interference --rate 270 --seconds 5 --out DIR

The vehicle set through the node (12 cameras, JPEG 1280x720 decoded on the GPU by the engine's decode threads)
missed HP deadlines while the engine's stall probe (runtime/stall_probe.py) found the loop held 10-22 ms inside
plain launches (a clone, an event record, a graph's input copy), with the GIL free. torchvision's nvJPEG decoder
re-initialises its batched decoder for every call's batch size (``nvjpegDecodeBatchedInitialize``) with nvJPEG's
default allocators (cudaMalloc/cudaFree, cudaHostAlloc/cudaFreeHost), and a free synchronises the device. This
bench separates the causes: one thread plays the loop (every ``--period`` it enqueues one spin kernel of ``--load`` of
a period, so the GPU holds a queue of work as under the node's load, then a clone, an event record and an event
query, as launches do) and times those three calls, while 4 threads decode JPEG frames at ``--rate`` frames/s in
total, per variant:

- ``none``: no decoding (the loop alone);
- ``cpu``: Pillow (libjpeg-turbo), no CUDA call in the decode threads;
- ``gpu_varying``: nvJPEG batches of 1..8 frames (the engine's decode parts: ``DECODE_PART`` = 8), as the node does;
- ``gpu_single``: nvJPEG, one frame per call (the batch size never changes);
- ``gpu_fixed8``: nvJPEG, always 8 frames per call;
- ``cuda_free``: no decoding; one thread frees device memory (``torch.cuda.empty_cache`` after a 16 MB
  allocation: a ``cudaFree``) 30 times a second: the mechanism alone, as a positive control.

With the GPU idle (``--load 0``) a device synchronisation costs nothing and no variant shows a stall (session 12's
first run, docs/benchmarks/decode/README.md); the load is what turns a synchronisation into a held loop.

Writes ``decode_interference.json`` and ``.md`` to ``--out``: per variant the loop's host time per iteration
(p50, p99, max, iterations over 5 and 10 ms) and the frames decoded per second.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from daris_ros.bench.variant_runs import parse_variants, record_run

VARIANTS = ("none", "cpu", "gpu_varying", "gpu_single", "gpu_fixed8", "cuda_free")
#: Device memory allocated and freed per ``cuda_free`` step.
FREE_BYTES = 16 << 20
#: ``cuda_free`` steps per second (one thread).
FREE_RATE = 30.0
DECODE_THREADS = 4


def make_jpeg(width: int, height: int, noise: int, seed: int = 0) -> bytes:
    """A smooth gradient with ``noise`` levels of noise, as daris-node-e2e's publishers send."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 50, height, dtype=np.float32)[:, None, None]
    img = (x + y + rng.integers(0, noise + 1, (height, width, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def batch_size_of(variant: str, rng: random.Random) -> int:
    if variant == "gpu_varying":
        return rng.randint(1, 8)
    if variant == "gpu_fixed8":
        return 8
    return 1


def decode_thread(variant: str, jpeg: bytes, device: str, rate: float, stop: threading.Event,
                  counts: list[int], index: int) -> None:
    """Decode frames at ``rate`` per second (this thread's share) until ``stop``."""
    import torch
    from PIL import Image

    from daris_ros.ros.conversion import decode_jpegs_on

    rng = random.Random(index)
    if variant.startswith("gpu") or variant == "cuda_free":
        torch.cuda.set_device(torch.device(device))
        torch.cuda.set_stream(torch.cuda.Stream(device))  # (a decode thread's own stream, as the engine's pool)
    next_t = time.perf_counter()
    while not stop.is_set():
        n = batch_size_of(variant, rng)
        if variant == "cuda_free":
            block = torch.empty(FREE_BYTES, dtype=torch.uint8, device=device)
            del block
            torch.cuda.empty_cache()
        elif variant == "cpu":
            with Image.open(io.BytesIO(jpeg)) as im:
                np.asarray(im.convert("RGB"))
        else:
            decode_jpegs_on([jpeg] * n, device)
            torch.cuda.current_stream().synchronize()
        counts[index] += n
        next_t += n / rate
        delay = next_t - time.perf_counter()
        if delay > 0:
            stop.wait(delay)
        else:
            next_t = time.perf_counter()


def sleep_cycles_per_second(device: str) -> float:
    """GPU clock cycles a second of ``torch.cuda._sleep`` (a spin kernel), measured with events on ``device``."""
    import torch

    dev = torch.device(device)
    stream = torch.cuda.Stream(dev)
    cycles = 20_000_000
    with torch.cuda.stream(stream):
        torch.cuda._sleep(cycles // 10)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        torch.cuda._sleep(cycles)
        end.record(stream)
    end.synchronize()
    return cycles / (start.elapsed_time(end) * 1e-3)


def loop_thread(device: str, period: float, load_cycles: int, stop: threading.Event, times: list[float]) -> None:
    """Every ``period``: one spin kernel of ``load_cycles`` GPU cycles (the queue of stages a loaded GPU holds), then
    the calls a launch makes (a clone, an event record, an event query) on the loop's stream; the host time of those
    calls alone is appended to ``times``."""
    import torch

    dev = torch.device(device)
    torch.cuda.set_device(dev)
    stream = torch.cuda.Stream(dev)
    x = torch.randn(8, 3, 224, 224, device=dev, dtype=torch.half)
    events = [torch.cuda.Event() for _ in range(64)]
    with torch.no_grad(), torch.cuda.stream(stream):
        i = 0
        next_t = time.perf_counter()
        while not stop.is_set():
            if load_cycles > 0:
                torch.cuda._sleep(load_cycles)
            t0 = time.perf_counter()
            x.clone()
            ev = events[i % len(events)]
            ev.record(stream)
            ev.query()
            times.append(time.perf_counter() - t0)
            i += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.perf_counter()
        stream.synchronize()


def run_variant(variant: str, jpeg: bytes, args: argparse.Namespace, load_cycles: int) -> dict[str, Any]:
    import torch

    if variant.startswith("gpu"):  # nvJPEG's decoder is made at first use; warm it as the engine does (a small one)
        from daris_ros.ros.conversion import decode_jpegs_on

        decode_jpegs_on([make_jpeg(64, 64, 0)], args.device)
        torch.cuda.synchronize()
    stop = threading.Event()
    times: list[float] = []
    n_threads = 0 if variant == "none" else 1 if variant == "cuda_free" else DECODE_THREADS
    rate = FREE_RATE if variant == "cuda_free" else args.rate / DECODE_THREADS
    counts = [0] * max(n_threads, 1)
    threads = [threading.Thread(target=decode_thread, args=(variant, jpeg, args.device, rate, stop, counts, k),
                                daemon=True) for k in range(n_threads)]
    loop = threading.Thread(target=loop_thread, args=(args.device, args.period, load_cycles, stop, times),
                            daemon=True)
    for t in threads:
        t.start()
    loop.start()
    time.sleep(args.warmup)
    times.clear()
    start_counts = sum(counts)
    time.sleep(args.seconds)
    decoded = sum(counts) - start_counts
    measured = list(times)
    stop.set()
    loop.join(10)
    for t in threads:
        t.join(10)
    arr = np.asarray(measured) * 1e3
    return {"variant": variant, "iterations": len(arr), "frames_per_s": round(decoded / args.seconds, 1),
            "host_ms_p50": round(float(np.percentile(arr, 50)), 3),
            "host_ms_p99": round(float(np.percentile(arr, 99)), 3),
            "host_ms_max": round(float(arr.max()), 3), "over_5ms": int((arr > 5).sum()),
            "over_10ms": int((arr > 10).sum())}


def render_md(doc: dict[str, Any]) -> str:
    lines = [f"# JPEG decoding in other threads against the loop's CUDA calls ({doc['date']}, {doc['device']})", "",
             "```bash", doc["command"], "```", "",
             f"Commit {doc['commit']}. {DECODE_THREADS} decode threads at {doc['rate']:g} frames/s of "
             f"{doc['width']}x{doc['height']} JPEG ({doc['jpeg_kb']:.0f} KB) in total; the loop's iteration every "
             f"{doc['period'] * 1e3:g} ms: a spin kernel of {doc['load']:g} of the period enqueued, then a clone, an "
             "event record and an event query; host ms: the time those three calls took on the host).", "",
             "| variant | frames/s decoded (cuda_free: frees/s) | loop iterations | host ms p50 | p99 | max | "
             "over 5 ms | over 10 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        lines.append(f"| {r['variant']} | {r['frames_per_s']} | {r['iterations']} | {r['host_ms_p50']} | "
                     f"{r['host_ms_p99']} | {r['host_ms_max']} | {r['over_5ms']} | {r['over_10ms']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.bench.decode_interference",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--rate", type=float, default=270.0, help="frames/s decoded in total (12 vehicle cameras: 270)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--noise", type=int, default=8)
    p.add_argument("--period", type=float, default=0.01, help="seconds between two loop iterations")
    p.add_argument("--load", type=float, default=0.8,
                   help="share of each period the loop's spin kernel keeps the GPU busy (0: none)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--commit", default="")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    variants = parse_variants(p, args.variants, VARIANTS)
    import torch

    if not torch.cuda.is_available():
        print("decode_interference: no CUDA device", file=sys.stderr)
        return 2
    jpeg = make_jpeg(args.width, args.height, args.noise)
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": "python -m daris_ros.bench.decode_interference "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(args.device),
        "commit": args.commit, "rate": args.rate, "width": args.width, "height": args.height,
        "jpeg_kb": len(jpeg) / 1024, "period": args.period, "load": args.load, "runs": []}
    load_cycles = round(args.load * args.period * sleep_cycles_per_second(args.device))
    doc["load_cycles"] = load_cycles
    for variant in variants:
        record_run(doc, run_variant(variant, jpeg, args, load_cycles), args.out, "decode_interference", render_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
