"""Micro-measurements of the ``mps`` backend through the backend protocol: frame copy cost and per-stage round trip.

    python -m daris_ros.bench.mps_micro --out docs/benchmarks      # writes mps_micro.json, prints it

* **Frame copy** (shared memory): the CPU time of one preprocessed host frame (float32) copied into a page-aligned
  shared buffer (``memmove`` and torch's ``copy_``), what a frame slot costs the scheduler process.
* **Round trip per stage**: one worker (N_c = 1, N_s = 1), ResNet18's four stages one after another, each launched
  (:meth:`~daris_ros.runtime.backends.base.Backend.launch`) once the previous one was reported finished
  (:meth:`~daris_ros.runtime.backends.base.Backend.poll`): launch to completion seen, minus the stage's measured
  execution time; the CPU time of the launch call. On ``mps`` once waiting on the backend's completion
  notification (``set_notify``, as the engine's loop does) and once spinning on ``poll``; the in-process ``str``
  backend (spinning, as the engine polls it) is the reference.

Only timing loops over single stages: no scheduling (the engine is the only scheduler loop).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import threading
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


def round_trip(backend: Any, model: str, x0: Any, n_stages: int, n_jobs: int, *, blocking: bool,
               warmup: int = 20) -> dict[str, float]:
    """Stages one after another on (0, 0): launch -> finished record seen, minus its execution time (us, median and
    p99), launch CPU time and stage time (us, medians), over ``n_jobs`` jobs after ``warmup`` ones. ``blocking``:
    wait on the backend's notification instead of spinning on ``poll`` (a backend with completion threads: cpu,
    mps); spinning yields the GIL between polls (``sleep(0)``), so a backend thread of this process can report."""
    wake = threading.Event()
    backend.set_notify(wake.set if blocking else None)
    over, launch_cpu, exec_us = [], [], []
    try:
        for job in range(n_jobs + warmup):
            rows: list[tuple[Any, int]] = [(x0, 0)]
            for j in range(n_stages):
                wake.clear()
                c0 = time.thread_time()
                t0 = time.perf_counter()
                ticket = backend.launch(0, 0, model, j, 1, rows)
                c1 = time.thread_time()
                done = None
                while done is None:
                    if blocking:
                        wake.wait(0.5)
                        wake.clear()
                    else:
                        time.sleep(0)
                    done = next((f for f in backend.poll() if f.ticket == ticket), None)
                t1 = time.perf_counter()
                if done.error is not None:
                    raise done.error
                rows = [(done.output, 0)]
                if job >= warmup:
                    over.append((t1 - t0 - done.exec_time) * 1e6)
                    launch_cpu.append((c1 - c0) * 1e6)
                    exec_us.append(done.exec_time * 1e6)
    finally:
        backend.set_notify(None)
    over.sort()
    return {"overhead_us_p50": _med(over), "overhead_us_p99": over[int(0.99 * (len(over) - 1))] if over else 0.0,
            "launch_cpu_us_p50": _med(launch_cpu), "stage_us_p50": _med(exec_us)}


def _started(name: str, key: str) -> tuple[Any, Any]:
    """A started backend ``name`` (1 x 1) with ResNet18 under ``key``, and a stage-0 input for it."""
    from daris_ros.runtime.backends import create_backend
    from daris_ros.runtime.models import build_staged_model
    from daris_ros.runtime.preprocess import preprocess

    b = create_backend(name, n_contexts=1, n_streams=1, device="cuda")
    model = build_staged_model("resnet18")
    b.start({key: model})
    frame = torch.randint(0, 256, (*model.input_size, 3), dtype=torch.uint8).numpy()
    device = "cpu" if name == "mps" else b.device  # mps: a host tensor goes through a frame slot
    return b, preprocess(frame, model.input_size, device=device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="daris-mps-micro", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/benchmarks")
    p.add_argument("--jobs", type=int, default=300)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from daris_ros.runtime.backends.base import SmCounts

    res: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    res["host_copy_224"] = host_copy_us((1, 3, 224, 224))
    res["host_copy_299"] = host_copy_us((1, 3, 299, 299))
    b, x0 = _started("str", "r")  # (this process's CUDA context exists before MPS starts)
    try:
        res["str_in_process"] = round_trip(b, "r", x0, 4, args.jobs, blocking=False)
    finally:
        b.close()
    b, x0 = _started("mps", "r")
    try:
        if isinstance(b, SmCounts):
            res["mps_sm_count"] = b.sm_counts()
        res["mps_blocking"] = round_trip(b, "r", x0, 4, args.jobs, blocking=True)
        res["mps_spinning"] = round_trip(b, "r", x0, 4, args.jobs, blocking=False)
    finally:
        b.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mps_micro.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
