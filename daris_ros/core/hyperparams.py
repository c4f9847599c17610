"""Hyperparameters, section III-C: N_c, N_s, OS, SMs per context (eq. 9) and the three policies."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from daris_ros.core.batching import BatchingConfig


class Policy(enum.StrEnum):
    """Partitioning policies of section V.

    STR: one context, N_s streams, one global queue. MPS: N_c contexts x 1 stream. MPS+STR: N_c x N_s.
    """

    STR = "STR"
    MPS = "MPS"
    MPS_STR = "MPS+STR"

    @classmethod
    def parse(cls, value: Policy | str) -> Policy:
        if isinstance(value, Policy):
            return value
        norm = value.strip().upper().replace("_", "+")
        for p in cls:
            if p.value == norm:
                return p
        raise ValueError(f"unknown policy {value!r}; expected one of STR, MPS, MPS+STR")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Scheduler hyperparameters and ablation switches (section VI-F).

    Beyond the paper: ``reprobe_after`` (re-probing a starving task), ``batching`` (cross-task stage
    batching) and ``launch_ahead`` / ``ahead_lead``: a busy stream with fewer than ``launch_ahead``
    dispatches queued behind the one it runs takes its next dispatch once ``now`` reaches its predicted free
    time (the predicted finish of its last dispatch) minus ``ahead_lead`` seconds; that dispatch is checked
    against its virtual deadline(s) as if it started at that time (0 = a stage is dispatched only to an idle
    stream, the paper's rule). It works with batching on and off (docs/policy.md).

    ``skip_late`` (beyond the paper; docs/policy.md "Bounded staleness under overload"): with it set to
    x >= 1, a job whose first stage has not been dispatched by ``release + x * D_i`` is skipped at the next
    ``dispatch`` instead of run (``Scheduler.take_skipped``, ``TaskStats.skipped``), so a task's backlog and
    the age of its results stay bounded when the device falls behind. None or 0: off, the paper's behaviour.
    """

    policy: Policy = Policy.MPS
    n_contexts: int = 1
    n_streams: int = 1
    oversubscription: float = 1.0
    n_sm_max: int = 132
    sm_granularity: int = 2
    mret_window: int = 5
    hp_admission: bool = False
    reprobe_after: int = 0  # beyond the paper: forget a task's MRET after this many rejections in a row (0: off)
    no_staging: bool = False
    no_last: bool = False
    no_prior: bool = False
    no_fixed: bool = False
    batching: BatchingConfig | None = None  # cross-task stage batching (opt-in; docs/policy.md)
    launch_ahead: int = 0  # dispatches a busy stream may hold queued behind its running one (0: off)
    ahead_lead: float = 0.001  # s before a busy stream's predicted free time that its next dispatch is formed
    skip_late: float | None = None  # skip a job not started by release + skip_late x D_i (None / 0: off; >= 1)
    sm_limit: int = 0  # SMs of the device this node may use; eq. 9's N_SM,max (0: all n_sm_max)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", Policy.parse(self.policy))
        object.__setattr__(self, "batching", BatchingConfig.parse(self.batching))
        for name in ("n_contexts", "n_streams", "n_sm_max", "sm_granularity", "mret_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.reprobe_after, int) or isinstance(self.reprobe_after, bool) or self.reprobe_after < 0:
            raise ValueError(f"reprobe_after must be an int >= 0, got {self.reprobe_after!r}")
        if not isinstance(self.launch_ahead, int) or isinstance(self.launch_ahead, bool) or self.launch_ahead < 0:
            raise ValueError(f"launch_ahead must be an int >= 0 (dispatches), got {self.launch_ahead!r}")
        if not math.isfinite(self.ahead_lead) or self.ahead_lead < 0:
            raise ValueError(f"ahead_lead must be >= 0 seconds, got {self.ahead_lead!r}")
        if self.skip_late is not None and (isinstance(self.skip_late, bool) or not isinstance(
                self.skip_late, int | float) or not (self.skip_late == 0 or 1 <= self.skip_late < math.inf)):
            raise ValueError(f"skip_late must be None, 0 (off) or a finite number >= 1 (deadlines), "
                             f"got {self.skip_late!r}")
        if not math.isfinite(self.oversubscription) or self.oversubscription < 1.0:
            raise ValueError(f"oversubscription must be >= 1, got {self.oversubscription!r}")
        n_sm_max_for_limit(self.sm_limit, self.n_sm_max, self.sm_granularity)  # raises ValueError naming sm_limit

    @property
    def usable_sms(self) -> int:
        """N_SM,max of eq. 9 for this node: ``sm_limit`` SMs, or the whole device (``n_sm_max``) without a limit."""
        return n_sm_max_for_limit(self.sm_limit, self.n_sm_max, self.sm_granularity)


@dataclass(frozen=True, slots=True)
class Layout:
    """The effective N_c x N_s (and OS) after the policy is applied."""

    n_contexts: int
    n_streams: int
    oversubscription: float

    @property
    def n_parallel(self) -> int:
        """N_p = N_c x N_s: the most stages that run at once."""
        return self.n_contexts * self.n_streams


def effective_layout(config: SchedulerConfig) -> Layout:
    """Apply the policy: STR forces one context (and so OS = 1), MPS forces one stream per context.

    Raises ValueError when OS is outside ``1 <= OS <= N_c`` for the effective N_c (section III-C2).
    """
    if config.policy is Policy.STR:
        return Layout(1, config.n_streams, 1.0)
    n_streams = 1 if config.policy is Policy.MPS else config.n_streams
    if not 1.0 <= config.oversubscription <= config.n_contexts:
        raise ValueError(
            f"oversubscription must satisfy 1 <= OS <= N_c = {config.n_contexts}, "
            f"got {config.oversubscription}"
        )
    return Layout(config.n_contexts, n_streams, float(config.oversubscription))


def ceil_to_multiple(x: float, granularity: int) -> int:
    """Round ``x`` up to the nearest multiple of ``granularity`` (2 gives the paper's ceil_even)."""
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    # the small tolerance keeps e.g. 1.5 * 68 / 6 = 17.000000000000004 from rounding up a whole step
    q = math.ceil(x / granularity - 1e-9)
    return int(q) * granularity


def n_sm_max_for_limit(sm_limit: int, device_sms: int, granularity: int = 1) -> int:
    """N_SM,max of eq. 9 for a node confined to ``sm_limit`` of a device's ``device_sms`` SMs (0: no limit, the
    whole device). The limit must be an int, ``0 <= sm_limit <= device_sms`` and a multiple of ``granularity``
    (contexts are made of whole granules: 8 SMs for Hopper green contexts, 2 for MPS); else a ValueError that
    names ``sm_limit``."""
    if isinstance(sm_limit, bool) or not isinstance(sm_limit, int) or sm_limit < 0:
        raise ValueError(f"sm_limit must be an int >= 0 (0: the whole device), got {sm_limit!r}")
    if sm_limit == 0:
        return device_sms
    if sm_limit > device_sms:
        raise ValueError(f"sm_limit = {sm_limit} SMs is more than the device has ({device_sms} SMs)")
    if sm_limit % granularity:
        raise ValueError(f"sm_limit = {sm_limit} SMs is not a multiple of the SM granularity {granularity} "
                         f"(e.g. {max(granularity, sm_limit // granularity * granularity)})")
    return sm_limit


def sm_per_context_eq9(oversubscription: float, n_sm_max: int, n_contexts: int, granularity: int = 2) -> int:
    """Eq. 9: ``N_SM = ceil_even(OS * N_SM,max / N_c)`` with a configurable rounding granularity.

    ``granularity = 2`` is the paper's ceil_even; Hopper green contexts need multiples of 8. The
    result is at least one granule and never more than the GPU has: if rounding up passes
    ``n_sm_max``, the largest multiple of the granularity not above ``n_sm_max`` is used (or
    ``n_sm_max`` itself when it is smaller than one granule). A node confined to ``sm_limit`` SMs passes
    :func:`n_sm_max_for_limit` (``SchedulerConfig.usable_sms``) as ``n_sm_max``.
    """
    if n_contexts < 1 or n_sm_max < 1:
        raise ValueError("n_contexts and n_sm_max must be >= 1")
    if not 1.0 <= oversubscription <= n_contexts:
        raise ValueError(
            f"oversubscription must satisfy 1 <= OS <= N_c = {n_contexts}, got {oversubscription}"
        )
    n = max(ceil_to_multiple(oversubscription * n_sm_max / n_contexts, granularity), granularity)
    if n > n_sm_max:
        n = (n_sm_max // granularity) * granularity or n_sm_max
    return n
