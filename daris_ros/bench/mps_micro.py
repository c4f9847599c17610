"""Micro-measurements of the ``mps`` backend: frame transfer cost and per-stage round-trip overhead.

    python -m daris_ros.bench.mps_micro --out docs/benchmarks      # writes mps_micro.json, prints markdown

* **Frame transfer** (shared memory): the scheduler's copy of a preprocessed host frame (float32) into a
  frame slot (``memmove``, CPU time), and the worker's copy from the pinned slot to the GPU, read as the
  difference of stage 0's CUDA-event time with the frame from the slot and with the worker's resident input.
* **Round trip per stage**: one worker (N_c = 1, N_s = 1), ResNet18's four stages one after another
  (each sent when the previous one's completion was read): request written -> completion read, minus the
  stage's CUDA-event time; split into request latency (written -> picked up by the worker), launch (picked
  up -> launched), completion seen late (launched + GPU time -> the worker saw the event) and delivery
  (worker wrote the completion -> read here). Once with this process blocking on the wake-up pipe, once
  spinning. The in-process ``str`` backend (launch, spin on the CUDA event) is the reference.
* **Worker-side mode**: whole jobs (``send_job``) one after another: job round trip minus the sum of its
  stages' GPU times, and the part of it spent between the stages inside the worker.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _med(v: list[float]) -> float:
    return statistics.median(v) if v else 0.0


def host_copy_us(shape: tuple[int, ...], n: int = 2000) -> dict[str, float]:
    """CPU time of one frame copy into a (page-aligned, shared) buffer: memmove and torch's copy_."""
    from multiprocessing.shared_memory import SharedMemory

    x = torch.randn(*shape)
    nbytes = x.numel() * 4
    shm = SharedMemory(create=True, size=nbytes + 4096)
    try:
        dst = torch.frombuffer(shm.buf, dtype=torch.uint8, count=nbytes)
        src_u8 = x.view(-1).view(torch.uint8)
        for _ in range(50):
            ctypes.memmove(dst.data_ptr(), x.data_ptr(), nbytes)
        t0 = time.perf_counter()
        for _ in range(n):
            ctypes.memmove(dst.data_ptr(), x.data_ptr(), nbytes)
        mm = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        for _ in range(n):
            dst.copy_(src_u8)
        tc = (time.perf_counter() - t0) / n * 1e6
        del dst
    finally:
        shm.close()
        shm.unlink()
    return {"bytes": nbytes, "memmove_us": mm, "torch_copy_us": tc, "GB_per_s": nbytes / (mm * 1e-6) / 1e9}


def str_reference(n_jobs: int) -> dict[str, float]:
    """In-process reference: one stream, stage launch -> spin on its end event; host time - event time."""
    from daris_ros.runtime.backends.cuda_streams import CudaStreamsBackend
    from daris_ros.runtime.models import build_staged_model

    b = CudaStreamsBackend(n_contexts=1, n_streams=1, device="cuda")
    b.start({"r": build_staged_model("resnet18")})
    try:
        x0 = b.example_inputs(b.models["r"])[0]
        over, launch_cpu, gpu = [], [], []
        for job in range(n_jobs + 20):
            x = x0
            for j in range(4):
                c0 = time.thread_time()
                t0 = time.perf_counter()
                la = b.launch(0, 0, "r", j, x)
                c1 = time.thread_time()
                while not la.end.query():
                    pass
                t1 = time.perf_counter()
                dt = b.finish(la)
                x = la.output
                if job >= 20:
                    over.append((t1 - t0) * 1e6 - dt * 1e6)
                    launch_cpu.append((c1 - c0) * 1e6)
                    gpu.append(dt * 1e6)
        torch.cuda.set_stream(torch.cuda.default_stream())
    finally:
        b.close()
    return {"overhead_us_p50": _med(over), "launch_cpu_us_p50": _med(launch_cpu), "stage_gpu_us_p50": _med(gpu)}


def mps_round_trip(b: Any, n_jobs: int, blocking: bool) -> dict[str, float]:
    from daris_ros.runtime.backends.mps import EXAMPLE_INPUT

    keys = ("overhead", "request", "launch", "seen_late", "delivery", "gpu", "send_cpu", "recv_cpu")
    acc: dict[str, list[float]] = {k: [] for k in keys}
    for job in range(n_jobs + 20):
        x: Any = EXAMPLE_INPUT
        for j in range(4):
            c0 = time.thread_time()
            b.send(0, 0, "r", j, x)
            c1 = time.thread_time()
            got: list = []
            recv_cpu = 0.0
            while not got:
                c2 = time.thread_time()
                got = b.collect(0.5 if blocking else 0.0)
                recv_cpu = time.thread_time() - c2  # the collect that returned it (blocked time is not CPU time)
            c = got[0]
            assert c.error is None, c.error
            x = c.output
            if job < 20:
                continue
            gpu_us = c.exec_time * 1e6
            acc["overhead"].append((c.t_recv - c.t_submit) * 1e-3 - gpu_us)
            acc["request"].append((c.t_pick - c.t_submit) * 1e-3)
            acc["launch"].append((c.t_launch - c.t_pick) * 1e-3)
            acc["seen_late"].append((c.t_done - c.t_launch) * 1e-3 - gpu_us)
            acc["delivery"].append((c.t_recv - c.t_done) * 1e-3)
            acc["gpu"].append(gpu_us)
            acc["send_cpu"].append((c1 - c0) * 1e6)
            acc["recv_cpu"].append(recv_cpu * 1e6)
    out = {f"{k}_us_p50": _med(v) for k, v in acc.items()}
    out["overhead_us_p99"] = sorted(acc["overhead"])[int(0.99 * (len(acc["overhead"]) - 1))]
    return out


def mps_job_round_trip(b: Any, n_jobs: int) -> dict[str, float]:
    """Worker-side mode: whole jobs one after another; job round trip minus the sum of its stages' GPU times
    (what the worker's own dispatch between stages and the two messages cost per job)."""
    from daris_ros.runtime.backends.mps import EXAMPLE_INPUT

    over, gaps, send_cpu = [], [], []
    for job in range(n_jobs + 20):
        now = time.monotonic()
        c0 = time.thread_time()
        b.send_job(0, "r", EXAMPLE_INPUT, priority=0, release=now, deadlines=(now + 1, now + 2, now + 3, now + 4))
        c1 = time.thread_time()
        got: list = []
        while not got:
            got = b.collect(0.5)
        c = got[0]
        assert c.error is None, c.error
        if job >= 20:
            gpu_us = sum(c.stage_times) * 1e6
            over.append((c.t_recv - c.t_submit) * 1e-3 - gpu_us)
            gaps.append((c.t_done - c.t_launch) * 1e-3 - gpu_us)  # first launch -> last completion seen
            send_cpu.append((c1 - c0) * 1e6)
    return {"job_overhead_us_p50": _med(over), "in_worker_gaps_us_p50": _med(gaps), "send_cpu_us_p50": _med(send_cpu)}


def h2d_from_slot(b: Any, n: int) -> dict[str, float]:
    """Stage 0's event time with the frame from the shared-memory slot vs the worker's resident input."""
    from daris_ros.runtime.backends.mps import EXAMPLE_INPUT
    from daris_ros.runtime.backends.mps_protocol import OUT_DISCARD

    frame = torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {"slot": [], "resident": []}
    for i in range(2 * n + 20):
        kind = "slot" if i % 2 else "resident"
        b.send(0, 0, "r", 0, frame if kind == "slot" else EXAMPLE_INPUT, out_kind=OUT_DISCARD)
        got: list = []
        while not got:
            got = b.collect(0.5)
        if i >= 20:
            times[kind].append(got[0].exec_time * 1e6)
    slot, res = _med(times["slot"]), _med(times["resident"])
    return {"stage0_slot_us_p50": slot, "stage0_resident_us_p50": res, "h2d_us": slot - res,
            "pinned": bool(b.workers[0].info.get("pinned"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="daris-mps-micro", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--jobs", type=int, default=300)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from daris_ros.runtime.backends.mps import MpsBackend
    from daris_ros.runtime.models import build_staged_model

    res: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    res["host_copy_224"] = host_copy_us((1, 3, 224, 224))
    res["host_copy_299"] = host_copy_us((1, 3, 299, 299))
    res["str_in_process"] = str_reference(args.jobs)  # (this process's CUDA context exists before MPS starts)
    b = MpsBackend(n_contexts=1, n_streams=1, device="cuda")
    b.start({"r": build_staged_model("resnet18")})
    try:
        res["mps_sm_count"] = b.sm_counts()
        res["h2d_from_slot"] = h2d_from_slot(b, 200)
        res["mps_blocking"] = mps_round_trip(b, args.jobs, blocking=True)
        res["mps_spinning"] = mps_round_trip(b, args.jobs, blocking=False)
        res["mps_worker_side_jobs"] = mps_job_round_trip(b, args.jobs)
    finally:
        b.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mps_micro.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
