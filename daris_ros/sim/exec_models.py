"""Stage execution-time models for the simulator.

Every model turns the *base* time of a stage (its time alone on the whole GPU) into the time it
takes in the simulated run. The time is fixed when the stage starts, from the GPU state at that
moment (stages that start or finish later do not re-rate it); that keeps the simulator a plain
discrete-event loop and deterministic.

* ``constant``:   ``et = base``.
* ``random``:     ``et = base * X`` with X drawn from a :class:`Distribution` (mean 1 by default).
* ``contention``: ``et = base * X * (N / s) ** beta * (1 + alpha * (C - 1))`` where
  ``C`` is the number of stages running on the GPU (this one included), ``c_k`` those in its
  context, ``N`` = N_SM,max, and ``s`` the SMs this stage gets:
  ``s = min(N_SM / (c_k + overlap * (C - c_k)), N / C)`` with ``N_SM`` from eq. 9 and
  ``overlap = (OS - 1) / (N_c - 1)`` (0 for OS = 1: contexts own disjoint SMs; 1 for OS = N_c:
  every context spans the whole GPU); the ``N / C`` cap keeps the SMs handed out within the GPU
  (eq. 9 rounds up, so 6 x 12 SMs of an OS = 1 split on 68 SMs would otherwise be 72). A node
  confined to ``sm_limit`` SMs (``scheduler.sm_limit``) takes ``N_SM`` from eq. 9 on those SMs and caps
  ``s`` at ``sm_limit / C``, while ``N`` stays the whole device (``base`` is measured on all of it).
  ``beta`` in [0, 1] is how strongly a stage slows down with fewer SMs (DNN kernels do not scale
  linearly, so sharing raises throughput); ``alpha`` is the interference (memory, cache) that
  every other running stage adds.

Batched stages (cross-task batching, ``scheduler.batching``) pass ``size``: the caller has already
scaled ``base`` to the batch (daris_ros/sim/batching.py). Under ``contention`` a batch slows down with
fewer SMs more than a single stage (a big batch fills every SM): ``beta`` moves towards
``batch_sm_exponent`` as ``log2(size) / 8`` goes from 0 to 1 (size 256 and above use it fully).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

DISTRIBUTIONS = ("constant", "uniform", "normal", "lognormal")


@dataclass(frozen=True, slots=True)
class Distribution:
    """A positive random factor.

    ``constant`` (value), ``uniform`` (low, high), ``normal`` (mean, sd; clamped at ``minimum``),
    ``lognormal`` (sigma; scaled to mean ``mean``).
    """

    kind: str = "constant"
    value: float = 1.0
    low: float = 1.0
    high: float = 1.0
    mean: float = 1.0
    sd: float = 0.0
    sigma: float = 0.0
    minimum: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.kind!r}; expected one of {DISTRIBUTIONS}")
        if self.kind == "uniform" and not 0 < self.low <= self.high:
            raise ValueError("uniform needs 0 < low <= high")
        if self.kind == "normal" and (self.sd < 0 or self.minimum <= 0):
            raise ValueError("normal needs sd >= 0 and minimum > 0")
        if self.kind == "lognormal" and self.sigma < 0:
            raise ValueError("lognormal needs sigma >= 0")
        if self.kind == "constant" and self.value <= 0:
            raise ValueError("constant needs value > 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> Distribution:
        if d is None:
            return cls()
        d = dict(d)
        kind = str(d.pop("dist", d.pop("kind", "constant")))
        known = {"value", "low", "high", "mean", "sd", "sigma", "minimum"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown distribution keys {sorted(unknown)}")
        return cls(kind=kind, **{k: float(v) for k, v in d.items()})  # type: ignore[arg-type]

    def sampler(self) -> Callable[[random.Random], float]:
        """A function drawing one factor; same values as :meth:`sample`, without the dispatch on kind."""
        if self.kind == "constant":
            value = self.value
            return lambda rng: value
        if self.kind == "uniform":
            low, high = self.low, self.high
            return lambda rng: rng.uniform(low, high)
        if self.kind == "normal":
            mean, sd, minimum = self.mean, self.sd, self.minimum
            return lambda rng: max(minimum, rng.gauss(mean, sd))
        mean, sigma = self.mean, self.sigma
        mu = -0.5 * sigma * sigma
        exp = math.exp
        return lambda rng: mean * exp(rng.gauss(mu, sigma))

    def sample(self, rng: random.Random) -> float:
        if self.kind == "constant":
            return self.value
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        if self.kind == "normal":
            return max(self.minimum, rng.gauss(self.mean, self.sd))
        # lognormal with E[X] = mean
        return self.mean * math.exp(rng.gauss(-0.5 * self.sigma * self.sigma, self.sigma))

    def expected(self) -> float:
        """The mean of the factor (the clamp of ``normal`` is ignored)."""
        if self.kind == "constant":
            return self.value
        if self.kind == "uniform":
            return 0.5 * (self.low + self.high)
        return self.mean


@dataclass(frozen=True, slots=True)
class Geometry:
    """What the contention model needs to know about the GPU partitioning.

    ``n_sm_max`` is the device's SM count (stage times are measured alone on all of them); ``usable_sms`` the SMs
    the node may use (``SchedulerConfig.sm_limit``; 0: all ``n_sm_max``), which eq. 9's ``sm_per_context`` is
    computed from."""

    n_sm_max: int
    sm_per_context: int
    n_contexts: int
    n_streams: int
    oversubscription: float
    usable_sms: int = 0

    @property
    def node_sms(self) -> int:
        """The SMs the node's contexts share: ``usable_sms``, or the whole device."""
        return self.usable_sms or self.n_sm_max

    @property
    def overlap(self) -> float:
        if self.n_contexts <= 1:
            return 0.0
        return (self.oversubscription - 1.0) / (self.n_contexts - 1)


class ExecTimeModel(Protocol):
    def exec_time(self, base: float, in_context: int, total: int, rng: random.Random, size: int = 1) -> float:
        """Time of a stage (a batch of ``size``) with ``base`` seconds alone on the GPU, given the running
        stages."""
        ...

    def full_load_estimate(self, base: float, size: int = 1) -> float:
        """Expected time with every stream of every context busy (the simulator's AFET)."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantModel:
    def exec_time(self, base: float, in_context: int, total: int, rng: random.Random, size: int = 1) -> float:
        return base

    def full_load_estimate(self, base: float, size: int = 1) -> float:
        return base


@dataclass(frozen=True, slots=True)
class RandomModel:
    jitter: Distribution
    _draw: Callable[[random.Random], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_draw", self.jitter.sampler())

    def exec_time(self, base: float, in_context: int, total: int, rng: random.Random, size: int = 1) -> float:
        return base * self._draw(rng)

    def full_load_estimate(self, base: float, size: int = 1) -> float:
        return base * self.jitter.expected()


@dataclass(frozen=True, slots=True)
class ContentionModel:
    geometry: Geometry
    jitter: Distribution = Distribution()
    beta: float = 0.6
    alpha: float = 0.02
    batch_beta: float | None = None
    _memo: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    _draw: Callable[[random.Random], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_draw", self.jitter.sampler())
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError("beta (sm_exponent) must be in [0, 1]")
        if self.batch_beta is not None and not 0.0 <= self.batch_beta <= 1.0:
            raise ValueError("batch_sm_exponent must be in [0, 1]")
        if self.alpha < 0.0:
            raise ValueError("alpha (interference) must be >= 0")

    def beta_for(self, size: int) -> float:
        """beta of a batch of ``size`` (``beta`` for single stages)."""
        if size <= 1 or self.batch_beta is None:
            return self.beta
        w = min(1.0, math.log2(size) / 8.0)
        return self.beta + (self.batch_beta - self.beta) * w

    def slowdown(self, in_context: int, total: int, size: int = 1) -> float:
        """The deterministic factor ``(N / s) ** beta * (1 + alpha * (C - 1))``."""
        g = self.geometry
        c_k = max(1, in_context)
        c = max(c_k, total)
        sharers = c_k + g.overlap * (c - c_k)
        # never more than the context's share, nor more than an equal split of the node's SMs (sm_limit)
        s = min(g.sm_per_context / sharers, g.node_sms / c)
        return (g.n_sm_max / s) ** self.beta_for(size) * (1.0 + self.alpha * (c - 1))

    def exec_time(self, base: float, in_context: int, total: int, rng: random.Random, size: int = 1) -> float:
        key = (size * 65536 + in_context) * 65536 + total
        factor = self._memo.get(key)
        if factor is None:
            factor = self._memo[key] = self.slowdown(in_context, total, size)
        return base * self._draw(rng) * factor

    def full_load_estimate(self, base: float, size: int = 1) -> float:
        g = self.geometry
        return base * self.jitter.expected() * self.slowdown(g.n_streams, g.n_contexts * g.n_streams, size)


def build_exec_model(spec: Mapping[str, object] | None, geometry: Geometry) -> ExecTimeModel:
    """Build a model from the scenario's ``exec_model`` mapping (see docs/simulator.md)."""
    spec = dict(spec or {"kind": "constant"})
    kind = str(spec.pop("kind", "constant"))
    jitter = Distribution.from_dict(spec.pop("jitter", None))  # type: ignore[arg-type]
    if kind == "constant":
        model: ExecTimeModel = ConstantModel()
    elif kind == "random":
        model = RandomModel(jitter)
    elif kind == "contention":
        model = ContentionModel(
            geometry,
            jitter,
            beta=float(spec.pop("sm_exponent", 0.6)),  # type: ignore[arg-type]
            alpha=float(spec.pop("interference", 0.02)),  # type: ignore[arg-type]
            batch_beta=None if spec.get("batch_sm_exponent") is None
            else float(spec.pop("batch_sm_exponent")),  # type: ignore[arg-type]
        )
        spec.pop("batch_sm_exponent", None)
    else:
        raise ValueError(f"unknown exec_model kind {kind!r}; expected constant, random or contention")
    if spec:
        raise ValueError(f"unknown exec_model keys for {kind}: {sorted(spec)}")
    return model
