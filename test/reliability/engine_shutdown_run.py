"""Engine-level stand-in for the scheduler node's start-up and signal handling (issue 8, item 5), for machines
without ROS (the GPU test machine): builds the engine (``--backend``; ``mps`` starts its MPS daemon and
worker processes), loads the models, profiles the AFET, then releases an HP and an LP task at ``--rate``
until SIGINT/SIGTERM (or ``--duration`` s).

It prints the node's phase lines (``loading ...``, ``profiling the initial AFET ...``, ``running: ...``; the
markers of test_shutdown.py) and stops as the node does (docs/reliability/README.md, section 5): a signal
while loading or profiling stops start-up at once (``SIGINT during start-up (loading): stopped``), a signal
while running stops the releases; in both cases the engine, its workers and an MPS daemon the backend
started are closed, exit code 0. A backend that cannot run: one line and exit code 3.
test/gpu/test_gpu_reliability_more.py sends the signals (mps backend, every phase).

    python test/reliability/engine_shutdown_run.py --backend mps                  # GPU machine; Ctrl-C at any time
    python test/reliability/engine_shutdown_run.py --backend mps --cpu-workers --input 32   # dry run, no GPU
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from anywhere: the repository's package first
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np


class StartupInterrupted(BaseException):
    """SIGINT/SIGTERM while the engine was still starting (loading models, profiling)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


class Signals:
    """While starting, the first SIGINT/SIGTERM raises :class:`StartupInterrupted` in the main thread (as the
    node's handler does); once running, signals are only noted, so nothing cuts the clean-up short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.starting = True

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.starting:
            raise StartupInterrupted(signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--backend", default="mps", choices=("cpu", "str", "green", "mps"))
    ap.add_argument("--cpu-workers", action="store_true", help="mps: CPU worker processes, no daemon (dry run)")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--input", type=int, default=224)
    ap.add_argument("--rate", type=float, default=30.0, help="Hz of the HP and the LP task")
    ap.add_argument("--profile-runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: at a signal)")
    a = ap.parse_args(argv)

    signals = Signals()
    signals.install()
    from daris_ros.runtime.backends import BackendError
    from daris_ros.runtime.driver import SyntheticCameras
    from daris_ros.runtime.engine import Engine, JobResult, summarize_afet
    from daris_ros.settings import SchedulerSettings, TaskSettings

    period = 1.0 / a.rate
    tasks = tuple(TaskSettings(n, f"/{n}", p, period, period, a.model, input_size=(a.input, a.input))
                  for n, p in (("hp", "HP"), ("lp", "LP")))
    device = "cpu" if a.backend == "cpu" or a.cpu_workers else "cuda"
    s = SchedulerSettings(policy="MPS", backend=a.backend, device=device, n_contexts=2, n_streams=1,
                          profile_runs=a.profile_runs, worker_stage_timeout=30.0, tasks=tasks)
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    phase = "init"
    eng = None
    code = 0
    try:
        phase = "loading"  # (creating the backend included: MPS daemon, worker processes)
        backend = None
        if a.cpu_workers:
            from daris_ros.runtime.backends.mps import MpsBackend

            backend = MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0)
        eng = Engine(s, on_result=on_result, backend=backend)
        print(f"loading 1 model(s) for {len(tasks)} task(s) on {a.backend}/{device}, policy MPS 2x1", flush=True)
        eng.load_models()
        phase = "profiling"
        print(f"profiling the initial AFET ({a.profile_runs} run(s) per stage)", flush=True)
        print(f"profiled AFET per stage: {summarize_afet(eng.profile())}", flush=True)
        phase = "starting"
        eng.start()
        signals.starting = False
        phase = "running"
        if signals.received is None:  # (a signal between start-up and here: stop without running)
            print("running: " + ", ".join(f"{t.name}({t.priority} {t.rate:g} Hz {t.model})" for t in tasks),
                  flush=True)
            frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
            t0 = time.monotonic()
            with SyntheticCameras(eng, [t.name for t in tasks], frame):
                while signals.received is None and not (a.duration and time.monotonic() - t0 > a.duration):
                    time.sleep(0.02)
            with lock:
                done = list(results)
            print(f"stopped ({signal.Signals(signals.received).name if signals.received else 'duration'}) "
                  f"after {len(done)} jobs, {sum(not r.met for r in done)} missed", flush=True)
    except StartupInterrupted as exc:
        print(f"[daris_engine] {exc} during start-up ({phase}): stopped", file=sys.stderr, flush=True)
    except BackendError as exc:  # no device, MPS unavailable, a worker that does not start...
        print(f"[daris_engine] the execution backend cannot run ({phase}): {exc}", file=sys.stderr, flush=True)
        code = 3
    finally:
        signals.starting = False  # nothing may interrupt the clean-up
        if eng is not None:
            eng.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
