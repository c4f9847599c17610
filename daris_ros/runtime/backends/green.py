"""``green`` backend: N_c green contexts in one process, each with N_s streams, SM counts from eq. 9.

torch's own ``GreenContext.create`` carves every context from the whole device on its own, so several
contexts land on the SAME SMs (docs/gpu_runtime.md). This backend goes through the CUDA driver API
(``cuda.bindings.driver``, imported lazily): the device's SM resource is split ONCE into granules
(8 SMs on Hopper), each context's descriptor combines the granules that
:func:`~.sm_partitions.plan_sm_partitions` gives it (disjoint for OS = 1, overlapping for OS > 1),
and each context's streams come from ``cuGreenCtxStreamCreate``. torch then runs on those streams
through ``torch.cuda.ExternalStream``: weights and buffers are ordinary torch allocations, kernels
launched (or graphs replayed) on a green stream execute only on that context's SMs. The test
test/gpu/test_gpu_green.py reads ``%smid`` to prove it.

With ``sm_limit`` (a node that shares its GPU) the contexts are carved from the first ``sm_limit //
granularity`` granules only (eq. 9 on ``sm_limit`` SMs); the other granules and the remainder are left to
the other processes on the GPU. The ``str`` backend uses :class:`GreenContexts` the same way for its
streams under a limit (one context of ``sm_limit`` SMs).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from daris_ros.runtime.backends.base import BackendError, SmCounts, checked_sm_limit
from daris_ros.runtime.backends.cuda_streams import AnyStream, CudaStreamsBackend
from daris_ros.runtime.backends.sm_partitions import GREEN_SM_GRANULARITY, SmPlan, plan_sm_partitions

log = logging.getLogger("daris_ros.backends")


def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise BackendError("the green backend needs the CUDA driver bindings: install the 'cuda-bindings' "
                           f"package matching your driver ({exc})") from exc
    for fn in ("cuDeviceGetDevResource", "cuDevSmResourceSplitByCount", "cuDevResourceGenerateDesc",
               "cuGreenCtxCreate", "cuGreenCtxStreamCreate"):
        if not hasattr(driver, fn):
            raise BackendError(f"green contexts are not supported by this cuda-bindings build (no {fn}); "
                               "they need CUDA 12.4+ bindings and driver")
    return driver


def _check(driver: Any, result: Any, what: str) -> Any:
    """Unpack a cuda.bindings result tuple, raising BackendError on a CUDA error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != int(driver.CUresult.CUDA_SUCCESS):
        name = driver.cuGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise BackendError(f"{what} failed: {name} ({int(err)})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


class GreenContexts:
    """The green contexts and their streams, built from an :class:`SmPlan` (owns the driver handles).

    ``sm_limit`` > 0: the contexts are carved from the first ``sm_limit // granularity`` granules only (the
    rest of the device, remainder included, is left to other processes)."""

    def __init__(self, device_index: int, n_contexts: int, oversubscription: float, n_streams: int,
                 granularity: int = GREEN_SM_GRANULARITY, sm_limit: int = 0) -> None:
        d = _driver()
        self._d = d
        self.contexts: list[Any] = []
        self.raw_streams: list[list[Any]] = []
        _check(d, d.cuInit(0), "cuInit")
        dev = _check(d, d.cuDeviceGet(device_index), "cuDeviceGet")
        whole = _check(d, d.cuDeviceGetDevResource(dev, d.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM),
                       "cuDeviceGetDevResource(SM) (green contexts need CUDA 12.4+ and compute capability 6.0+)")
        self.device_sms = int(whole.sm.smCount)
        granules, n_got, remainder = _check(
            d, d.cuDevSmResourceSplitByCount(self.device_sms // granularity, whole, 0, granularity),
            f"cuDevSmResourceSplitByCount into groups of {granularity} SMs")
        n_got = int(n_got)
        granules = list(granules[:n_got])
        self.granule_sms = [int(g.sm.smCount) for g in granules]
        if any(n != granularity for n in self.granule_sms):
            raise BackendError(f"the driver split the device into groups of {self.granule_sms} SMs, "
                               f"not {granularity}: set sm_granularity to the device's granularity")
        checked_sm_limit(sm_limit, self.device_sms, granularity, "green")
        self.sm_limit = sm_limit
        if sm_limit:
            n_usable = sm_limit // granularity
            if n_usable > n_got:
                raise BackendError(f"parameter 'sm_limit': {sm_limit} SMs need {n_usable} groups of {granularity} "
                                   f"SMs; the driver split the device into {n_got} (and {int(remainder.sm.smCount)} "
                                   "SMs left over)")
            granules = granules[:n_usable]  # the first granules; the others stay with the other processes
        try:
            plan = plan_sm_partitions(n_contexts, oversubscription, sm_limit or self.device_sms, granularity,
                                      len(granules))
        except ValueError as exc:
            raise BackendError(f"green: {exc}") from exc
        if not sm_limit and plan.remainder_sms != int(remainder.sm.smCount):
            raise BackendError(f"green: remainder of {int(remainder.sm.smCount)} SMs, expected {plan.remainder_sms}")
        self.plan = plan
        self.sm_counts: list[int] = []
        flags = int(d.CUstream_flags.CU_STREAM_NON_BLOCKING)
        for k, members in enumerate(plan.contexts):
            parts = [granules[i] for i in members]
            if plan.with_remainder[k] and plan.remainder_sms > 0:
                parts.append(remainder)
            desc = _check(d, d.cuDevResourceGenerateDesc(parts, len(parts)), f"cuDevResourceGenerateDesc (ctx {k})")
            ctx = _check(d, d.cuGreenCtxCreate(desc, dev, int(d.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM)),
                         f"cuGreenCtxCreate (ctx {k})")
            self.contexts.append(ctx)
            res = _check(d, d.cuGreenCtxGetDevResource(ctx, d.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM),
                         "cuGreenCtxGetDevResource")
            self.sm_counts.append(int(res.sm.smCount))
            self.raw_streams.append([_check(d, d.cuGreenCtxStreamCreate(ctx, flags, 0), "cuGreenCtxStreamCreate")
                                     for _ in range(n_streams)])

    def torch_streams(self, device: torch.device) -> list[list[torch.cuda.ExternalStream]]:
        return [[torch.cuda.ExternalStream(int(s), device=device) for s in row] for row in self.raw_streams]

    def destroy(self) -> None:
        d = self._d
        for row in self.raw_streams:
            for s in row:
                d.cuStreamDestroy(s)
        for ctx in self.contexts:
            d.cuGreenCtxDestroy(ctx)
        self.raw_streams, self.contexts = [], []


class GreenBackend(CudaStreamsBackend, SmCounts):
    """``green``: the ``str`` machinery on streams of green contexts (SM-partitioned contexts)."""

    name = "green"

    def __init__(self, *, n_contexts: int, n_streams: int, device: str = "cuda", cuda_graphs: bool = True,
                 oversubscription: float = 1.0, sm_granularity: int = GREEN_SM_GRANULARITY,
                 sm_limit: int = 0) -> None:
        # (sm_limit is not handed to the str part: green carves its own contexts from the limited granules)
        super().__init__(n_contexts=n_contexts, n_streams=n_streams, device=device, cuda_graphs=cuda_graphs,
                         oversubscription=oversubscription)
        self.sm_granularity = sm_granularity
        self.sm_limit = checked_sm_limit(sm_limit, self.n_sm_max, sm_granularity, self.name)
        try:  # layout check before any work; the real plan follows the driver's split at start()
            self.plan: SmPlan = plan_sm_partitions(n_contexts, oversubscription, self.usable_sms, sm_granularity)
        except ValueError as exc:
            raise BackendError(f"green: {exc}" + (f" (confined to sm_limit = {sm_limit} SMs)" if sm_limit else "")
                               ) from exc
        _driver()  # feature detection before any work

    def _make_streams(self) -> list[list[AnyStream]]:
        torch.cuda.init()
        self.green = GreenContexts(self.torch_device.index or 0, self.n_contexts, self.oversubscription,
                                   self.n_streams, self.sm_granularity, sm_limit=self.sm_limit)
        self.plan = self.green.plan
        log.info("green: %d contexts with %s SMs (OS=%s, sm_limit %s)", self.n_contexts, self.green.sm_counts,
                 self.oversubscription, self.sm_limit or "none")
        return self.green.torch_streams(self.torch_device)

    def sm_counts(self) -> list[int]:
        """SMs per context as the driver reports them (after start)."""
        return list(self.green.sm_counts) if self.green else [self.plan.sm_count(k) for k in range(self.n_contexts)]
