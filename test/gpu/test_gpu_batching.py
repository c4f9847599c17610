"""Batched stages (cross-task batching): gather/scatter of jobs' rows, and on the GPU every job's output
from a batched stage equals its unbatched output (str and green, tensor and tuple stage outputs, fp32 and
fp16, channels-last)."""

from __future__ import annotations

import time

import pytest
import torch
from gpu_helpers import run_sync

from daris_ros.runtime.backends.cuda_graphs import gather_rows, row_runs, stack_rows, take_rows
from daris_ros.runtime.models import build_staged_model
from daris_ros.runtime.models.precision import apply_precision, model_input, output_difference

gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


# --------------------------------------------------------------------------------------- CPU: gather/scatter
def test_row_runs_merge_consecutive_rows_of_one_source() -> None:
    a, b = torch.zeros(4, 2), torch.zeros(3, 2)
    runs = row_runs([(a, 0), (a, 1), (a, 2), (b, 0), (a, 3), (b, 2), (b, 1)])
    assert [(src is a, r, n) for src, r, n in runs] == [(True, 0, 3), (False, 0, 1), (True, 3, 1), (False, 2, 1),
                                                       (False, 1, 1)]
    assert row_runs([]) == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_gather_take_and_stack_rows(channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    a = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3).contiguous(memory_format=fmt)
    b = -torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 2, 3, 3)
    rows = [(b, 1), (a, 2), (a, 3), (a, 0), (b, 0)]
    want = torch.stack([b[1], a[2], a[3], a[0], b[0]])
    dst = torch.full((8, 2, 3, 3), 7.0).contiguous(memory_format=fmt)
    gather_rows(rows, (dst,))
    assert torch.equal(dst[:5], want) and torch.equal(dst[5:], torch.full((3, 2, 3, 3), 7.0))
    gather_rows([(a, 1), (a, 2)], (dst,))  # one run: a single copy
    assert torch.equal(dst[:2], a[1:3])
    assert torch.equal(stack_rows(rows), want)
    out = take_rows(dst, 2)
    assert out.shape[0] == 2 and out.data_ptr() != dst.data_ptr()
    # tuple sources (the UNet passes its skip connections between stages)
    t1, t2 = (a, a[:, :1]), (b, b[:, :1])
    dsts = (torch.zeros(4, 2, 3, 3), torch.zeros(4, 1, 3, 3))
    gather_rows([(t2, 1), (t1, 3)], dsts)
    assert torch.equal(dsts[0][:2], torch.stack([b[1], a[3]])) and torch.equal(dsts[1][:2], torch.stack([b[1, :1],
                                                                                                          a[3, :1]]))
    st = stack_rows([(t2, 1), (t1, 3)])
    assert isinstance(st, tuple) and torch.equal(st[1], dsts[1][:2])
    assert all(x.shape[0] == 1 for x in take_rows(dsts, 1))


def test_gather_converts_dtype() -> None:
    src = torch.randn(3, 2)
    dst = torch.zeros(4, 2, dtype=torch.float16)
    gather_rows([(src, 2), (src, 0)], (dst,))
    assert dst.dtype == torch.float16 and torch.allclose(dst[:2].float(), src[[2, 0]], atol=1e-2)


def test_bench_helper_efficient_size() -> None:
    from daris_ros.bench.batching import efficient_size

    # per job: 1 ms at size 1, 0.3 at 4, 0.2 at 16, 0.15 at 64: within 2x of the best from size 4 on
    times = {(0, 1): 1e-3, (0, 4): 1.2e-3, (0, 16): 3.2e-3, (0, 64): 9.6e-3}
    assert efficient_size(times, (1, 4, 16, 64)) == 4
    assert efficient_size(times, (1, 4, 16, 64), factor=1.5) == 16


# --------------------------------------------------------------------------------------- GPU: outputs
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.fixture
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


# each stage: the jobs' batches (lists of job indices); a later stage mixes rows of different earlier batches
PLAN = [[[0, 1, 2, 3, 4], [5]], [[3, 5, 0], [1, 4, 2]], [[2, 1, 0, 5, 4, 3]], [[0], [1, 2, 3, 4, 5]]]


@pytest.mark.parametrize(("backend", "model_name", "side", "precision", "cl"), [
    ("str", "resnet18", 224, "fp32", False), ("green", "resnet18", 224, "fp32", True),
    ("str", "unet", 128, "fp32", False), ("str", "inception_v3", 299, "fp32", False),
    ("str", "resnet18", 224, "fp16", True),
])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_each_job_of_a_batch_gets_its_unbatched_output(backend: str, model_name: str, side: int, precision: str,
                                                        cl: bool, no_tf32: None) -> None:
    from daris_ros.runtime.backends import create_backend

    torch.manual_seed(0)
    model = build_staged_model(model_name, input_size=(side, side))
    apply_precision(model, precision, cl)
    b = create_backend(backend, n_contexts=1 if backend == "str" else 2, n_streams=2, device="cuda",
                       oversubscription=1.0)
    b.start({"m": model})
    try:
        b.capture_batches((1, 2, 4, 8))
        m = b.models["m"]
        assert m.num_stages == len(PLAN)
        frames = [model_input(m, torch.randn(1, 3, side, side, device="cuda")) for _ in range(6)]
        with torch.inference_mode():  # unbatched reference: each job alone, eager, batch 1
            refs = [m(f) for f in frames]
        torch.cuda.synchronize()
        where: list[tuple[object, int]] = [(f, 0) for f in frames]  # each job's next input: (source, row)
        for j, batches in enumerate(PLAN):
            for k, jobs in enumerate(batches):
                size = next(s for s in b.batch_sizes if s >= len(jobs))
                f = run_sync(b, k % b.n_contexts, k % 2, "m", j, size, [where[i] for i in jobs])
                assert f.exec_time > 0
                for r, i in enumerate(jobs):
                    where[i] = (f.output, r)
        errs, exact = [], 0
        for i, (src, r) in enumerate(where):
            out = src[r:r + 1] if isinstance(src, torch.Tensor) else src[0][r:r + 1]
            ref = refs[i] if isinstance(refs[i], torch.Tensor) else refs[i][0]
            errs.append(_rel(out.float(), ref.float()))
            exact += int(torch.equal(out, ref))
        others = [_rel(where[(i + 1) % 6][0][where[(i + 1) % 6][1]:where[(i + 1) % 6][1] + 1].float(),
                       refs[i].float()) for i in range(6)]
        print(f"\n{backend} {model_name} {precision} cl={cl}: batched vs unbatched rel err max {max(errs):.2e}, "
              f"bit-exact {exact}/6 (another job's output: rel err min {min(others):.2e}), "
              f"graphs {len(b.batch_graphs)}")
        tol = 1e-4 if precision == "fp32" else 2e-2  # a batch may pick other conv algorithms than batch 1
        assert max(errs) < tol
        assert min(others) > 10 * max(max(errs), 1e-7)  # a mixed-up row would not pass
        assert len(b.batch_graphs) == 4 * m.num_stages * b.n_contexts * b.n_streams
    finally:
        b.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_output_against_fp32(precision: str) -> None:
    torch.manual_seed(1)
    ref_m = build_staged_model("resnet18").cuda().eval()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        ref = ref_m(x)
    apply_precision(ref_m, precision, channels_last=True)
    with torch.inference_mode():
        out = ref_m(model_input(ref_m, x)).float()
    d = output_difference(ref, out)
    print(f"\nresnet18 {precision} vs fp32: {d}")
    assert d.finite and d.rel_l2 < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batches_queued_back_to_back_on_one_stream_keep_their_own_outputs(no_tf32: None) -> None:
    """Launch-ahead queues a batch behind the running one on the same stream, without waiting: both replay the
    same captured graph (same stage and size, same static buffers), so each must copy its rows in and out in
    stream order."""
    from daris_ros.runtime.backends import create_backend

    torch.manual_seed(2)
    model = build_staged_model("resnet18")
    b = create_backend("str", n_contexts=1, n_streams=2, device="cuda")
    b.start({"m": model})
    try:
        b.capture_batches((1, 4))
        m = b.models["m"]
        frames = [torch.randn(1, 3, 224, 224, device="cuda") for _ in range(8)]
        with torch.inference_mode():
            refs = [m.run_stage(0, f) for f in frames]
        torch.cuda.synchronize()
        t1 = b.launch(0, 0, "m", 0, 4, [(f, 0) for f in frames[:4]])
        t2 = b.launch(0, 0, "m", 0, 4, [(f, 0) for f in frames[4:]])  # queued behind, no sync
        done: dict[int, object] = {}
        order: list[int] = []
        t_end = time.monotonic() + 10.0
        while len(done) < 2:
            for fin in b.poll():
                done[fin.ticket] = fin
                order.append(fin.ticket)
            assert time.monotonic() < t_end
        assert order == [t1, t2]  # one stream: in order
        first, second = done[t1], done[t2]
        errs = [_rel(fin.output[r:r + 1], refs[4 * i + r]) for i, fin in enumerate((first, second))
                for r in range(4)]
        crossed = _rel(first.output[0:1], refs[4])
        print(f"\nback-to-back batches on one stream: rel err max {max(errs):.2e}, another job's {crossed:.2e}")
        assert max(errs) < 1e-4 and crossed > 1e-2
        assert first.exec_time > 0 and second.exec_time > 0
    finally:
        b.close()
