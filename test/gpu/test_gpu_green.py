"""Green contexts land where the plan says: each context's kernels (and graph replays) run only on its SMs.

Reads ``%smid`` from a spinning kernel launched with many blocks on each context's stream: the SMs seen
are exactly the context's SMs (as many as the driver reports), disjoint for OS = 1, and for OS > 1 two
contexts share exactly the SMs of the granules they share.
"""

from __future__ import annotations

import itertools

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def cupy_ok() -> None:
    pytest.importorskip("cupy", reason="the %smid probe needs CuPy")


def _contexts(n_contexts: int, os_: float):
    from daris_ros.runtime.backends.green import GreenContexts

    green = GreenContexts(0, n_contexts, os_, 2, 8)
    return green.plan, green


def _seen(streams: list[list[torch.cuda.ExternalStream]]) -> list[set[int]]:
    from daris_ros.runtime.backends.smid import sms_of_stream

    return [sms_of_stream(row[0]) | sms_of_stream(row[1]) for row in streams]


@pytest.mark.parametrize(("n_contexts", "os_"), [(2, 1.0), (3, 1.0), (4, 1.0), (2, 1.5), (3, 2.0), (4, 2.0), (3, 3.0)])
def test_green_context_placement(cupy_ok: None, n_contexts: int, os_: float) -> None:
    plan, green = _contexts(n_contexts, os_)
    try:
        seen = _seen(green.torch_streams(torch.device("cuda", 0)))
        print(f"\nN_c={n_contexts} OS={os_}: granules {plan.n_granules} + {plan.remainder_sms} SMs, "
              f"driver SMs {green.sm_counts}, seen {[len(s) for s in seen]}, "
              f"shared " + ", ".join(f"{a}&{b}={len(seen[a] & seen[b])}"
                                     for a, b in itertools.combinations(range(n_contexts), 2)))
        for k in range(n_contexts):
            assert green.sm_counts[k] == plan.sm_count(k)
            assert len(seen[k]) == plan.sm_count(k), f"context {k} ran on {len(seen[k])} SMs"
        for a, b in itertools.combinations(range(n_contexts), 2):
            assert len(seen[a] & seen[b]) == plan.shared_sms(a, b), (a, b)
        if os_ == 1.0:
            assert sum(len(s) for s in seen) == len(set().union(*seen))  # pairwise disjoint
            assert len(set().union(*seen)) == torch.cuda.get_device_properties(0).multi_processor_count
    finally:
        torch.cuda.synchronize()
        green.destroy()


def test_primary_context_uses_every_sm(cupy_ok: None) -> None:
    from daris_ros.runtime.backends.smid import sms_of_stream

    n_sm = torch.cuda.get_device_properties(0).multi_processor_count
    assert len(sms_of_stream(torch.cuda.Stream())) == n_sm


@pytest.mark.parametrize("capture_on", ["green", "side"])
def test_graph_replayed_on_green_stream_stays_in_its_partition(cupy_ok: None, capture_on: str) -> None:
    """A CUDA graph CAPTURED on a green stream and replayed there runs on that context's SMs (what the green
    backend does). Seen on an H200 (driver 580): a graph captured on an ordinary stream and replayed on a
    green stream ran on ALL SMs, so the backend captures every graph on its own execution stream."""
    from daris_ros.runtime.backends.smid import SmidProbe, sms_of_stream

    plan, green = _contexts(4, 1.0)
    try:
        streams = green.torch_streams(torch.device("cuda", 0))
        target = streams[2][0]
        expected = sms_of_stream(target)
        probe = SmidProbe()
        probe.launch(target)  # warm-up outside the capture
        torch.cuda.synchronize()
        cap = target if capture_on == "green" else torch.cuda.Stream()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=cap):
            probe.launch(cap)
        probe.out.fill_(-1)
        with torch.cuda.stream(target):
            g.replay()
        seen = probe.sms()
        print(f"\ncaptured on {capture_on}: replay on ctx 2 ran on {len(seen)} SMs, ctx 2 has {len(expected)}")
        if capture_on == "green":
            assert seen <= expected
            assert len(seen) == plan.sm_count(2)
    finally:
        torch.cuda.synchronize()
        green.destroy()
