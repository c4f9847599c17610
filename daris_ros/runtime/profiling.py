"""Offline AFET profiling (paper IV-A1), cached in a JSON file.

The Average Full-Load Execution Time of a model's stages: the target model runs its stages in one
stream (context 0, stream 0) while every other stream of the backend keeps running random stages of
random models. It is a pessimistic initial estimate that MRET (eq. 1-2) replaces online. Works with any
backend that has the lean ``launch``/``finish`` API (``str``, ``green``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def cache_key(device_name: str, backend: str, layout: str, oversubscription: float, graphs: bool, model_key: str,
              mode: str | None = None) -> str:
    """AFET cache key: device, torch, backend, layout (``N_c x N_s``), OS, graphs, profiling mode (when given)
    and model."""
    return (f"{device_name}|torch {torch.__version__}|{backend}|{layout}|OS {oversubscription:g}"
            f"|graphs {int(graphs)}|" + (f"{mode}|" if mode else "") + model_key)


def afet_key(backend: Any, model_key: str) -> str:
    """The cache key of a GPU backend's full-load AFET (:func:`profile_afet`)."""
    return cache_key(torch.cuda.get_device_name(backend.torch_device), backend.name,
                     f"{backend.n_contexts}x{backend.n_streams}", backend.oversubscription, backend.cuda_graphs,
                     model_key)


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


def _feed(backend: Any, bg: dict[tuple[int, int], Any], others: list[tuple[int, int]], rng: random.Random,
          examples: Mapping[str, list[Any]]) -> None:
    """Keep every background stream busy with a random stage of a random model."""
    keys = list(examples)
    for cs in others:
        launch = bg.get(cs)
        if launch is not None and not launch.ready():
            continue
        if launch is not None:
            backend.finish(launch)
        m = rng.choice(keys)
        j = rng.randrange(len(examples[m]))
        bg[cs] = backend.launch(cs[0], cs[1], m, j, examples[m][j])


def profile_afet(backend: Any, model_keys: list[str], *, runs: int = 20, warmup: int = 3, seed: int = 0,
                 cache: AfetCache | None = None) -> dict[str, tuple[float, ...]]:
    """AFET per model key: the target in (0, 0), random stages of random models on every other stream."""
    rng = random.Random(seed)
    examples = {k: backend.example_inputs(backend.models[k]) for k in backend.models}
    others = [(c, s) for c in range(backend.n_contexts) for s in range(backend.n_streams) if (c, s) != (0, 0)]
    out: dict[str, tuple[float, ...]] = {}
    for key in model_keys:
        cached = cache.get(afet_key(backend, key)) if cache else None
        if cached:
            out[key] = cached
            continue
        n_stages = backend.models[key].num_stages
        sums = [0.0] * n_stages
        bg: dict[tuple[int, int], Any] = {}

        for run in range(warmup + runs):
            x = examples[key][0]
            for j in range(n_stages):
                _feed(backend, bg, others, rng, examples)
                launch = backend.launch(0, 0, key, j, x)
                while not launch.ready():
                    _feed(backend, bg, others, rng, examples)
                    time.sleep(0)
                dt = backend.finish(launch)
                x = launch.output
                if run >= warmup:
                    sums[j] += dt
        torch.cuda.synchronize(backend.torch_device)
        for launch in bg.values():
            backend.finish(launch)
        out[key] = tuple(max(v / runs, 1e-6) for v in sums)
        if cache:
            cache.put(afet_key(backend, key), out[key])
    torch.cuda.set_stream(torch.cuda.default_stream(backend.torch_device))
    return out


def full_load_afet(backend: Any, first_inputs: Mapping[str, Any], n_stages: Mapping[str, int], *, runs: int = 5,
                   warmup: int = 1, seed: int = 0, timeout: float = 60.0) -> dict[str, tuple[float, ...]]:
    """Section IV-A1 through the generic backend interface (``submit``: every backend, worker processes
    included): AFET per model key, the target's stages run one after another on (0, 0) while every other
    (context, stream) keeps running jobs of random models, stage after stage.

    ``first_inputs[key]`` is an input of stage 0 of model ``key`` that any context accepts (a preprocessed
    frame); a later stage gets the output of the previous one on the same (context, stream), since a worker
    process's outputs live in that worker. ``runs`` measured runs after ``warmup`` unmeasured ones; each stage
    time is the backend's ``exec_time``. Raises :class:`TimeoutError` when a stage does not come back within
    ``timeout`` s and re-raises a stage's error.
    """
    rng = random.Random(seed)
    keys = list(first_inputs)
    others = [(c, s) for c in range(backend.n_contexts) for s in range(backend.n_streams) if (c, s) != (0, 0)]
    lock = threading.Lock()
    # per background stream: (model, next stage, its input), set by the completion of the previous stage
    nxt: dict[tuple[int, int], tuple[str, int, Any]] = {}
    idle = set(others)
    errors: list[BaseException] = []

    def background_done(cs: tuple[int, int], model: str, j: int) -> Any:
        def done(y: Any, _dt: float, err: BaseException | None) -> None:
            with lock:
                if err is not None:
                    errors.append(err)
                elif j + 1 < n_stages[model]:
                    nxt[cs] = (model, j + 1, y)
                idle.add(cs)
        return done

    def feed() -> None:
        with lock:
            free = sorted(idle)
            idle.clear()
            work = [(cs, nxt.pop(cs, None)) for cs in free]
        for cs, job in work:
            if job is None:
                m = rng.choice(keys)
                job = (m, 0, first_inputs[m])
            m, j, x = job
            backend.submit(cs[0], cs[1], m, j, x, background_done(cs, m, j))

    def target(key: str, j: int, x: Any) -> tuple[Any, float]:
        ev = threading.Event()
        box: list[Any] = []

        def done(y: Any, dt: float, err: BaseException | None) -> None:
            box.extend((y, dt, err))
            ev.set()

        backend.submit(0, 0, key, j, x, done)
        t_end = time.monotonic() + timeout
        while not ev.wait(0.0005):
            feed()
            if time.monotonic() > t_end:
                raise TimeoutError(f"AFET profiling: stage {j} of {key} did not finish within {timeout:g} s")
        if box[2] is not None:
            raise box[2]
        return box[0], box[1]

    out: dict[str, tuple[float, ...]] = {}
    try:
        for key in keys:
            sums = [0.0] * n_stages[key]
            for run in range(warmup + runs):
                feed()
                x = first_inputs[key]
                for j in range(n_stages[key]):
                    x, dt = target(key, j, x)
                    if run >= warmup:
                        sums[j] += dt
            out[key] = tuple(max(v / runs, 1e-6) for v in sums)
    finally:  # let the background stages drain before the caller goes on
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            with lock:
                if len(idle) == len(others):
                    break
            time.sleep(0.001)
    if errors:
        raise errors[0]
    return out
