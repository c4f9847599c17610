"""A node that shares its GPU (``sm_limit``, issue 15 item 8) on the GPU: its kernels stay on the first granules.

The SM ids each granule of the driver's split holds are read first (one green context per granule, OS = 1, a
spinning ``%smid`` kernel on each, as test/gpu/test_gpu_green.py does). Then, with ``sm_limit = 16`` (a Jetson AGX
Orin's SM count, two granules of 8 on Hopper): the green backend's contexts, the str backend's streams (one green
context of 16 SMs) and a CUDA graph replayed there run only on the SMs of the first two granules, on at most 16
distinct SMs; a real model's stages run there and match the eager model. The mps backend's clients get eq. 9's
share of the 16 SMs (their device properties inside the MPS client). Limits the device cannot give are refused
with an error naming the parameter. The eq. 9 arithmetic, plans and checks without a GPU: test/runtime/test_sm_limit.py.
"""

from __future__ import annotations

import functools
import shutil

import pytest
import torch
from gpu_helpers import run_sync

from daris_ros.runtime.backends import BackendError, create_backend
from daris_ros.runtime.models import build_staged_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

SM_LIMIT = 16  # a Jetson AGX Orin's SM count
GRANULE = 8  # SMs per green-context granule on Hopper


@pytest.fixture(scope="module")
def cupy_ok() -> None:
    pytest.importorskip("cupy", reason="the %smid probe needs CuPy")


@functools.cache
def granule_sms() -> tuple[frozenset[int], ...]:
    """The SM ids of each granule of the driver's split (granule k: one green context of that granule alone)."""
    from daris_ros.runtime.backends.green import GreenContexts
    from daris_ros.runtime.backends.smid import sms_of_stream

    whole = GreenContexts(0, 1, 1.0, 1, GRANULE)
    n_granules = whole.plan.n_granules
    whole.destroy()
    per_granule = GreenContexts(0, n_granules, 1.0, 1, GRANULE)
    try:
        assert per_granule.plan.contexts[:2] == ((0,), (1,))
        return tuple(frozenset(sms_of_stream(row[0])) for row in per_granule.torch_streams(torch.device("cuda", 0)))
    finally:
        torch.cuda.synchronize()
        per_granule.destroy()


def first_granules_sms() -> frozenset[int]:
    sets = granule_sms()[:SM_LIMIT // GRANULE]
    assert all(len(s) == GRANULE for s in sets), [len(s) for s in sets]
    return frozenset().union(*sets)


def _seen_per_stream(streams: list[list[torch.cuda.Stream]]) -> list[list[set[int]]]:
    from daris_ros.runtime.backends.smid import sms_of_stream

    return [[sms_of_stream(s) for s in row] for row in streams]


@pytest.mark.parametrize(("oversubscription", "per_context"), [(1.0, 8), (2.0, 16)])
def test_green_contexts_stay_on_the_first_granules(cupy_ok: None, oversubscription: float, per_context: int) -> None:
    allowed = first_granules_sms()
    b = create_backend("green", n_contexts=2, n_streams=2, device="cuda", oversubscription=oversubscription,
                       sm_limit=SM_LIMIT)
    try:
        b.start({})
        seen = _seen_per_stream(b.streams)
        by_context = [set().union(*row) for row in seen]
        print(f"\ngreen 2x2 OS={oversubscription} sm_limit={SM_LIMIT}: driver SMs {b.sm_counts()}, seen per "
              f"context {[sorted(s) for s in by_context]}, first granules {sorted(allowed)}")
        assert b.sm_counts() == [per_context, per_context]
        for row in seen:
            for sms in row:
                assert sms <= allowed and len(sms) <= SM_LIMIT
        assert [len(s) for s in by_context] == [per_context, per_context]
        if oversubscription == 1.0:
            assert not by_context[0] & by_context[1]  # disjoint halves of the 16
        assert set().union(*by_context) == allowed
    finally:
        b.close()


def test_str_streams_run_in_one_green_context_of_the_limit(cupy_ok: None) -> None:
    from daris_ros.runtime.backends.smid import SmidProbe

    allowed = first_granules_sms()
    b = create_backend("str", n_contexts=1, n_streams=3, device="cuda", sm_limit=SM_LIMIT)
    try:
        b.start({})
        assert b.green is not None and b.green.sm_counts == [SM_LIMIT]
        seen = _seen_per_stream(b.streams)
        print(f"\nstr 1x3 sm_limit={SM_LIMIT}: seen {[[len(s) for s in row] for row in seen]}")
        for sms in seen[0]:
            assert sms <= allowed and len(sms) <= SM_LIMIT
        assert set().union(*seen[0]) == allowed
        # a CUDA graph captured on the backend's stream (what the str backend replays) stays there too
        target = b.streams[0][1]
        probe = SmidProbe()
        probe.launch(target)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=target):
            probe.launch(target)
        probe.out.fill_(-1)
        with torch.cuda.stream(target):
            g.replay()
        replayed = probe.sms()
        assert replayed <= allowed and len(replayed) <= SM_LIMIT
    finally:
        b.close()


def test_str_without_a_limit_uses_every_sm(cupy_ok: None) -> None:
    b = create_backend("str", n_contexts=1, n_streams=1, device="cuda")
    try:
        b.start({})
        assert b.green is None
        (row,) = _seen_per_stream(b.streams)
        assert len(row[0]) == torch.cuda.get_device_properties(0).multi_processor_count
    finally:
        b.close()


@pytest.mark.parametrize("backend", ["str", "green"])
def test_a_model_runs_on_the_limited_sms(backend: str) -> None:
    """ResNet18's staged CUDA graphs on 16 SMs give the eager model's output (the limit changes where, not what)."""
    torch.manual_seed(0)
    b = create_backend(backend, n_contexts=2 if backend == "green" else 1, n_streams=2, device="cuda",
                       sm_limit=SM_LIMIT)
    b.start({"m": build_staged_model("resnet18", input_size=(224, 224))})
    try:
        model = b.models["m"]
        x0 = torch.randn(1, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            ref = model(x0)
        torch.cuda.synchronize()
        x, times = x0, []
        for j in range(model.num_stages):
            f = run_sync(b, b.n_contexts - 1, 1, "m", j, 1, [(x, 0)])
            times.append(f.exec_time)
            x = f.output
        err = float((x.double() - ref.double()).norm() / ref.double().norm())
        print(f"\n{backend} sm_limit={SM_LIMIT}: ResNet18 stage times {[round(t * 1e3, 2) for t in times]} ms, "
              f"rel err {err:.1e}")
        assert err < 1e-3
    finally:
        b.close()


@pytest.mark.parametrize(("backend", "limit", "words"), [
    ("green", 12, "not a multiple of the SM granularity 8"), ("str", 20, "not a multiple of the SM granularity 8"),
    ("green", 1024, "more than the device has"), ("mps", 15, "not a multiple of the SM granularity 2")])
def test_limits_the_device_cannot_give_are_refused(backend: str, limit: int, words: str) -> None:
    with pytest.raises(BackendError, match="parameter 'sm_limit'") as exc:
        create_backend(backend, n_contexts=2 if backend != "str" else 1, n_streams=1, device="cuda", sm_limit=limit)
    assert words in str(exc.value)


@pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is None, reason="no nvidia-cuda-mps-control")
@pytest.mark.parametrize(("oversubscription", "per_client"), [(1.0, 8), (2.0, 16)])
def test_mps_clients_get_their_share_of_the_limit(oversubscription: float, per_client: int) -> None:
    from daris_ros.runtime.backends.mps import MpsBackend, mps_thread_percentage
    from daris_ros.runtime.backends.mps_daemon import mps_processes

    pipe, log_dir = "/tmp/daris-mps-smlimit", "/tmp/daris-mps-smlimit-log"
    assert not mps_processes(pipe), "an MPS daemon of the test pipe directory is already running"
    n_sm = torch.cuda.get_device_properties(0).multi_processor_count
    b = MpsBackend(n_contexts=2, n_streams=1, oversubscription=oversubscription, pipe_dir=pipe, log_dir=log_dir,
                   sm_limit=SM_LIMIT)
    try:
        assert b.sm_per_context == per_client
        assert b.thread_percentage == pytest.approx(mps_thread_percentage(per_client, n_sm))
        b.start({"r": build_staged_model("resnet18", input_size=(64, 64))})
        seen = b.sm_counts()
        print(f"\nmps 2x1 OS={oversubscription} sm_limit={SM_LIMIT}: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="
              f"{b.thread_percentage:.4f}, workers report {seen} SMs")
        assert seen == [per_client, per_client]
    finally:
        b.close()
    assert not mps_processes(pipe), "the daemon this backend started is still running"
