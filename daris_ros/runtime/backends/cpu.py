"""``cpu`` backend: real execution on worker threads, one thread per (context, stream).

This is what CI and laptops use. A context is a group of N_s threads; there is no SM partitioning on a
CPU, so contexts only matter to the policy (admission, migration, queues). With ``device='cuda:N'`` the
same threads run on the GPU's default stream (a debugging aid, not a spatial backend).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import torch

from daris_ros.runtime.backends.base import BackendError, StageDone

_STOP = object()


class CpuBackend:
    name = "cpu"

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but torch sees no CUDA device")
        self.device = device
        self.n_contexts = n_contexts
        self.n_streams = n_streams
        self._models: dict[str, Any] = {}
        self._queues: list[list[queue.SimpleQueue]] = []
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self, models: Mapping[str, Any]) -> None:
        n_workers = self.n_contexts * self.n_streams
        if self.device == "cpu":
            # Intra-op threads per worker: share the cores instead of oversubscribing them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))
        for name, model in models.items():
            self._models[name] = model.to(self.device).eval()
        for c in range(self.n_contexts):
            row = []
            for s in range(self.n_streams):
                q: queue.SimpleQueue = queue.SimpleQueue()
                t = threading.Thread(target=self._worker, args=(q,), name=f"daris-cpu-c{c}s{s}", daemon=True)
                t.start()
                row.append(q)
                self._threads.append(t)
            self._queues.append(row)

    def add_model(self, name: str, model: Any) -> None:
        """Make one more model resident (run-time task addition)."""
        self._models[name] = model.to(self.device).eval()

    def submit(self, context: int, stream: int, model: str, stage: int, x: Any, done: StageDone) -> None:
        if self._closed:
            raise BackendError("backend is closed")
        self._queues[context][stream].put((model, stage, x, done))

    def run_now(self, model: str, stage: int, x: Any) -> tuple[Any, float]:
        return self._run(model, stage, x)

    def _run(self, model: str, stage: int, x: Any) -> tuple[Any, float]:
        m = self._models[model]
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = m.run_stage(stage, x)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
        return y, time.perf_counter() - t0

    def _worker(self, q: queue.SimpleQueue) -> None:
        while True:
            item = q.get()
            if item is _STOP:
                return
            model, stage, x, done = item
            try:
                y, dt = self._run(model, stage, x)
            except BaseException as exc:  # noqa: BLE001 - reported to the engine, the worker lives on
                done(None, 0.0, exc)
                continue
            done(y, dt, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for row in self._queues:
            for q in row:
                q.put(_STOP)
        for t in self._threads:
            t.join(timeout=5.0)
