"""Cross-task stage batching in the simulator (``scheduler.batching`` in a scenario).

A model's ``batch_factor`` (``{size: factor}``) says how long a batch of ``size`` stages takes,
relative to one stage alone: ``base(size) = stage_time * factor(size)``, linear between the given
sizes, extended past the last one with the last segment's slope (factor(1) = 1). Without it a batch
costs ``size`` x the stage (no gain). The execution-time model then rates the batch like any stage,
with its ``size`` (see exec_models.py, ``batch_sm_exponent``).

The simulator's one event loop (daris_ros/sim/engine.py) runs batches like any dispatch: a dispatch of
``size`` jobs costs ``base(size)``, and its *wake-up* events (``Scheduler.next_wakeup``) start a waiting LP
batch in time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daris_ros.sim.scenario import ModelSpec


def batch_factor(points: tuple[tuple[int, float], ...] | None, size: int) -> float:
    """Batch time / single-stage time for a batch of ``size`` (piecewise linear through ``points``)."""
    if size <= 1:
        return 1.0
    if not points:
        return float(size)
    pts = [(1, 1.0), *((s, f) for s, f in points if s > 1)]
    for (s0, f0), (s1, f1) in zip(pts, pts[1:], strict=False):
        if size <= s1:
            return f0 + (f1 - f0) * (size - s0) / (s1 - s0)
    if len(pts) == 1:
        return float(size)
    (s0, f0), (s1, f1) = pts[-2], pts[-1]
    return f1 + (f1 - f0) / (s1 - s0) * (size - s1)


def batch_afet_source(models: Mapping[str, ModelSpec], full_load: Callable[[float, int], float],
                      no_staging: bool) -> Callable[[str, int, int], float | None]:
    """``(model, stage, size) -> seconds``: the full-load estimate of the batch (the batched AFET)."""

    def afet(model: str, stage: int, size: int) -> float | None:
        m = models.get(model)
        if m is None:
            return None
        base = sum(m.stage_times) if no_staging else m.stage_times[stage]
        return full_load(base * batch_factor(m.batch_factor, size), size)

    return afet
