"""Offline AFET profiling (paper IV-A1), cached in a JSON file.

The Average Full-Load Execution Time of a model's stages: the target model runs its stages in one
stream (context 0, stream 0) while every other stream of the backend keeps running random stages of
random models. It is a pessimistic initial estimate that MRET (eq. 1-2) replaces online. Works with every
backend, through the launch/poll protocol (daris_ros/runtime/backends/base.py).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from daris_ros.runtime.backends.base import Backend, Finished


def cache_key(device_name: str, backend: str, layout: str, oversubscription: float, graphs: bool, model_key: str,
              mode: str | None = None) -> str:
    """AFET cache key: device, torch, backend, layout (``N_c x N_s``), OS, graphs, profiling mode (when given)
    and model."""
    return (f"{device_name}|torch {torch.__version__}|{backend}|{layout}|OS {oversubscription:g}"
            f"|graphs {int(graphs)}|" + (f"{mode}|" if mode else "") + model_key)


class AfetCache:
    """A JSON file of ``{key: [stage seconds, ...]}``; missing or unreadable files start empty."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.data: dict[str, list[float]] = {}
        if self.path and self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.data = {}

    def get(self, key: str) -> tuple[float, ...] | None:
        v = self.data.get(key)
        return tuple(v) if v else None

    def put(self, key: str, afet: tuple[float, ...]) -> None:
        self.data[key] = list(afet)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True))


def isolated_afet(backend: Backend, key: str, x0: Any, n_stages: int, runs: int) -> tuple[float, ...]:
    """Per-stage mean of ``runs`` isolated runs on context 0, stream 0 (``run_now``)."""
    times = [0.0] * n_stages
    for _ in range(runs):
        rows: list[tuple[Any, int]] = [(x0, 0)]
        for j in range(n_stages):
            y, dt = backend.run_now(key, j, 1, rows)
            times[j] += dt
            rows = [(y, 0)]
    return tuple(max(v / runs, 1e-6) for v in times)


def batch_times(backend: Backend, key: str, x0: Any, n_stages: int, sizes: tuple[int, ...], runs: int
                ) -> dict[tuple[str, int, int], float]:
    """Isolated batch times ``{(key, stage, size): seconds}``: every stage at every size, the mean of ``runs`` runs
    after one warm-up (``run_now``)."""
    out: dict[tuple[str, int, int], float] = {}
    for size in sizes:
        totals = [0.0] * n_stages
        for run in range(runs + 1):
            rows: list[tuple[Any, int]] = [(x0, 0)] * size
            for j in range(n_stages):
                y, dt = backend.run_now(key, j, size, rows)
                if run:  # the first run warms up
                    totals[j] += dt
                rows = [(y, i) for i in range(size)]
        for j, total in enumerate(totals):
            out[(key, j, size)] = max(total / max(runs, 1), 1e-6)
    return out


def full_load_afet(backend: Backend, first_inputs: Mapping[str, Any], n_stages: Mapping[str, int], *, runs: int = 5,
                   warmup: int = 1, seed: int = 0, timeout: float = 60.0) -> dict[str, tuple[float, ...]]:
    """Section IV-A1 through the backend protocol (``launch``/``poll``; every backend): AFET per model key, the
    target's stages run one after another on (0, 0) while every other (context, stream) keeps running jobs of
    random models, stage after stage.

    ``first_inputs[key]`` is a stage-0 input of model ``key`` (a preprocessed frame, a batch of one); a later stage
    gets the output of the previous one. ``runs`` measured runs after ``warmup`` unmeasured ones; each stage time
    is the backend's measured execution time. Raises :class:`TimeoutError` when a stage does not come back within
    ``timeout`` s and re-raises a stage's error. Runs before the engine's loop starts (it polls the backend).
    """
    rng = random.Random(seed)
    keys = list(first_inputs)
    others = [(c, s) for c in range(backend.n_contexts) for s in range(backend.n_streams) if (c, s) != (0, 0)]
    # per background stream: the ticket running there and (model, stage, its output) once it finished
    running: dict[int, tuple[tuple[int, int], str, int]] = {}
    nxt: dict[tuple[int, int], tuple[str, int, Any]] = {}
    idle = set(others)
    done: dict[int, Finished] = {}

    def absorb(records: list[Finished]) -> None:
        for f in records:
            bg = running.pop(f.ticket, None)
            if bg is None:
                done[f.ticket] = f
                continue
            cs, model, j = bg
            if f.error is not None:
                raise f.error
            if j + 1 < n_stages[model]:
                nxt[cs] = (model, j + 1, f.output)
            idle.add(cs)

    def feed() -> None:
        for cs in sorted(idle):
            job = nxt.pop(cs, None)
            if job is None:
                m = rng.choice(keys)
                job = (m, 0, first_inputs[m])
            m, j, x = job
            running[backend.launch(cs[0], cs[1], m, j, 1, [(x, 0)])] = (cs, m, j)
        idle.clear()

    def target(key: str, j: int, x: Any) -> tuple[Any, float]:
        feed()  # every other stream is busy when the target stage starts, not only soon after
        ticket = backend.launch(0, 0, key, j, 1, [(x, 0)])
        t_end = time.monotonic() + timeout
        while ticket not in done:
            feed()
            absorb(backend.poll())
            if time.monotonic() > t_end:
                raise TimeoutError(f"AFET profiling: stage {j} of {key} did not finish within {timeout:g} s")
            time.sleep(0.0002)
        f = done.pop(ticket)
        if f.error is not None:
            raise f.error
        return f.output, f.exec_time

    out: dict[str, tuple[float, ...]] = {}
    try:
        for key in keys:
            sums = [0.0] * n_stages[key]
            for run in range(warmup + runs):
                x = first_inputs[key]
                for j in range(n_stages[key]):
                    x, dt = target(key, j, x)
                    if run >= warmup:
                        sums[j] += dt
            out[key] = tuple(max(v / runs, 1e-6) for v in sums)
    finally:  # let the background stages drain before the caller goes on
        t_end = time.monotonic() + timeout
        while running and time.monotonic() < t_end:
            absorb(backend.poll())
            time.sleep(0.0005)
    return out
